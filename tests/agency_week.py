"""A week of agency mail in five staff folders, each copy with the time it reached that
mailbox, written to disk as maildir, mbox or `.eml` files, for tests that import (or poll)
the same mail in different orders and formats.

The week holds what makes arrival order matter: a client message CC'd to the shared
mailbox and to a manager whose copy arrived hours later, a critical message whose shared
copy came first, a group conversation of two clients answered by a reply-all without
References, and two clients who both write "Website update".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

CONFIG = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
head_of_client_management = ["head@rouge.example"]

[database]
url = "{url}"

[[sla.tiers]]
name = "critical"
target = "1h"
subject = ["(?i)\\\\bsite (is )?down\\\\b"]

[[staff]]
email = "alice@rouge.example"

[[staff]]
email = "bob@rouge.example"

[[staff]]
email = "head@rouge.example"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
backups = ["bob@rouge.example"]

[[accounts]]
name = "Globex"
domains = ["globex.example"]
manager = "bob@rouge.example"
backups = ["alice@rouge.example"]

[[accounts]]
name = "Initech"
domains = ["initech.example"]
manager = "bob@rouge.example"
"""

# (mailbox, folder): the units a test imports or polls one at a time
FOLDERS = (
    ("alice", "INBOX"),
    ("alice", "Sent"),
    ("bob", "INBOX"),
    ("bob", "Sent"),
    ("info", "INBOX"),
)
FORMATS = ("maildir", "mbox", "eml")
# An mbox exported days after the mail arrived: its From_ lines carry the export's time.
EXPORT_DELAY = timedelta(days=5)

JANE = "Jane <jane@acme.example>"
HANK = "Hank <hank@globex.example>"
ANN = "Ann <ann@initech.example>"
ALICE = "Alice <alice@rouge.example>"
BOB = "Bob <bob@rouge.example>"
INFO = "info@rouge.example"


def week(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """Monday 2 December 2024 is day 0 (UTC)."""
    return datetime(2024, 12, 2, tzinfo=UTC) + timedelta(
        days=day, hours=hour, minutes=minute, seconds=second
    )


@dataclass(frozen=True)
class Mail:
    key: str  # the Message-ID
    sent: datetime  # its Date
    headers: tuple[tuple[str, str], ...]
    copies: tuple[tuple[str, str, datetime], ...]  # (mailbox, folder, when it reached it)

    def raw(self, reached: datetime) -> bytes:
        """The copy as that mailbox stored it: its own delivery's Received header on top."""
        lines = [
            f"Received: from mx.example by mail.rouge.example; {format_datetime(reached)}",
            f"Message-ID: {self.key}",
            f"Date: {format_datetime(self.sent)}",
            *(f"{name}: {value}" for name, value in self.headers),
            "",
            "Hello.",
            "",
        ]
        return "\r\n".join(lines).encode()


def mail(key: str, sent: datetime, copies: Sequence[tuple[str, str, datetime]], **headers: str):
    names = {"frm": "From", "to": "To", "cc": "Cc", "subject": "Subject", "refs": "References"}
    return Mail(key, sent, tuple((names[k], v) for k, v in headers.items()), tuple(copies))


MAIL = (
    # Monday: CC'd to the shared mailbox; Alice's copy reached her 3 hours later
    mail(
        "<banner@acme.example>",
        week(0, 10),
        [("alice", "INBOX", week(0, 13, 10)), ("info", "INBOX", week(0, 10, 0, 5))],
        frm=JANE,
        to=ALICE,
        cc=INFO,
        subject="Homepage banner",
    ),
    mail(
        "<banner.re@rouge.example>",
        week(0, 12),
        [("alice", "Sent", week(0, 12, 0, 2))],
        frm=ALICE,
        to=JANE,
        subject="Re: Homepage banner",
        refs="<banner@acme.example>",
    ),
    # Tuesday: critical; the shared copy came first, Bob's 40 minutes later
    mail(
        "<down@globex.example>",
        week(1, 9),
        [("bob", "INBOX", week(1, 9, 40)), ("info", "INBOX", week(1, 9, 0, 4))],
        frm=HANK,
        to=BOB,
        cc=INFO,
        subject="Our site is down",
    ),
    mail(
        "<down.re@rouge.example>",
        week(1, 9, 50),
        [("bob", "Sent", week(1, 9, 50, 1))],
        frm=BOB,
        to=HANK,
        subject="Re: Our site is down",
        refs="<down@globex.example>",
    ),
    # Wednesday: two clients, no References anywhere, one reply-all
    mail(
        "<launch@acme.example>",
        week(2, 9),
        [("alice", "INBOX", week(2, 9, 0, 3)), ("info", "INBOX", week(2, 9, 0, 2))],
        frm=JANE,
        to=ALICE,
        cc=f"{HANK}, {INFO}",
        subject="Launch plan",
    ),
    mail(
        "<launch.hank@globex.example>",
        week(2, 9, 30),
        [("alice", "INBOX", week(2, 9, 30, 2))],
        frm=HANK,
        to=ALICE,
        subject="RE: Launch plan",
    ),
    mail(
        "<launch.re@rouge.example>",
        week(2, 11),
        [("alice", "Sent", week(2, 11, 0, 1))],
        frm=ALICE,
        to=f"{JANE}, {HANK}",
        subject="Re: Launch plan",
    ),
    # Thursday: two clients write "Website update" to the shared mailbox; Bob answers Ann
    mail(
        "<website@acme.example>",
        week(3, 9),
        [("info", "INBOX", week(3, 9, 0, 1))],
        frm=JANE,
        to=INFO,
        subject="Website update",
    ),
    mail(
        "<website@initech.example>",
        week(3, 9, 20),
        [("info", "INBOX", week(3, 9, 20, 1))],
        frm=ANN,
        to=INFO,
        subject="Website update",
    ),
    mail(
        "<website.re@rouge.example>",
        week(3, 10),
        [("bob", "Sent", week(3, 10, 0, 1))],
        frm=BOB,
        to=ANN,
        subject="Re: Website update",
        refs="<website@initech.example>",
    ),
    # Friday: answered on Monday, after the deadline
    mail(
        "<invoice@globex.example>",
        week(4, 15),
        [("bob", "INBOX", week(4, 15, 0, 2)), ("alice", "INBOX", week(4, 15, 0, 3))],
        frm=HANK,
        to=BOB,
        cc=ALICE,
        subject="Invoice 4411",
    ),
    mail(
        "<invoice.re@rouge.example>",
        week(7, 11),
        [("bob", "Sent", week(7, 11, 0, 1))],
        frm=BOB,
        to=HANK,
        subject="Re: Invoice 4411",
        refs="<invoice@globex.example>",
    ),
    # Sunday afternoon: its reminder falls due on Monday 09:30, the answer comes at 12:00
    mail(
        "<renewal@initech.example>",
        week(6, 15, 30),
        [("bob", "INBOX", week(6, 15, 30, 2))],
        frm=ANN,
        to=BOB,
        subject="Contract renewal",
    ),
    mail(
        "<renewal.re@rouge.example>",
        week(7, 12),
        [("bob", "Sent", week(7, 12, 0, 1))],
        frm=BOB,
        to=ANN,
        subject="Re: Contract renewal",
        refs="<renewal@initech.example>",
    ),
)


def copies_in(
    mailbox: str, folder: str, arrived_by: datetime | None = None
) -> list[tuple[bytes, datetime]]:
    """The raw copies this folder holds, with when each reached it (those that had reached
    it by `arrived_by`)."""
    return [
        (m.raw(reached), reached)
        for m in MAIL
        for (box, name, reached) in m.copies
        if (box, name) == (mailbox, folder) and (arrived_by is None or reached <= arrived_by)
    ]


def write_folder(
    root: Path, mailbox: str, folder: str, form: str, arrived_by: datetime | None = None
) -> Path:
    """The folder's copies on disk in `form`; the path to import (named after the folder,
    so that a "Sent" folder is recognised as sent mail)."""
    base = root / mailbox
    base.mkdir(parents=True, exist_ok=True)
    copies = copies_in(mailbox, folder, arrived_by)
    if form == "mbox":
        path = base / f"{folder}.mbox"
        path.write_bytes(b"".join(_mbox_entry(raw, reached) for raw, reached in copies))
        return path
    path = base / folder
    files = path / "cur" if form == "maildir" else path
    files.mkdir(parents=True)
    if form == "maildir":
        (path / "new").mkdir()
        (path / "tmp").mkdir()
    for number, (raw, _) in enumerate(copies):
        (files / (f"{number}:2,S" if form == "maildir" else f"{number}.eml")).write_bytes(raw)
    return path


def _mbox_entry(raw: bytes, reached: datetime) -> bytes:
    when = reached + EXPORT_DELAY
    envelope = f"From MAILER-DAEMON {when:%a %b %d %H:%M:%S %Y}\n".encode()
    return envelope + raw.replace(b"\r\n", b"\n") + b"\n"
