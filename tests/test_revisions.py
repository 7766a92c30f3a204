"""Figures that never change silently: a sent digest keeps what it showed, the next digest
lists what changed since, and `report --as-reported` shows a period then and now."""

from __future__ import annotations

import json
from email import message_from_bytes
from email import policy as email_policy
from email.utils import format_datetime
from pathlib import Path

import pytest

from mailwatch.cli import main
from mailwatch.config import load_settings
from mailwatch.store.repository import Store
from tests.fixtures.smtp import SmtpSink
from tests.test_client_reports import instant

CONFIG = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
head_of_client_management = ["head@rouge.example"]

[database]
url = "{url}"

[smtp]
host = "{host}"
port = {port}
security = "none"
sender = "Mailwatch <mailwatch@rouge.example>"

[[staff]]
email = "bob@rouge.example"
name = "Bob Jones"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "bob@rouge.example"
"""

REPORTED = "2026-11-30T08:00Z"  # Monday: the digest of week 48 (23-29 November) goes out
NEXT_WEEK = "2026-12-07T08:00Z"  # the digest of week 49


def write_mail(folder: Path, key: str, when: str, subject: str, reply_to: str = "") -> None:
    """A client message (`reply_to` empty) or Bob's reply to one, as an .eml file."""
    date = format_datetime(instant(when))
    if reply_to:
        headers = {
            "From": "Bob Jones <bob@rouge.example>",
            "To": "jane@acme.example",
            "In-Reply-To": f"<{reply_to}@acme.example>",
            "References": f"<{reply_to}@acme.example>",
        }
    else:
        headers = {
            "Received": f"from mx.acme.example by mx.rouge.example; {date}",
            "From": "Jane <jane@acme.example>",
            "To": "bob@rouge.example",
        }
    headers |= {"Subject": subject, "Date": date, "Message-ID": f"<{key}@acme.example>"}
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{name}: {value}\n" for name, value in headers.items())
    (folder / f"{key}.eml").write_text(lines + "\nHello.\n")


@pytest.fixture
def reported_week(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str, smtp_server: SmtpSink
) -> Path:
    """Week 48 digested at REPORTED: one request met, one overdue, one still open (50%)."""
    monkeypatch.chdir(tmp_path)
    config = CONFIG.format(url=store_url, host=smtp_server.host, port=smtp_server.port)
    (tmp_path / "mailwatch.toml").write_text(config)
    inbox, sent = tmp_path / "mail" / "INBOX", tmp_path / "mail" / "Sent"
    write_mail(inbox, "banner", "2026-11-23T10:00Z", "Homepage banner")
    write_mail(sent, "re-banner", "2026-11-23T12:00Z", "Re: Homepage banner", "banner")
    write_mail(inbox, "logo", "2026-11-24T10:00Z", "Logo files")  # overdue when reported
    write_mail(inbox, "sunday", "2026-11-29T20:00Z", "Sunday question")  # open when reported
    assert main(["import", "mail/INBOX", "--mailbox", "bob", "--now", REPORTED]) == 0
    assert main(["import", "mail/Sent", "--mailbox", "bob", "--sent", "--now", REPORTED]) == 0
    assert main(["digest", "--now", REPORTED]) == 0
    return tmp_path


def answer_both_later(folder: Path) -> None:
    """The open request is answered in time, the overdue one a day after the report."""
    sent = folder / "mail" / "Sent"
    for old in sent.iterdir():
        old.unlink()
    write_mail(sent, "re-sunday", "2026-11-30T09:00Z", "Re: Sunday question", "sunday")
    write_mail(sent, "re-logo", "2026-12-01T10:00Z", "Re: Logo files", "logo")
    late = ["import", "mail/Sent", "--mailbox", "bob", "--sent", "--now", "2026-12-01T10:05Z"]
    assert main(late) == 0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_next_digest_lists_a_request_answered_after_its_week_was_reported(
    reported_week: Path, smtp_server: SmtpSink, capsys
):
    answer_both_later(reported_week)
    code, _, err = run(capsys, "digest", "--now", NEXT_WEEK, "--output", "out")

    assert (code, err) == (0, "")
    head = [m.message for m in smtp_server.messages if m.rcpt_tos == ("head@rouge.example",)][-1]
    assert "week 49" in head["Subject"]
    text = head.get_body(("plain",)).get_content()
    revisions = text.split("Revisions to figures already reported")[1]
    assert "week 48 of 2026 (23–29 Nov), first reported Mon 30 Nov 08:00:" in revisions
    assert (
        "The whole agency: met 1 → 2; breached 0 → 1; overdue 1 → 0; open 1 → 0; "
        "compliance 50% → 67%; median reply 2h → 13h; p90 reply 2h → 7d" in revisions
    )
    assert (
        'Why: "Logo files" (Acme Ltd): overdue then, breached now: '
        "answered Tue 1 Dec 10:00 by bob@rouge.example, after it was reported." in revisions
    )
    assert (
        'Why: "Sunday question" (Acme Ltd): open then, met now: '
        "answered Mon 30 Nov 09:00 by bob@rouge.example, after it was reported." in revisions
    )
    html = head.get_body(("html",)).get_content()
    assert "Revisions to figures already reported" in html and "compliance 50% → 67%" in html
    figures = json.loads(Path("out/week-2026-W49-head@rouge.example.json").read_text())
    (revision,) = figures["revisions"]
    assert revision["period"]["key"] == "week:2026-W48"
    assert revision["reported_at"] == "2026-11-30T08:00:00Z"
    assert {"scope": "agency", "figure": "compliance", "old": 0.5, "new": 2 / 3} in revision[
        "figures"
    ]
    assert [(w["opened_by"], w["old"], w["new"]) for w in revision["why"]] == [
        ("<logo@acme.example>", "overdue", "breached"),
        ("<sunday@acme.example>", "open", "met"),
    ]


def test_a_deadline_that_passed_unanswered_after_the_report_is_a_revision_too(
    reported_week: Path, smtp_server: SmtpSink, capsys
):
    code, _, _ = run(capsys, "digest", "--now", NEXT_WEEK, "--dry-run", "--output", "out")

    assert code == 0
    first = smtp_server.messages[0].message.get_body(("plain",)).get_content()
    assert "Revisions" not in first  # nothing was reported before week 48
    figures = json.loads(Path("out/week-2026-W49-head@rouge.example.json").read_text())
    (revision,) = figures["revisions"]
    assert [
        (c["figure"], c["old"], c["new"]) for c in revision["figures"] if c["scope"] == "agency"
    ] == [
        ("overdue", 1, 2),
        ("open", 1, 0),
        ("compliance", 0.5, 1 / 3),
    ]
    assert [w["reason"] for w in revision["why"]] == ["its deadline passed unanswered"]
    eml = message_from_bytes(
        Path("out/week-2026-W49-head@rouge.example.eml").read_bytes(), policy=email_policy.default
    )
    text = eml.get_body(("plain",)).get_content()
    assert (
        'Why: "Sunday question" (Acme Ltd): open then, overdue now: its deadline passed unanswered.'
        in text
    )
    manager = json.loads(Path("out/week-2026-W49-bob@rouge.example.json").read_text())
    assert manager["revisions"] == []  # the agency digest tells them


def test_report_as_reported_shows_the_week_as_first_sent_next_to_today(reported_week: Path, capsys):
    answer_both_later(reported_week)
    capsys.readouterr()
    code, out, err = run(
        capsys, "report", "--as-reported", "week", "--now", "2026-12-03T09:00Z", "--format", "json"
    )

    assert (code, err) == (0, "")
    figures = json.loads(out)
    assert figures["period"]["key"] == "week:2026-W48"
    assert figures["as_reported"]["reported_at"] == "2026-11-30T08:00:00Z"
    assert figures["as_reported"]["recipient"] == "head@rouge.example"
    then, now = figures["as_reported"]["summary"], figures["now"]["summary"]
    assert (then["met"], then["overdue"], then["open"], then["compliance"]) == (1, 1, 1, 0.5)
    assert (now["met"], now["breached"], now["open"], now["compliance"]) == (2, 1, 0, 2 / 3)
    assert figures["now"]["accounts"]["Acme Ltd"] == now

    code, table, _ = run(capsys, "report", "--as-reported", "week", "--now", "2026-12-03T09:00Z")
    assert code == 0
    assert "as first reported 2026-11-30T08:00:00Z (to head@rouge.example)" in table
    assert "compliance      50%           67%  (changed)" in table
    assert "requests        3             3\n" in table
    assert "  Acme Ltd: 50% as reported, 67% now  (changed)" in table
    assert '"Logo files" (Acme Ltd): overdue then, breached now: answered Tue 1 Dec' in table


def test_report_as_reported_of_a_period_never_reported_says_so(reported_week: Path, capsys):
    code, out, err = run(capsys, "report", "--as-reported", "month", "--now", NEXT_WEEK)

    assert (code, out) == (1, "")
    assert err == "mailwatch: November 2026 was never reported in an agency digest\n"


def test_a_sent_digest_keeps_its_first_figures_and_a_dry_run_keeps_none(reported_week: Path):
    assert main(["digest", "--now", "2026-11-30T09:00Z"]) == 0  # already sent: nothing new
    assert main(["digest", "--now", NEXT_WEEK, "--dry-run"]) == 0
    settings = load_settings(reported_week / "mailwatch.toml")
    store = Store(settings.database_url)
    try:
        week_48 = store.reported_figures("digest", ["week:2026-W48"])
        week_49 = store.reported_figures("digest", ["week:2026-W49"])
    finally:
        store.close()
    assert sorted(f.recipient for f in week_48) == ["bob@rouge.example", "head@rouge.example"]
    head = next(f for f in week_48 if f.recipient == "head@rouge.example")
    assert head.reported_at == instant(REPORTED)
    assert head.figures["summary"]["compliance"] == 0.5
    assert head.statuses == {
        "<banner@acme.example>": "met",
        "<logo@acme.example>": "overdue",
        "<sunday@acme.example>": "open",
    }
    assert week_49 == []
