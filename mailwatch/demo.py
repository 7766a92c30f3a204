"""`mailwatch demo`: mailwatch's main job, end to end, on a real local IMAP server.

Writes a configuration for a small agency into ./demo-run/, starts a throw-away
Dovecot on loopback, places ten days of sample mail in two staff mailboxes
(arrival times relative to the demo's present, 10:00 on the last Thursday,
given to every command as `--now`: the outcome does not depend on the hour the
demo runs), then runs the real commands against it: poll, status, report, explain
(and a dry-run nudge).  It ends by writing the nudges and the digests mailwatch
would send then as HTML files in demo-run/emails/.  Dovecot is stopped at the end,
also on an error or Ctrl-C; the configuration and the database stay behind for the
reader to try more commands on.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from pathlib import Path
from zoneinfo import ZoneInfo

from mailwatch.bootstrap import make_renderer, open_store
from mailwatch.config import load_settings
from mailwatch.devserver import HOST, DovecotError, DovecotServer, ImapUser
from mailwatch.digests import send_digests
from mailwatch.nudging import send_due_nudges
from mailwatch.previews import KeptEmail, RecordingMailer, write_html

PASSWORD_ENV = "MAILWATCH_DEMO_PASSWORD"
AGENCY_ZONE = ZoneInfo("Europe/London")
# The demo's present: a working morning (see `demo_now`).
PRESENT_WEEKDAY, PRESENT_TIME = 3, time(10)  # Thursday, 10:00 agency time
# Where a capture server would listen (aiosmtpd's default port): `python -m aiosmtpd -n`
# prints every nudge that `mailwatch nudge` sends. The demo itself sends nothing.
SMTP_PORT = 8025
REPORT_DAYS = 10
EXIT_FAILURE = 1  # what `mailwatch` exits with when a command fails

# Runs one `mailwatch` command line in this process and returns its exit status; passed in
# by the command line itself, which the demo drives as a user would type it.
RunCommand = Callable[[Sequence[str]], int]

CONFIG = """\
# The demo agency. Written by `mailwatch demo`; the IMAP server it names is gone
# once the demo ends, but every command that reads the database still works.
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
head_of_client_management = ["head@rouge.example"]

[database]
url = "sqlite:///{database}"

[sla]
target = "24h"

[[sla.tiers]]
name = "critical"
target = "1h"
subject = ['(?i)\\b(site|website|server) (is )?down\\b', '(?i)\\boutage\\b']

[[mailboxes]]
name = "alice"
host = "{host}"
port = {port}
security = "none"
username = "alice@rouge.example"
password_env = "{password_env}"
folders = ["INBOX", "Sent"]

[[mailboxes]]
name = "bob"
host = "{host}"
port = {port}
security = "none"
username = "bob@rouge.example"
password_env = "{password_env}"
folders = ["INBOX", "Sent"]

[[staff]]
email = "alice@rouge.example"
name = "Alice Smith"

[[staff]]
email = "bob@rouge.example"
name = "Bob Jones"

[[staff]]
email = "carol@rouge.example"
name = "Carol White"

[[staff]]
email = "head@rouge.example"
name = "Hannah Evans"

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

[smtp]
host = "{host}"
port = {smtp_port}
security = "none"
sender = "Mailwatch <mailwatch@rouge.example>"
"""

ALICE = "Alice Smith <alice@rouge.example>"
BOB = "Bob Jones <bob@rouge.example>"
CAROL = "Carol White <carol@rouge.example>"
JANE = "Jane Doe <jane@acme.example>"
TOM = "Tom Baker <tom@acme.example>"
HANK = "Hank Scorpio <hank@globex.example>"
LISA = "Lisa Park <lisa@globex.example>"
MAILBOX_OF = {"alice@rouge.example": "alice", "bob@rouge.example": "bob"}


@dataclass(frozen=True)
class Placed:
    """One message in one folder of one demo mailbox, arriving at `at`."""

    mailbox: str
    folder: str
    at: datetime
    raw: bytes


@dataclass(frozen=True)
class Scenario:
    shows: str  # what this case demonstrates, one line
    first_message: str  # the Message-ID that opens it
    placed: tuple[Placed, ...]


class Conversation:
    """Builds one thread's messages with realistic headers: ids, Date, Received, replies."""

    def __init__(self, slug: str, subject: str) -> None:
        self.slug = slug
        self.subject = subject
        self.ids: list[str] = []
        self.placed: list[Placed] = []

    def client_writes(self, sender: str, to: str, at: datetime, body: str, cc: str = "") -> str:
        """Mail from a client: lands in the INBOX of every demo mailbox it is addressed to."""
        message = self._message(sender, to, cc, at, body, self._reply_subject(), self.ids)
        message["Received"] = received_header(sender, at)
        for offset, address in enumerate(a for a in addresses(to, cc) if a in MAILBOX_OF):
            # each server's copy arrives a few seconds after the previous one
            self._place(MAILBOX_OF[address], "INBOX", at + timedelta(seconds=3 * offset), message)
        return str(message["Message-ID"])

    def staff_writes(
        self,
        sender: str,
        to: str,
        at: datetime,
        body: str,
        cc: str = "",
        subject: str = "",
        references: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Mail from staff: its copy in the sender's Sent folder. It replies to the whole
        thread so far unless `references` names what it quotes."""
        chain = self.ids if references is None else references
        message = self._message(sender, to, cc, at, body, subject or self._reply_subject(), chain)
        for name, value in (headers or {}).items():
            message[name] = value
        self._place(MAILBOX_OF[addresses(sender)[0]], "Sent", at, message)
        return str(message["Message-ID"])

    def scenario(self, shows: str) -> Scenario:
        return Scenario(shows, self.ids[0], tuple(self.placed))

    def _message(
        self,
        sender: str,
        to: str,
        cc: str,
        at: datetime,
        body: str,
        subject: str,
        references: Sequence[str],
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        if cc:
            message["Cc"] = cc
        message["Subject"] = subject
        message["Date"] = format_datetime(at.astimezone(AGENCY_ZONE))
        domain = addresses(sender)[0].split("@")[1]
        message["Message-ID"] = f"<{self.slug}.{len(self.ids) + 1}.{at:%Y%m%d%H%M}@{domain}>"
        if references:
            message["In-Reply-To"] = references[-1]
            message["References"] = " ".join(references)
        message.set_content(body)
        self.ids.append(message["Message-ID"])
        return message

    def _reply_subject(self) -> str:
        return f"Re: {self.subject}" if self.ids else self.subject

    def _place(self, mailbox: str, folder: str, at: datetime, message: EmailMessage) -> None:
        self.placed.append(Placed(mailbox, folder, at, message.as_bytes(policy=policy.SMTP)))


def addresses(*fields: str) -> list[str]:
    return [address.lower() for _, address in getaddresses(list(fields)) if address]


def received_header(sender: str, at: datetime) -> str:
    """The agency's MX stamping an inbound message, two seconds before it is stored."""
    domain = addresses(sender)[0].split("@")[1]
    stamp = format_datetime((at - timedelta(seconds=2)).astimezone(UTC))
    return (
        f"from mail.{domain} (mail.{domain} [192.0.2.25]) by mx.rouge.example (Postfix) "
        f"with ESMTPS id {secrets.token_hex(5).upper()}; {stamp}"
    )


def scenarios(now: datetime) -> dict[str, Scenario]:
    """Every case the response clock distinguishes, by a short name, placed relative to
    `now` (always in the past: Dovecot stamps a future INTERNALDATE with its own clock)."""

    def ago(**parts: float) -> datetime:
        return now - timedelta(**parts)

    cases: dict[str, Scenario] = {}

    c = Conversation("banner", "Homepage banner text")
    asked = ago(days=9, hours=3)
    c.client_writes(JANE, ALICE, asked, "Could you change the homepage banner to 'Spring sale'?")
    c.staff_writes(ALICE, JANE, asked + timedelta(hours=2), "Done, it is live now.")
    cases["met"] = c.scenario("Acme: answered in 2h by Alice -> met")

    c = Conversation("press", "Press release draft")
    asked = ago(days=9)
    c.client_writes(LISA, BOB, asked, "Here is our press release; can you lay it out?")
    c.staff_writes(BOB, LISA, asked + timedelta(hours=5), "Laid out, PDF attached.")
    cases["met later"] = c.scenario("Globex: answered in 5h by Bob -> met")

    c = Conversation("invoice", "Invoice 4471 looks wrong")
    asked = ago(days=8)
    c.client_writes(HANK, BOB, asked, "We were billed twice for March. Can you check?")
    c.staff_writes(BOB, HANK, asked + timedelta(hours=30), "Sorry for the wait: credit note sent.")
    cases["breached"] = c.scenario("Globex: answered after 30h -> breached")

    c = Conversation("logo", "Logo files for the print run")
    asked = ago(days=7)
    c.client_writes(TOM, ALICE, asked, "Could we have the logo as vector files?")
    c.staff_writes(BOB, TOM, asked + timedelta(hours=5), "Attached. Alice is out today.", cc=ALICE)
    cases["backup"] = c.scenario("Acme: answered by Bob, the backup -> met (any staff counts)")

    c = Conversation("brief", "Q1 campaign brief")
    asked = ago(days=6, hours=2)
    c.client_writes(HANK, BOB, asked, "The brief for Q1 is below.", cc=ALICE)
    c.staff_writes(BOB, HANK, asked + timedelta(hours=3), "Thanks, we start Monday.", cc=ALICE)
    cases["cc"] = c.scenario("Globex: CC'd to Alice and Bob, in both inboxes -> counted once")

    c = Conversation("down", "URGENT: our site is down")
    asked = ago(days=6, hours=4)
    c.client_writes(JANE, ALICE, asked, "The shop shows an error page since 10 minutes!")
    c.staff_writes(ALICE, JANE, asked + timedelta(minutes=40), "Back up: a certificate expired.")
    cases["critical"] = c.scenario("Acme: 'site is down' is critical (1h), answered in 40m -> met")

    c = Conversation("meeting", "Meeting next Tuesday?")
    asked = ago(days=5, hours=2)
    c.client_writes(HANK, BOB, asked, "Shall we meet next Tuesday at 10?")
    c.staff_writes(
        BOB,
        HANK,
        asked + timedelta(minutes=1),
        "I am out of the office until Thursday.",
        subject="Automatic reply: Meeting next Tuesday?",
        headers={"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"},
    )
    c.staff_writes(ALICE, HANK, asked + timedelta(hours=20), "Tuesday 10:00 works for us.")
    cases["out of office"] = c.scenario(
        "Globex: Bob's out-of-office auto-reply does not count; Alice's reply does -> met"
    )

    cases["newsletter"] = newsletter(ago(days=5))

    c = Conversation("hosting", "Hosting renewal")
    asked = ago(days=4, hours=5)
    first = c.client_writes(JANE, ALICE, asked, "Our hosting renews next month; same plan?")
    c.staff_writes(
        ALICE,
        CAROL,
        asked + timedelta(minutes=30),
        "Carol, can you check the plan?",
        subject="Fwd: Hosting renewal",
        references=[first],
    )
    c.staff_writes(
        ALICE, JANE, asked + timedelta(hours=6), "Yes: same plan, same price.", references=[first]
    )
    cases["forward"] = c.scenario(
        "Acme: an internal forward to Carol does not count; the reply 6h later does -> met"
    )

    c = Conversation("contact", "Contact form sends nothing")
    c.client_writes(TOM, ALICE, ago(days=3), "Messages from the contact form never arrive.")
    c.client_writes(TOM, ALICE, ago(days=1), "Any news on this?")
    cases["overdue"] = c.scenario("Acme: asked 3 days ago, chased, never answered -> overdue")

    c = Conversation("staging", "Staging login not working")
    asked = ago(days=2, hours=6)
    c.client_writes(LISA, BOB, asked, "The staging password is refused.")
    c.staff_writes(BOB, LISA, asked + timedelta(hours=1), "Reset it, please try again.")
    c.client_writes(LISA, BOB, asked + timedelta(hours=2), "Thanks, perfect!")
    cases["courtesy"] = c.scenario("Globex: 'Thanks, perfect!' after an answer -> waived")

    c = Conversation("analytics", "Analytics access for Tom")
    asked = ago(days=1, hours=20)
    c.client_writes(TOM, ALICE, asked, "Can I get access to the analytics dashboard?")
    c.staff_writes(
        ALICE,
        TOM,
        asked + timedelta(hours=4),
        "Invitation sent.",
        references=["<lost-by-a-mail-client@acme.example>"],
    )
    cases["subject only"] = c.scenario(
        "Acme: a reply with broken References, threaded by its subject -> met"
    )

    cases["bounce"] = bounce(ago(days=1, hours=3))

    c = Conversation("landing", "Copy for the new landing page")
    c.client_writes(LISA, BOB, ago(hours=18, minutes=30), "Here is the copy; live this week?")
    cases["open"] = c.scenario(
        "Globex: asked 18h30m ago, unanswered -> open; Bob's 75% reminder is due"
    )
    return cases


def newsletter(at: datetime) -> Scenario:
    message = EmailMessage()
    message["From"] = "Acme News <news@acme.example>"
    message["To"] = "alice@rouge.example"
    message["Subject"] = "Acme monthly: what's new this spring"
    message["Date"] = format_datetime(at.astimezone(AGENCY_ZONE))
    message["Message-ID"] = f"<monthly.{at:%Y%m%d%H%M}@lists.acme.example>"
    message["List-Id"] = "Acme news <news.acme.example>"
    message["List-Unsubscribe"] = "<https://acme.example/unsubscribe>"
    message["Received"] = received_header("news@acme.example", at)
    message.set_content("Our spring collection is here.")
    return Scenario(
        "Acme: a newsletter (List-Id) from the client's own domain -> ignored",
        message["Message-ID"],
        (Placed("alice", "INBOX", at, message.as_bytes(policy=policy.SMTP)),),
    )


def bounce(at: datetime) -> Scenario:
    """A delivery failure report as Postfix writes one: null sender, multipart/report."""
    message_id = f"<bounce.{at:%Y%m%d%H%M}@mx.rouge.example>"
    raw = (
        "Return-Path: <>\r\n"
        f"Received: {received_header('mailer-daemon@mx.rouge.example', at)}\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.rouge.example>\r\n"
        "To: alice@rouge.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {format_datetime(at.astimezone(AGENCY_ZONE))}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        "<jane@acme.example>: mailbox full\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.rouge.example\r\n\r\n"
        "Final-Recipient: rfc822; jane@acme.example\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        "--b1--\r\n"
    )
    return Scenario(
        "A bounce (null sender, multipart/report) -> ignored",
        message_id,
        (Placed("alice", "INBOX", at, raw.encode()),),
    )


def run_demo(run_command: RunCommand) -> int:
    """The whole demonstration; 0 when every step worked."""
    workdir = Path.cwd() / "demo-run"
    scratch = Path(tempfile.mkdtemp(prefix="mailwatch-demo-dovecot-", dir="/tmp"))
    os.chmod(scratch, 0o755)  # Dovecot's mail user must reach home/ under it
    server = DovecotServer(scratch)
    try:
        with _stopped_on_sigterm(), _password_in_env(secrets.token_urlsafe(16)) as password:
            return _demonstrate(server, workdir, password, run_command)
    finally:
        started = server.running
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if started:
            print(f"\nDovecot on {HOST}:{server.port} is stopped; {scratch} is removed.")


def _demonstrate(
    server: DovecotServer, workdir: Path, password: str, run_command: RunCommand
) -> int:
    heading("Starting a local IMAP server (Dovecot)")
    try:
        server.configure()
        server.start()
    except DovecotError as error:
        print(f"mailwatch demo needs Dovecot. {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Dovecot answers on {HOST}:{server.port} (scratch folder {server.root})")

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    config = workdir / "mailwatch.toml"
    database = workdir / "mailwatch.db"
    config.touch(mode=0o600)  # private before anything is in it, like a real one
    config.write_text(
        CONFIG.format(
            database=database,
            host=HOST,
            port=server.port,
            password_env=PASSWORD_ENV,
            smtp_port=SMTP_PORT,
        )
    )
    print(f"Wrote {_shown(config)}: agency Rouge, accounts Acme Ltd and Globex, 24h target")

    now = demo_now(datetime.now(UTC))
    heading("Placing 10 days of sample mail in alice's and bob's INBOX and Sent")
    users = {
        name: server.add_user(f"{name}@rouge.example", password) for name in MAILBOX_OF.values()
    }
    cases = scenarios(now)
    count = seed(server, users, list(cases.values()))
    print(f"{count} messages appended with their arrival times (IMAP INTERNALDATE)")

    since = (now - timedelta(days=REPORT_DAYS)).astimezone(AGENCY_ZONE).date().isoformat()
    as_of = ["--now", _iso(now)]
    steps = [
        ["poll"],
        ["status", *as_of],
        ["report", "--since", since, *as_of],
        ["explain", cases["breached"].first_message, *as_of],
        ["nudge", "--dry-run", *as_of],
    ]
    for step in steps:
        heading("$ mailwatch " + " ".join(step))
        status = run_command(["--config", str(config), *step])
        if status != 0:
            print(f"The demo stopped: `mailwatch {step[0]}` exited with {status}.", file=sys.stderr)
            return EXIT_FAILURE
    heading(f"The emails mailwatch would send on {_local(now)}")
    print("Written as HTML files instead of sent; open them in a browser:")
    for path, email in write_emails(config, database, now, workdir / "emails"):
        print(f'  {_shown(path)}: the {email.kind} to {email.to[0]}, "{email.rendered.subject}"')
    _next_steps(config, database, now, since, cases["overdue"].first_message)
    return 0


def demo_now(clock: datetime) -> datetime:
    """The demo's present: 10:00 (agency time) on the last Thursday before `clock`'s day.

    A working morning, the same whatever the hour the demo runs, so every run shows the same
    statuses, nudges and digest.  Always past, because Dovecot dates mail appended with a
    future arrival time (INTERNALDATE) by its own clock: the sample mail arrives before it.
    """
    today = clock.astimezone(AGENCY_ZONE).date()
    back = (today.weekday() - PRESENT_WEEKDAY - 1) % 7 + 1  # 1 to 7 days
    return datetime.combine(today - timedelta(days=back), PRESENT_TIME, AGENCY_ZONE)


def write_emails(
    config: Path, database: Path, now: datetime, directory: Path
) -> list[tuple[Path, KeptEmail]]:
    """The nudges due at `now` and the last week's digests, as HTML files in `directory`.

    The passes run for real, with a mailer that keeps the emails, on a scratch copy of the
    demo's database: the demo's own claims no nudge, so `mailwatch nudge` can still send it.
    """
    settings = load_settings(config)
    renderer = make_renderer()
    with tempfile.TemporaryDirectory(prefix="mailwatch-demo-emails-") as scratch:
        copy = Path(scratch) / "mailwatch.db"
        with (
            closing(sqlite3.connect(database)) as source,
            closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)
        store = open_store(replace(settings, database_url=f"sqlite:///{copy}"))
        mailer = RecordingMailer()
        try:
            with _quiet():  # the dry run above already said what is skipped and why
                send_due_nudges(settings, store, now, mailer=mailer, renderer=renderer)
                send_digests(settings, store, now, "week", mailer=mailer, renderer=renderer)
        finally:
            store.close()
    paths = write_html(mailer.kept, directory)
    return list(zip(paths, mailer.kept, strict=True))


def seed(server: DovecotServer, users: dict[str, ImapUser], found: list[Scenario]) -> int:
    count = 0
    for scenario in found:
        print(f"  - {scenario.shows}")
        for placed in scenario.placed:
            server.append(users[placed.mailbox], placed.folder, placed.raw, placed.at)
            count += 1
    return count


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _next_steps(config: Path, database: Path, now: datetime, since: str, overdue: str) -> None:
    program = Path(sys.executable).with_name("mailwatch")
    command = f"{_shown(program) if program.exists() else 'mailwatch'} --config {_shown(config)}"
    print(
        f"\nThe demo's configuration is {_shown(config)} and its database {_shown(database)}."
        f"\nThe demo's present is {_local(now)}: give commands `--now {_iso(now)}` to see"
        " what it saw, or a later instant to let time pass. Next, try:"
        f"\n  {command} report --since {since} --now {_iso(now)} --format json"
        f"\n  {command} status --now {_iso(now + timedelta(days=1))}   (a day later)"
        f"\n  {command} annotate '{overdue}' --reason 'Alice was on a training day'"
        f" --category 'staff absence' --now {_iso(now)}   (why it breached: the lessons log)"
        f"\n  {command} lessons --now {_iso(now)}"
        f"\n  {_shown(Path(sys.executable))} -m aiosmtpd -n -l {HOST}:{SMTP_PORT}"
        f"   (prints what `nudge --now {_iso(now)}` sends: run it in another terminal)"
        "\nThe IMAP server is gone, so `poll` and `check` now fail: run the demo again for them."
    )


def _iso(instant: datetime) -> str:
    return f"{instant.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def _local(instant: datetime) -> str:
    """ "Thursday 26 November 2026, 10:00 (Europe/London)"."""
    local = instant.astimezone(AGENCY_ZONE)
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({AGENCY_ZONE.key})"


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is under it: shorter to retype."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextmanager
def _password_in_env(password: str) -> Iterator[str]:
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = password
    try:
        yield password
    finally:
        if previous is None:
            del os.environ[PASSWORD_ENV]
        else:
            os.environ[PASSWORD_ENV] = previous


@contextmanager
def _stopped_on_sigterm() -> Iterator[None]:
    """`kill` ends the demo like Ctrl-C does, so the finally clause still stops Dovecot."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
