"""A real, throw-away Dovecot IMAP server on loopback, for the demo and the tests.

Written from `data/dovecot.conf.template` into a scratch folder, started in the
foreground in its own process group, and stopped by ending that whole group.
Mail is placed with IMAP APPEND and an explicit INTERNALDATE, so a caller can
make a message arrive at any past instant. Standard library only (imaplib):
mailwatch's own IMAP code is what the demo and the tests exercise, not this.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
INSTALL_HINT = "apt-get install dovecot-imapd (or run `make demo`, which installs it)"
# "[APPENDUID <uidvalidity> <uid>] Append completed."
APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


class DovecotError(RuntimeError):
    """Dovecot is missing, rejected its configuration, or did not answer."""


@dataclass(frozen=True)
class ImapUser:
    username: str
    password: str


def dovecot_binary() -> str | None:
    """Where `dovecot` is; Debian puts it in /usr/sbin, often not on a user's PATH."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


class DovecotServer:
    """One Dovecot process on a free loopback port, its mail under `root/home/`.

    `extra_settings` is appended to the template (later settings win), with
    @ROOT@ replaced too.
    """

    def __init__(self, root: Path, extra_settings: str = "") -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "dovecot.conf"
        self.extra_settings = extra_settings
        self._mail_uid, self._mail_gid, self._system_users = _process_users()
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Write the configuration and the folders it names; raises DovecotError."""
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError(f"Dovecot is not installed: {INSTALL_HINT}")
        for name in ("run", "state", "home", "users"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "home", self._mail_uid, self._mail_gid)
        template = resources.files("mailwatch").joinpath("data/dovecot.conf.template")
        conf = template.read_text() + self.extra_settings
        for placeholder, value in self._system_users.items():
            conf = conf.replace(placeholder, value)
        conf = conf.replace("@ROOT@", str(self.root)).replace("@PORT@", str(self.port))
        self.conf.write_text(conf)
        doveconf = Path(binary).with_name("doveconf")
        checked = subprocess.run(
            [str(doveconf) if doveconf.exists() else "doveconf", "-c", str(self.conf), "-n"],
            capture_output=True,
        )
        if checked.returncode != 0:
            raise DovecotError(f"doveconf rejected {self.conf}: {checked.stderr.decode().strip()}")

    def start(self) -> None:
        """Start (or restart) Dovecot on the same port; raises DovecotError if it does not
        greet within START_TIMEOUT seconds."""
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError(f"Dovecot is not installed: {INSTALL_HINT}")
        # a restart: a second Dovecot on the same configuration would refuse to start, and
        # the one running would be left without anyone to stop it
        self.stop()
        self._process = subprocess.Popen(
            [binary, "-F", "-c", str(self.conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() can end every child
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = self._process.stdout.read().decode() if self._process.stdout else ""
                self._process = None
                raise DovecotError(f"dovecot exited at start: {output} {self.log()}")
            if banner_ok(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise DovecotError(f"dovecot did not answer on {HOST}:{self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop Dovecot like a crash would: every process, open sessions included,
        then wait until they are gone and the port is free (a restart may reuse it)."""
        if self._process is None:
            return
        group = self._process.pid
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self._process.wait()
        if self._process.stdout:
            self._process.stdout.close()
        self._process = None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and (group_alive(group) or port_in_use(self.port)):
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._process is not None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # ------------------------------------------------------------ users and mail

    def add_user(self, username: str, password: str) -> ImapUser:
        """A user with an empty mailbox (INBOX, Sent and Drafts appear at first login)."""
        (self.root / "users" / username).write_text(f"{username}:{{PLAIN}}{password}\n")
        home = self.home(username)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, self._mail_uid, self._mail_gid)
        return ImapUser(username, password)

    def home(self, username: str) -> Path:
        return self.root / "home" / username

    def append(
        self,
        user: ImapUser,
        folder: str,
        raw: bytes,
        internal_date: datetime,
        flags: tuple[bytes | str, ...] = (),
    ) -> int:
        """APPEND a message with a chosen INTERNALDATE (timezone-aware, in the past:
        Dovecot stamps a future one with its own clock) and flags; returns its UID."""
        flag_list = " ".join(f.decode() if isinstance(f, bytes) else f for f in flags)
        with imaplib.IMAP4(HOST, self.port, timeout=10) as client:
            client.login(user.username, user.password)
            _, listed = client.list('""', _quoted(folder))
            if not [line for line in listed if line]:
                client.create(_quoted(folder))
            status, response = client.append(
                _quoted(folder), f"({flag_list})" if flags else None, internal_date, raw
            )
        found = APPENDUID.search(response[0] or b"")
        if status != "OK" or found is None:
            raise DovecotError(f"APPEND to {folder} failed: {response!r}")
        return int(found.group(1))


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _process_users() -> tuple[int, int, dict[str, str]]:
    """The mail uid and gid, and the template's user placeholders, for whoever runs us."""
    if os.geteuid() == 0:
        mail = pwd.getpwnam("mail")
        users = {
            "@INTERNAL_USER@": "dovecot",
            "@INTERNAL_GROUP@": "dovecot",
            "@LOGIN_USER@": "dovenull",
            "@MAIL_USER@": "mail",
            "@MAIL_GROUP@": "mail",
        }
        return mail.pw_uid, mail.pw_gid, users
    me = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    users = {
        "@INTERNAL_USER@": me,
        "@INTERNAL_GROUP@": group,
        "@LOGIN_USER@": me,
        "@MAIL_USER@": me,
        "@MAIL_GROUP@": group,
    }
    return os.geteuid(), os.getegid(), users


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def banner_ok(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False
