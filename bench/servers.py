"""Throw-away servers for the benchmarks: Dovecot with maildirs written directly, PostgreSQL.

Seeding writes each message as a maildir file (`cur/<unique>,S=<size>,W=<vsize>:2,S`)
with the arrival time as its mtime, which Dovecot reads as INTERNALDATE when it first
indexes the folder: 100,000 messages take seconds, where APPEND takes minutes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from bench.mail import Mail, render
from mailwatch.devserver import DovecotServer, ImapUser
from tests.fixtures.postgres import running_postgres

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

    The test fixture's cluster (tests/fixtures/postgres.py), with settings for bulk loading.
    """
    bulk = "-c synchronous_commit=off -c shared_buffers=512MB -c max_wal_size=4GB"
    with running_postgres("mailwatch-bench-pg-", bulk) as url:
        yield url
