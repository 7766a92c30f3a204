"""A small agency for the reliability tests: a configuration file for the real command
line, and a Dovecot mailbox filled in one IMAP session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from imapclient import IMAPClient

from tests.fixtures.dovecot import HOST, DovecotServer, ImapUser

REPO = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "MW_RELIABILITY_PASSWORD"
NOW = "2026-11-25T14:00:00Z"  # a Wednesday afternoon: no quiet hours

CONFIG = """
[agency]
name = "Rouge"
domains = ["agency.test"]
timezone = "UTC"
head_of_client_management = ["head@agency.test"]

[database]
url = "sqlite:///{db}"

[sync]
history_days = 0
batch_size = {batch_size}

[[staff]]
email = "alice@agency.test"
name = "Alice"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@agency.test"
"""

MAILBOX = """
[[mailboxes]]
name = "{name}"
host = "127.0.0.1"
port = {port}
security = "none"
username = "{username}"
password_env = "{password_env}"
folders = ["INBOX", "Sent"]
timeout = {timeout}
"""


def write_config(
    directory: Path,
    mailboxes: list[tuple[str, int, ImapUser]],
    *,
    db: Path | None = None,
    batch_size: int = 200,
    timeout: float = 10,
    extra: str = "",
) -> Path:
    text = CONFIG.format(db=db or directory / "mailwatch.db", batch_size=batch_size)
    for name, port, user in mailboxes:
        text += MAILBOX.format(
            name=name,
            port=port,
            username=user.username,
            password_env=PASSWORD_ENV,
            timeout=timeout,
        )
    path = directory / "mailwatch.toml"
    path.write_text(text + extra)
    path.chmod(0o600)
    return path


def client_mail(number: int) -> bytes:
    return (
        f"From: Client {number % 7} <client{number % 7}@acme.example>\r\n"
        f"To: alice@agency.test\r\nSubject: Question {number}\r\n"
        f"Date: Mon, 05 Oct 2026 10:00:00 +0000\r\nMessage-ID: <c{number}@acme.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Could you look at item {number}?\r\n"
    ).encode()


def staff_reply(number: int, at: datetime) -> bytes:
    return (
        f"From: Alice <alice@agency.test>\r\nTo: client{number % 7}@acme.example\r\n"
        f"Subject: Re: Question {number}\r\nDate: {at:%a, %d %b %Y %H:%M:%S} +0000\r\n"
        f"Message-ID: <r{number}@agency.test>\r\nIn-Reply-To: <c{number}@acme.example>\r\n"
        f"References: <c{number}@acme.example>\r\n\r\nDone.\r\n"
    ).encode()


def fill_mailbox(dovecot: DovecotServer, user: ImapUser, numbers: range, start: datetime) -> int:
    """Client messages two hours apart, numbered; every other one answered after 1 to 30 h
    (some met, some breached). Returns how many messages were appended."""
    count = 0
    with IMAPClient(HOST, port=dovecot.port, ssl=False, timeout=30) as imap:
        imap.login(user.username, user.password)
        for folder in ("INBOX", "Sent"):
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
        for number in numbers:
            arrived = start + timedelta(hours=2 * number)
            imap.append("INBOX", client_mail(number), msg_time=arrived)
            count += 1
            if number % 2 == 0:
                answered = arrived + timedelta(hours=1 + number % 30)
                imap.append("Sent", staff_reply(number, answered), msg_time=answered)
                count += 1
    return count


def mailwatch(
    config: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `python -m mailwatch` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "mailwatch", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


NUDGE_ACCOUNTS = 20
ACCOUNT = """
[[staff]]
email = "m{n}@agency.test"

[[accounts]]
name = "Client {n}"
domains = ["client{n}.example"]
manager = "m{n}@agency.test"
"""


def nudge_agency(directory: Path, smtp_port: int) -> Path:
    """Twenty accounts, each with its own manager and one client email 19 hours old at NOW:
    twenty reminders are due, one email per manager."""
    directory.mkdir()
    received = datetime.fromisoformat(NOW) - timedelta(hours=19)
    when = received.strftime("%a, %d %b %Y %H:%M:%S +0000")
    mail = directory / "mail"
    mail.mkdir()
    for n in range(NUDGE_ACCOUNTS):
        (mail / f"{n}.eml").write_text(
            f"Received: from mx.client{n}.example by mx.agency.test; {when}\n"
            f"From: Client <jane@client{n}.example>\nTo: m{n}@agency.test\n"
            f"Subject: Request {n}\nDate: {when}\nMessage-ID: <q{n}@client{n}.example>\n\n"
            "Please call me.\n"
        )
    smtp = f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
    smtp += 'sender = "mailwatch <mailwatch@agency.test>"\n'
    accounts = "".join(ACCOUNT.format(n=n) for n in range(NUDGE_ACCOUNTS))
    config = write_config(directory, [], extra=smtp + accounts)
    done = mailwatch(config, "import", str(mail), "--now", NOW)
    assert done.returncode == 0, done.stderr
    return config


class ForkRunner:
    """A warm interpreter (tests/reliability/forkrunner.py) that forks one child per command."""

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.forkrunner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **env},
        )

    def run(self, config: Path, *argv: str, kill_after: float | None = None) -> tuple[int, float]:
        """Run `mailwatch --config CONFIG ARGV…` in a child, SIGKILLed after `kill_after`
        seconds if still running; returns (exit status, -9 when killed; seconds taken)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        request = {"argv": ["--config", str(config), *argv], "kill_after": kill_after}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        status, elapsed = self._process.stdout.readline().split()
        return int(status), float(elapsed)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)
        if self._process.stdout is not None:
            self._process.stdout.close()
