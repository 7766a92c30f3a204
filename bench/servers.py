"""Throw-away servers for the benchmarks: Dovecot with maildirs written directly, PostgreSQL.

Seeding writes each message as a maildir file (`cur/<unique>,S=<size>,W=<vsize>:2,S`)
with the arrival time as its mtime, which Dovecot reads as INTERNALDATE when it first
indexes the folder: 100,000 messages take seconds, where APPEND takes minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from bench.mail import Mail, render
from mailwatch.devserver import DovecotServer, ImapUser
from tests.fixtures.postgres import _as_postgres, _free_port, _postgres_bin

# Appended to the packaged template: no fsync (a benchmark box, not a mail store), and
# no per-IP connection cap for the many logins of repeated idle polls.
BENCH_SETTINGS = """
mail_fsync = never
protocol imap {
  mail_max_userip_connections = 1000
}
"""
PASSWORD = "bench-password"
# Dovecot's maildir folder names: INBOX is the root, others are ".Name".
FOLDER_DIRS = {"INBOX": "", "Sent": ".Sent"}


@contextmanager
def dovecot() -> Iterator[DovecotServer]:
    root = Path(tempfile.mkdtemp(prefix="mailwatch-bench-dovecot-", dir="/tmp"))
    os.chmod(root, 0o755)  # the mail user must reach home/ under it
    server = DovecotServer(root, BENCH_SETTINGS)
    try:
        server.configure()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def seed_maildir(
    server: DovecotServer, username: str, mails: Iterable[Mail]
) -> dict[str, list[datetime]]:
    """A user whose INBOX and Sent hold `mails` (written as files); returns per folder the
    count, earliest and latest arrival: [count, first, last]."""
    server.add_user(username, PASSWORD)
    home = server.home(username)
    owner = home.stat()
    seen: dict[str, list] = {folder: [0, None, None] for folder in FOLDER_DIRS}
    for sub in FOLDER_DIRS.values():
        for part in ("cur", "new", "tmp"):
            path = home / "Maildir" / sub / part
            path.mkdir(parents=True, exist_ok=True)
    for number, mail in enumerate(mails):
        raw = render(mail)
        stamp = mail.arrived.timestamp()
        virtual = len(raw) + raw.count(b"\n")  # the size with CRLF line ends, as IMAP counts
        name = f"{int(stamp)}.M{number}P1.bench,S={len(raw)},W={virtual}:2,S"
        path = home / "Maildir" / FOLDER_DIRS[mail.folder] / "cur" / name
        path.write_bytes(raw)
        os.utime(path, (stamp, stamp))
        count, first, last = seen[mail.folder]
        seen[mail.folder] = [
            count + 1,
            min(first or mail.arrived, mail.arrived),
            max(last or mail.arrived, mail.arrived),
        ]
    for directory, _, files in os.walk(home):
        os.chown(directory, owner.st_uid, owner.st_gid)
        for file in files:
            os.chown(os.path.join(directory, file), owner.st_uid, owner.st_gid)
    return seen


def imap_user(username: str) -> ImapUser:
    return ImapUser(username, PASSWORD)


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on loopback; yields the URL of its `postgres` database.

    The same recipe as the test fixture (tests/fixtures/postgres.py), whose helpers it uses,
    plus settings for bulk loading (no fsync, larger WAL and shared buffers).
    """
    bin_dir = _postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="mailwatch-bench-pg-", dir="/tmp"))
    base.chmod(0o755)
    data, sockets = base / "data", base / "sockets"
    for directory in (data, sockets):
        directory.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
    log, port, pg_ctl = sockets / "server.log", _free_port(), bin_dir / "pg_ctl"
    try:
        subprocess.run(
            _as_postgres(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust",
                         "--encoding=UTF8", "--no-locale", "--no-sync"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
            "-c synchronous_commit=off -c shared_buffers=512MB -c max_wal_size=4GB"
        )
        started = subprocess.run(
            _as_postgres(pg_ctl, "start", "-w", "-t", "60", "-D", data, "-l", log, "-o", options),
            capture_output=True, timeout=90,
        )  # fmt: skip
        if started.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{started.stderr.decode()}{server_log}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(pg_ctl, "stop", "-m", "fast", "-D", data),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
