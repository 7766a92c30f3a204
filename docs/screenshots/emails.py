"""Every email mailwatch sends, seen as a person sees it: `make screenshots`.

A small agency (two accounts, three staff) and a week of its mail, written here as .eml files
and imported into a scratch SQLite store; then the real passes run at fixed instants with a
recording mailer: the nudges at 75 %, 90 % and 100 % of a deadline, a working morning's
09:30 nudge run (requests overdue by days), the monthly and quarterly digests, the client
report, the weekly digests and an alert.  Each email is written as HTML and photographed by
headless Chromium (Debian's `chromium`) at phone and desktop width, into build/emails/; the
README's two pictures go to docs/screenshots/.

The clients' strings are hostile on purpose: markup in a subject and a display name, a
500-character subject without a space, right-to-left text with a U+202E override.
tests/test_screenshots.py checks that every email escapes them and fits a phone's width.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from mailwatch.alerts import check_alerts
from mailwatch.bootstrap import make_renderer, open_store
from mailwatch.client_reports import send_client_reports
from mailwatch.config import Settings, load_settings
from mailwatch.digests import send_digests
from mailwatch.nudging import send_due_nudges
from mailwatch.previews import RecordingMailer, write_html
from mailwatch.services import import_paths
from mailwatch.store.repository import Store

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parents[1] / "build" / "emails"
PHONE, DESKTOP = 390, 1200
README_HEIGHT = 1200  # the README's phone-width pictures: the top of the email, not all of it
LONDON = ZoneInfo("Europe/London")
# The README's pictures, from the emails of build/emails/
README_PICTURES = {"digest.png": "week-digest-head.html", "nudge.png": "75-nudge-alice.html"}

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
LONG_SUBJECT = ("https://acme.example/checkout?session=" + "a1b2c3d4e5" * 50)[:500]
RIGHT_TO_LEFT = "הצעת מחיר طلب عرض سعر invoice_\u202egpj.exe"

CONFIG = """\
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
head_of_client_management = ["head@rouge.example"]
directors = ["dana@rouge.example"]

[database]
url = "sqlite:///{database}"

[[mailboxes]]
name = "alice"
host = "imap.rouge.example"
username = "alice@rouge.example"
password_env = "SCREENSHOTS_UNUSED_PASSWORD"

[[mailboxes]]
name = "bob"
host = "imap.rouge.example"
username = "bob@rouge.example"
password_env = "SCREENSHOTS_UNUSED_PASSWORD"

[[staff]]
email = "alice@rouge.example"
name = "Alice Smith"

[[staff]]
email = "bob@rouge.example"
name = "Bob Jones"

[[staff]]
email = "head@rouge.example"
name = "Hannah Evans"

[[staff]]
email = "dana@rouge.example"
name = "Dana Moss"

[nudges]
# the hostile requests' escalation falls due on Friday at 08:00, before the morning run
directors_after = "40h"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
backups = ["bob@rouge.example"]
client_report = "monthly"

[[accounts]]
name = "Globex"
domains = ["globex.example"]
manager = "bob@rouge.example"
backups = ["alice@rouge.example"]

[alerts]
to = ["head@rouge.example"]

[smtp]
host = "smtp.rouge.example"
sender = "Mailwatch <mailwatch@rouge.example>"
"""


def london(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant of autumn 2026, agency time: london(29, 16) is Tuesday 29 September 16:00;
    days past 30 run on into October."""
    start = datetime(2026, 9, 1, tzinfo=LONDON)
    return start + timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)


# The three hostile requests arrive on Tuesday 29 September at 16:00 (24h target): their
# nudges fall due on Wednesday at 10:00 (75 %), 13:36 (90 %) and 16:00 (100 %).
NUDGE_RUNS = {"75": london(30, 10, 5), "90": london(30, 13, 40), "100": london(30, 16, 5)}
MONTH_END = london(31, 8)  # Thursday 1 October: September's and Q3's digests, client report
MORNING = london(32, 9, 30)  # Friday 2 October: overdue by 2 days and more, one by 4 days;
# the still-waiting lists and the Directors' escalation go
WEEK_END = london(35, 8)  # Monday 5 October: the weekly digests
ALERT = london(35, 9)  # mailbox bob stopped syncing at 08:00
IMPORTED = london(35, 12)  # all the mail is stored by then: every pass looks at its past


@dataclass(frozen=True)
class Mail:
    folder: str  # "alice/INBOX", "bob/Sent"
    sender: str
    to: str
    subject: str
    at: datetime
    message_id: str
    replies_to: str = ""


def agency_mail() -> list[Mail]:
    alice, bob = "Alice Smith <alice@rouge.example>", "Bob Jones <bob@rouge.example>"
    jane, hank = "Jane Doe <jane@acme.example>", "Hank Scorpio <hank@globex.example>"
    return [
        # four days past its deadline on Friday morning: nobody ever answered
        Mail("bob/INBOX", "Lisa Park <lisa@globex.example>", bob, "Website copy for October",
             london(27, 9), "<copy@globex.example>"),
        Mail("alice/INBOX", jane, alice, "Homepage banner", london(28, 11),
             "<banner@acme.example>"),
        Mail("alice/Sent", alice, jane, "Re: Homepage banner", london(28, 13),
             "<re-banner@rouge.example>", "<banner@acme.example>"),
        Mail("bob/INBOX", hank, bob, "Invoice 4471 looks wrong", london(28, 10),
             "<invoice@globex.example>"),
        Mail("bob/Sent", bob, hank, "Re: Invoice 4471 looks wrong", london(29, 16),
             "<re-invoice@rouge.example>", "<invoice@globex.example>"),
        Mail("alice/INBOX", f'"{IMG}" <tom@acme.example>', alice, f"{SCRIPT} Checkout fails",
             london(29, 16), "<script@acme.example>"),
        Mail("alice/INBOX", jane, alice, LONG_SUBJECT, london(29, 16, 0, 20),
             "<long@acme.example>"),
        Mail("bob/INBOX", "سارة حداد <sara@globex.example>", bob, RIGHT_TO_LEFT,
             london(29, 16, 0, 40), "<rtl@globex.example>"),
    ]  # fmt: skip


def write_eml(mail: Mail, root: Path) -> None:
    message = EmailMessage()
    message["From"] = mail.sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.at)
    message["Message-ID"] = mail.message_id
    if mail.replies_to:
        message["In-Reply-To"] = message["References"] = mail.replies_to
    else:  # the agency's server stamps client mail as it arrives
        message["Received"] = f"from mx.client.example by mx.rouge.example; {message['Date']}"
    message.set_content("Hello,\n\nSee the subject.\n")
    folder = root / mail.folder
    folder.mkdir(parents=True, exist_ok=True)
    name = mail.message_id.strip("<>").replace("@", "-")
    (folder / f"{name}.eml").write_bytes(message.as_bytes(policy=policy.SMTP))


def import_mail(settings: Settings, store: Store, root: Path) -> None:
    for mail in agency_mail():
        write_eml(mail, root)
    for folder in sorted(root.glob("*/*")):
        mailbox, sent = folder.parent.name, folder.name == "Sent"
        import_paths(settings, store, [folder], IMPORTED, mailbox=mailbox, sent=sent)


def synced(store: Store, at: datetime, *mailboxes: str) -> None:
    """As if the daemon had just polled these mailboxes: the digests report no gap."""
    for mailbox in mailboxes:
        store.record_sync(mailbox, None, True, None, at)


def send_every_kind(settings: Settings, store: Store, directory: Path) -> list[Path]:
    """The real passes at the fixture's instants; each email they send, kept as HTML."""
    renderer = make_renderer()
    written: list[Path] = []

    def run(prefix: str, now: datetime, send: Callable[..., object]) -> None:
        mailer = RecordingMailer()
        send(settings, store, now, mailer=mailer, renderer=renderer)
        written.extend(write_html(mailer.kept, directory, prefix))

    for stage, now in NUDGE_RUNS.items():
        synced(store, now, "alice", "bob")
        run(f"{stage}-", now, send_due_nudges)
    synced(store, MONTH_END, "alice", "bob")
    run("month-", MONTH_END, partial(send_digests, period="month"))
    run("quarter-", MONTH_END, partial(send_digests, period="quarter"))
    run("", MONTH_END, send_client_reports)
    synced(store, MORNING, "alice", "bob")
    run("morning-", MORNING, send_due_nudges)
    synced(store, WEEK_END, "alice", "bob")
    run("week-", WEEK_END, partial(send_digests, period="week"))
    synced(store, ALERT, "alice")
    # an IMAP server's words are a stranger's text too
    store.record_sync("bob", None, False, f"bob: imap.rouge.example: NO [ALERT] {SCRIPT}", ALERT)
    run("", ALERT, check_alerts)
    return written


def render_emails(directory: Path) -> list[Path]:
    """Every email of the fixture as an HTML file in `directory`, in the order sent."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        config = work / "mailwatch.toml"
        config.write_text(CONFIG.format(database=work / "mailwatch.db"))
        settings = load_settings(config)
        store = open_store(settings)
        try:
            import_mail(settings, store, work / "mail")
            return send_every_kind(settings, store, directory)
        finally:
            store.close()


@dataclass(frozen=True)
class PageSize:
    width: int  # the document's scrollWidth: wider than `viewport` scrolls sideways
    height: int
    viewport: int


def page_sizes(pages: list[Path], width: int) -> dict[Path, PageSize]:
    """Each page laid out by Chromium in a viewport `width` CSS pixels wide.

    Headless Chromium widens a window narrower than 500 px, so each page is measured in
    an iframe of exactly `width` (a viewport of its own, media queries included), all in
    one run.  The emails carry no JavaScript: the harness page alone reads the sizes."""
    with tempfile.TemporaryDirectory() as scratch:
        harness = Path(scratch) / "measure.html"
        frames = "".join(
            f'<iframe src="{page.as_uri()}" style="width:{width}px;height:200px;border:0"></iframe>'
            for page in pages
        )
        harness.write_text(
            f"<!DOCTYPE html><html><body>{frames}<script>"
            "window.onload = () => { document.body.dataset.sizes = JSON.stringify("
            "[...document.querySelectorAll('iframe')].map(frame => {"
            " const root = frame.contentDocument.documentElement;"
            " return [root.scrollWidth, root.scrollHeight, root.clientWidth]; })); };"
            "</script></body></html>"
        )
        dom = chromium("--allow-file-access-from-files", "--dump-dom", harness.as_uri())
    start = dom.index('data-sizes="') + len('data-sizes="')
    sizes = json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"'))
    return {page: PageSize(*size) for page, size in zip(pages, sizes, strict=True)}


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    chromium(f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri())
    if not png.exists():
        raise RuntimeError(f"chromium wrote no {png}")


def chromium(*arguments: str) -> str:
    """Runs headless Chromium; its output. Missing, it fails (FileNotFoundError)."""
    done = subprocess.run(
        [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
         "--hide-scrollbars", *arguments],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the passes log each skipped nudge and alert
    shutil.rmtree(OUTPUT, ignore_errors=True)
    pages = render_emails(OUTPUT)
    for width in (PHONE, DESKTOP):
        for page, size in page_sizes(pages, width).items():
            screenshot(page, page.with_name(f"{page.stem}-{width}.png"), width, size.height)
    for picture, name in README_PICTURES.items():
        screenshot(OUTPUT / name, HERE / picture, PHONE, README_HEIGHT)
    print(f"{len(pages)} emails, as HTML and at {PHONE} and {DESKTOP} px, in {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
