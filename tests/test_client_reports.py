"""Service reports a client can read: `mailwatch client-report`, from mail on disk through
the command line, and the reports the daemon sends on schedule."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from mailwatch.cli import main
from mailwatch.config import ConfigError, load_settings
from mailwatch.daemon import Daemon
from mailwatch.health import health_problems
from mailwatch.store.repository import Store
from tests.fixtures.smtp import SmtpSink

CONFIG = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
head_of_client_management = ["head@rouge.example"]

[database]
url = "{url}"

[[sla.tiers]]
name = "critical"
target = "1h"
subject = ["(?i)\\\\bsite (is )?down\\\\b"]

[[staff]]
email = "alice@rouge.example"
name = "Alice Smith"

[[staff]]
email = "bob@rouge.example"
name = "Bob Jones"

[[staff]]
email = "carol@rouge.example"
name = "Carol King"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
backups = ["bob@rouge.example"]
client_report = "monthly"

[[accounts]]
name = "Globex"
domains = ["globex.example"]
manager = "carol@rouge.example"
"""

SMTP = """
[smtp]
host = "{host}"
port = {port}
security = "none"
sender = "Mailwatch <mailwatch@rouge.example>"
"""

STAFF_TRACES = ("alice", "bob", "carol", "Smith", "Jones", "King", "rouge.example")
REASON = "forgot to check the shared inbox"
NOVEMBER = "2026-12-03T09:00Z"  # the last complete month is November 2026


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_mail(folder: Path, name: str, headers: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{key}: {value}\n" for key, value in headers.items())
    (folder / f"{name}.eml").write_text(lines + "\nHello.\n")


def client_mail(folder: Path, key: str, when: str, subject: str, frm: str) -> None:
    date = format_datetime(instant(when))
    write_mail(
        folder,
        key,
        {
            "Received": f"from mx.client.example by mx.rouge.example; {date}",
            "From": frm,
            "To": "alice@rouge.example",
            "Subject": subject,
            "Date": date,
            "Message-ID": f"<{key}@client.example>",
        },
    )


def staff_reply(folder: Path, key: str, when: str, to: str, replying_to: str, frm: str) -> None:
    write_mail(
        folder,
        key,
        {
            "From": frm,
            "To": to,
            "Subject": "Re: your email",
            "Date": format_datetime(instant(when)),
            "Message-ID": f"<{key}@rouge.example>",
            "In-Reply-To": f"<{replying_to}@client.example>",
            "References": f"<{replying_to}@client.example>",
        },
    )


JANE = "Jane Doe <jane@acme.example>"
ANN = "Ann Lee <ann@globex.example>"


@pytest.fixture
def agency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    """Acme's October and November, one Globex request, mail around the October clock change,
    imported through the command line; one Acme request waived with an internal reason."""
    monkeypatch.chdir(tmp_path)
    inbox, sent = tmp_path / "mail" / "INBOX", tmp_path / "mail" / "Sent"
    (tmp_path / "mailwatch.toml").write_text(CONFIG.format(url=store_url))
    for key, received, subject, replied in [
        ("banner", "2026-11-02T10:00Z", "Homepage banner", "2026-11-02T12:00Z"),  # met, 2h
        ("down", "2026-11-03T09:00Z", "Our site is down", "2026-11-03T11:00Z"),  # breached
        ("invoice", "2026-11-03T14:00Z", "Invoice question", "2026-11-05T14:00Z"),  # breached
        ("logo", "2026-11-17T10:00Z", "Logo files", "2026-11-17T10:30Z"),  # met, 30m
        ("october", "2026-10-13T10:00Z", "October copy", "2026-10-13T11:00Z"),  # met, 1h
        # Thursday 1 October 00:30 BST: the first half hour of Q4 in London
        ("q4-first", "2026-09-30T23:30Z", "Late night", "2026-10-01T08:00Z"),
        # Wednesday 30 September 23:30 BST: still Q3
        ("q3-last", "2026-09-30T22:30Z", "Before midnight", "2026-10-01T08:00Z"),
    ]:
        client_mail(inbox, key, received, subject, JANE)
        staff_reply(sent, f"re-{key}", replied, "jane@acme.example", key, "Bob <bob@rouge.example>")
    client_mail(inbox, "newsletter", "2026-11-10T10:00Z", "Newsletter", JANE)
    client_mail(inbox, "globex", "2026-11-04T10:00Z", "Globex login", ANN)
    staff_reply(
        sent,
        "re-globex",
        "2026-11-04T10:20Z",
        "ann@globex.example",
        "globex",
        "carol@rouge.example",
    )
    assert main(["import", "mail/INBOX", "--mailbox", "alice"]) == 0
    assert main(["import", "mail/Sent", "--mailbox", "alice", "--sent"]) == 0
    waived = main(
        ["waive", "newsletter@client.example", "--reason", REASON, "--now", "2026-11-10T11:00Z"]
    )
    assert waived == 0
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def client_report(capsys, fmt: str, *extra: str, now: str = NOVEMBER) -> str:
    code, out, err = run(capsys, "client-report", "Acme Ltd", "--format", fmt, "--now", now, *extra)
    assert (code, err) == (0, "")
    return out


def test_a_client_report_names_no_staff_no_other_client_and_no_internal_reason(agency, capsys):
    for fmt in ("html", "json", "csv"):
        shown = client_report(capsys, fmt)
        assert "Acme Ltd" in shown
        for trace in (*STAFF_TRACES, "Globex", REASON, "responsible", "Homepage banner"):
            assert trace not in shown, f"{trace!r} in the {fmt} report"


def test_the_html_report_has_the_agency_and_period_in_its_title_and_prints_on_a4(agency, capsys):
    html = client_report(capsys, "html")
    assert "<title>Rouge: service report for Acme Ltd, November 2026</title>" in html
    assert "size: A4" in html and "break-inside: avoid" in html
    assert "<script" not in html and "http" not in html and "src=" not in html
    assert "within <strong>24 hours</strong>, around the clock" in html
    assert "<strong>Critical</strong>: within 1 hour" in html
    assert "Tuesday 3 November</td><td>2</td>" in html  # the busiest day


def report_json(capsys, since: str, until: str) -> dict:
    code, out, _ = run(
        capsys, "report", "--since", since, "--until", until, "--format", "json", "--now", NOVEMBER
    )
    assert code == 0
    return json.loads(out)


def test_the_figures_equal_the_report_of_the_same_account_and_period(agency, capsys):
    figures = json.loads(client_report(capsys, "json"))
    november = report_json(capsys, "2026-11-01", "2026-12-01")
    october = report_json(capsys, "2026-10-01", "2026-11-01")
    assert set(figures) == {"account", "period", "summary", "tiers", "months"}
    assert figures["account"] == "Acme Ltd"
    assert figures["period"] == {"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}
    assert figures["summary"] == november["accounts"]["Acme Ltd"]
    assert figures["summary"]["requests"] == 5 and figures["summary"]["waived"] == 1
    acme = [r for r in november["requests"] if r["account"] == "Acme Ltd"]
    by_tier = Counter((r["tier"], r["status"]) for r in acme)
    for tier, summary in figures["tiers"].items():
        assert summary["requests"] == sum(n for (t, _), n in by_tier.items() if t == tier)
        assert summary["met"] == by_tier[(tier, "met")]
    assert list(figures["tiers"]) == ["critical", "standard"]
    months = {m["month"]: m["summary"] for m in figures["months"]}
    assert list(months)[0] == "2025-12" and list(months)[-1] == "2026-11" and len(months) == 12
    assert months["2026-11"] == figures["summary"]
    assert months["2026-10"] == october["accounts"]["Acme Ltd"]
    assert months["2026-01"]["requests"] == 0 and months["2026-01"]["compliance"] is None


def test_the_csv_holds_the_same_figures_as_the_json(agency, capsys):
    figures = json.loads(client_report(capsys, "json"))
    rows = client_report(capsys, "csv").splitlines()
    assert rows[0].startswith("account,section,name,since,until,requests,met,breached")
    assert rows[1] == (
        "Acme Ltd,period,,2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,5,2,2,0,0,1,0.5,7200,172800"
    )
    assert rows[1].endswith(",".join(str(v) for v in figures["summary"].values()))
    assert len(rows) == 1 + 1 + 2 + 12


def test_a_quarter_across_the_october_clock_change_is_cut_at_local_midnight(agency, capsys):
    figures = json.loads(client_report(capsys, "json", "--period", "quarter", now="2027-01-05"))
    assert figures["period"] == {"since": "2026-09-30T23:00:00Z", "until": "2027-01-01T00:00:00Z"}
    # Late night (00:30 BST on 1 October) is in Q4; 23:30 BST on 30 September is not.
    assert figures["summary"]["requests"] == 7
    months = {m["month"]: m["summary"]["requests"] for m in figures["months"]}
    assert (months["2026-09"], months["2026-10"], months["2026-11"]) == (1, 2, 5)


def test_output_writes_the_file_named_after_the_period_and_account(agency, capsys, tmp_path):
    out = client_report(capsys, "html", "--output", str(tmp_path / "reports"))
    written = tmp_path / "reports" / "month-2026-11-acme-ltd.html"
    assert out == f"wrote {written}\n"
    assert "Service report for Acme Ltd" in written.read_text()


def test_an_unknown_account_is_refused_naming_the_configured_ones(agency, capsys):
    code, out, err = run(capsys, "client-report", "Initech", "--now", NOVEMBER)
    assert (code, out) == (2, "")
    assert err == (
        "mailwatch: no account is named 'Initech'; configured accounts: Acme Ltd, Globex\n"
    )


# ---------------------------------------------------------------- configuration


def test_client_report_needs_someone_to_send_it_to(tmp_path):
    path = tmp_path / "mailwatch.toml"
    config = CONFIG.format(url="sqlite://").replace(
        'manager = "carol@rouge.example"', 'client_report = "quarterly"'
    )
    path.write_text(config)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"{path}: accounts[1].client_report: nobody to send it to: set manager or backups"
    )


def test_client_report_schedules_are_read_per_account_with_the_day(tmp_path):
    path = tmp_path / "mailwatch.toml"
    path.write_text(CONFIG.format(url="sqlite://") + "\n[client_reports]\nday = 3\n")
    reports = load_settings(path).client_reports
    assert (reports.day, dict(reports.periods)) == (3, {"Acme Ltd": "month"})
    path.write_text(CONFIG.format(url="sqlite://") + "\n[client_reports]\nday = 29\n")
    with pytest.raises(ConfigError, match=r"client_reports.day: out of range: 29"):
        load_settings(path)


# ---------------------------------------------------------------- sent on schedule


def daemon_at(agency: Path, smtp_server: SmtpSink, now: str, extra: str = "") -> Daemon:
    config = agency / "mailwatch.toml"
    config.write_text(
        config.read_text() + SMTP.format(host=smtp_server.host, port=smtp_server.port) + extra
    )
    settings = load_settings(config)
    return Daemon(settings, Store(settings.database_url), clock=lambda: instant(now))


def test_the_daemon_sends_the_report_to_the_manager_and_backups_once(agency, smtp_server):
    daemon = daemon_at(agency, smtp_server, "2026-12-01T08:00Z")
    try:
        daemon.client_report_job()
        daemon.client_report_job()
    finally:
        daemon.store.close()
    assert sorted(m.rcpt_tos for m in smtp_server.messages) == [
        ("alice@rouge.example",),
        ("bob@rouge.example",),
    ]
    email = smtp_server.messages[0].message
    assert email["X-Mailwatch"] == "client-report"
    assert email["Auto-Submitted"] == "auto-generated"
    assert email["Subject"] == "Rouge service report for Acme Ltd, November 2026: ready to forward"
    (attachment,) = list(email.iter_attachments())
    assert attachment.get_filename() == "month-2026-11-acme-ltd.html"
    report = attachment.get_content()
    assert "Service report for Acme Ltd: November 2026" in report
    assert not any(trace in report for trace in STAFF_TRACES)
    assert "ready to forward" in email.get_body(("plain",)).get_content()


def test_a_sent_report_keeps_the_figures_it_showed_once_per_account(agency, smtp_server, capsys):
    daemon = daemon_at(agency, smtp_server, "2026-12-01T08:00Z")
    try:
        daemon.client_report_job()
        daemon.client_report_job()
        (kept,) = daemon.store.reported_figures("client-report", ["month:2026-11"])
    finally:
        daemon.store.close()
    shown = json.loads(client_report(capsys, "json", now="2026-12-01T08:00Z"))
    assert (kept.recipient, kept.reported_at) == ("Acme Ltd", instant("2026-12-01T08:00Z"))
    assert kept.figures == shown
    assert kept.statuses["<newsletter@client.example>"] == "waived"
    assert len(kept.statuses) == shown["summary"]["requests"]


def test_a_client_report_the_smtp_server_refuses_makes_health_fail(agency, smtp_server):
    smtp_server.answer_next("554 5.7.1 Rejected", count=2)
    daemon = daemon_at(agency, smtp_server, "2026-12-01T08:00Z")
    try:
        daemon.client_report_job()
        problems = health_problems(daemon.settings, daemon.store, instant("2026-12-01T08:05Z"))
    finally:
        daemon.store.close()
    assert smtp_server.messages == []
    assert any(
        problem.startswith("the last client-report to") and "554" in problem for problem in problems
    ), problems


def test_the_report_waits_for_its_day_and_a_daemon_that_was_down_catches_up(agency, smtp_server):
    early = daemon_at(agency, smtp_server, "2026-12-02T08:00Z", "[client_reports]\nday = 3\n")
    try:
        early.client_report_job()
        assert smtp_server.messages == []
        early.clock = lambda: instant("2026-12-09T10:00Z")
        early.client_report_job()
        assert len(smtp_server.messages) == 2
        early.clock = lambda: instant("2027-01-09T10:00Z")  # December's, nothing older
        early.client_report_job()
    finally:
        early.store.close()
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert len(subjects) == 4 and "December 2026" in subjects[0]
