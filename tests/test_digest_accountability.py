"""The digest as an accountability record: every breach of the period with its reason, lines
that add up, "no data" when there is none, and trends against the periods before."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailwatch import digests
from mailwatch.bootstrap import make_renderer
from mailwatch.core.lessons import Lesson
from mailwatch.core.periods import last_complete
from mailwatch.store.repository import Store, StoredMessage
from tests.agency_week import FOLDERS
from tests.core.factory import at, client, staff
from tests.e2e.test_same_mail_same_numbers import Agency
from tests.test_digests import HEAD, NOW, add_week, send_digests, settings_for

AGENCY_WEEK_NOW = "2024-12-09T13:00:00+00:00"  # the Monday after tests/agency_week.py's week
STATUSES = ("met", "breached", "overdue", "open", "waived")


@pytest.fixture
def week(store: Store) -> Store:
    """tests/test_digests.py's week: 2 met, 1 breached, 1 overdue, 1 open, 1 waived."""
    return add_week(store)


def add(store: Store, *messages) -> None:
    store.add_messages(
        [StoredMessage(m, b"Subject: x\r\n\r\n", location=f"test:{m.key}") for m in messages]
    )


def bodies(digest: digests.Digest) -> tuple[str, str]:
    return digest.rendered.text, digest.rendered.html


def digest_of(run: digests.DigestRun, recipient: str) -> digests.Digest:
    return next(d for d in run.digests if d.recipient == recipient)


def test_every_breach_of_the_week_is_in_the_agency_digest_and_its_counts_equal_the_report(
    migrated_sqlite, tmp_path
):
    agency = Agency(tmp_path / "agency", migrated_sqlite)
    for mailbox, folder in FOLDERS:
        agency.import_folder(mailbox, folder, "eml")
    out = tmp_path / "digests"
    agency.mailwatch("digest", "--dry-run", "--output", str(out), "--now", AGENCY_WEEK_NOW)
    report = json.loads(
        agency.mailwatch(
            "report",
            "--since",
            "2024-12-02",
            "--until",
            "2024-12-09",
            "--format",
            "json",
            "--now",
            AGENCY_WEEK_NOW,
        )
    )
    stem = out / "week-2024-W49-head@rouge.example"
    figures = json.loads(Path(f"{stem}.json").read_text())
    eml = message_from_bytes(Path(f"{stem}.eml").read_bytes(), policy=policy.default)
    text = eml.get_body(("plain",)).get_content()
    html = Path(f"{stem}.html").read_text()

    breached = [r for r in report["requests"] if r["status"] in ("breached", "overdue")]
    assert {r["status"] for r in breached} == {"breached", "overdue"}
    assert figures["summary"] == report["summary"]
    assert [b["opened_by"] for b in figures["breaches"]] == [
        r["opened_by"] for r in sorted(breached, key=lambda r: -late(r))
    ]
    for request in breached:
        assert request["subject"] in text and request["subject"] in html
    assert text.count("reason: no reason recorded yet") == len(breached)
    invoice = next(b for b in figures["breaches"] if b["opened_by"] == "<invoice@globex.example>")
    assert invoice["late_seconds"] == late(invoice_request(report)) > 0
    assert invoice["answered_at"] == "2024-12-09T11:00:00Z"
    assert (invoice["reason"], invoice["reason_category"]) == (None, None)
    assert "answered Mon 9 Dec 11:00 by bob@rouge.example" in text


def invoice_request(report: dict) -> dict:
    return next(r for r in report["requests"] if r["opened_by"] == "<invoice@globex.example>")


def late(request: dict) -> int:
    """Past the target, as `report --format json` tells it."""
    waited = request["response_seconds"]
    return (request["elapsed_seconds"] if waited is None else waited) - request["target_seconds"]


def test_past_fifty_breaches_the_email_shows_fifty_and_the_command_that_lists_the_rest(
    smtp_server, store
):
    add(store, *(client(f"q{n}@acme.example", at(n % 6, 8, n), f"Question {n}") for n in range(53)))

    run = send_digests(settings_for(smtp_server), store, NOW, dry_run=True)

    head = digest_of(run, HEAD)
    text, html = bodies(head)
    assert len(head.figures["breaches"]) == 53
    assert text.count("late (overdue)") == 50 and html.count("late</strong> (overdue)") == 50
    command = "mailwatch lessons --since 2026-11-23 --until 2026-11-30"
    assert f"and 3 more, listed by: {command}" in text and command in html
    assert "Breaches of the period (53), worst first" in text


def test_a_manager_s_digest_lists_only_the_breaches_of_their_own_accounts(smtp_server, week):
    add(week, client("g@globex.example", at(1, 9), "Globex invoice", frm="ann@globex.example"))

    run = send_digests(settings_for(smtp_server), week, NOW, dry_run=True)

    carol, alice = digest_of(run, "carol@rouge.example"), digest_of(run, "alice@rouge.example")
    assert [b["subject"] for b in carol.figures["breaches"]] == ["Globex invoice"]
    assert [b["subject"] for b in alice.figures["breaches"]] == ["Logo files", "Invoice"]
    assert "Logo files" not in carol.rendered.text and "Globex invoice" not in alice.rendered.text


def test_a_recorded_reason_shows_and_breaches_without_one_are_counted_per_person(smtp_server, week):
    settings = settings_for(smtp_server)
    facts = digests.period_facts(settings, week, NOW, last_complete("week", NOW, "UTC"))
    reason = Lesson(
        "<b@acme.example>", "client sent the wrong PO", "waiting on a third party", "alice", NOW
    )

    built = digests.digests_of(
        replace(facts, lessons={reason.message_key: reason}), make_renderer()
    )

    head = next(d for d in built if d.recipient == HEAD)
    invoice = next(b for b in head.figures["breaches"] if b["subject"] == "Invoice")
    assert (invoice["reason"], invoice["reason_category"]) == (
        "client sent the wrong PO",
        "waiting on a third party",
    )
    assert head.figures["breaches_without_reason"] == {"alice@rouge.example": 1}
    text, html = bodies(head)
    assert "reason: client sent the wrong PO (waiting on a third party)" in text
    assert "Alice (alice@rouge.example): 1 breach without a reason" in text
    assert "client sent the wrong PO" in html and "1 breach without a reason" in html


def test_every_line_adds_up_and_says_who_is_responsible_apart_from_who_replied(smtp_server, week):
    run = send_digests(settings_for(smtp_server), week, NOW, dry_run=True)

    head = digest_of(run, HEAD)
    for section in ("accounts", "managers", "people"):
        for summary in head.figures[section].values():
            assert sum(summary[s] for s in STATUSES) == summary["requests"]
    text = head.rendered.text
    people = text.split("By person responsible")[1]
    assert "Alice (alice@rouge.example): 33% (5 requests: 1 met, 1 breached, 1 overdue, " in people
    assert "1 overdue, 1 open, 1 waived); median" in people
    managers = text.split("By account manager")[1]
    assert "Carol (carol@rouge.example): 100% (1 request: 1 met, 0 breached" in managers
    waits = text.split("Longest waits")[1]
    assert "responsible: Alice (alice@rouge.example); no reply yet" in waits
    assert "responsible: Carol (carol@rouge.example); replied by Carol" in waits


def test_times_are_local_words_never_raw_iso(smtp_server, week):
    week.record_sync("bob", None, False, "LOGIN failed", at(6, 9))

    run = send_digests(settings_for(smtp_server), week, NOW, dry_run=True)

    text, html = bodies(digest_of(run, HEAD))
    assert "bob: errors in the period (last at Sun 29 Nov 09:00)" in text
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d", text + html)
    assert text.count("Times are in UTC") == 1


def test_a_period_with_no_mail_and_no_sync_says_no_data(smtp_server, store):
    run = send_digests(settings_for(smtp_server), store, NOW, dry_run=True)

    head = digest_of(run, HEAD)
    text, html = bodies(head)
    assert head.figures["no_data"] is True
    assert "Compliance: no data" in text and "No data: no client email was received" in text
    assert "no data" in html and "#15803d" not in html
    assert "synced without gaps" not in text


@pytest.fixture
def five_weeks(week: Store) -> Store:
    """Before the week fixture's weeks 47 and 48: week 46 with one met and one breached."""
    add(
        week,
        client("w45a@acme.example", at(-14, 9), "Old A"),
        staff("w45ar@rouge.example", at(-14, 12), refs=("<w45a@acme.example>",)),  # 3h: met
        client("w45b@acme.example", at(-13, 9), "Old B"),
        staff("w45br@rouge.example", at(-12, 11), refs=("<w45b@acme.example>",)),  # 26h
    )
    return week


def test_trends_compare_with_the_week_before_and_the_average_of_the_four_before(
    smtp_server, five_weeks
):
    run = send_digests(settings_for(smtp_server), five_weeks, NOW, dry_run=True)

    head = digest_of(run, HEAD)
    trend = head.figures["trend"]
    assert trend["periods"] == ["week:2026-W44", "week:2026-W45", "week:2026-W46", "week:2026-W47"]
    assert trend["periods_with_data"] == 2
    assert trend["compliance"] == {
        "current": 0.5,
        "previous": 1.0,
        "average": 0.75,
        "change_from_previous": -0.5,
        "change_from_average": -0.25,
    }
    assert (trend["requests"]["previous"], trend["requests"]["average"]) == (1, 1.5)
    # medians: 2h this week, 1h in week 47, (3h + 26h) / 2 = 14h 30m in week 45
    assert trend["median_response_seconds"]["average"] == (3600 + 52200) / 2
    text, html = bodies(head)
    lines = text.split("Trend")[1]
    among = "average of the 2 weeks with mail among the 4 before"
    assert (
        "↓ Compliance down 50 points from 100% in week 47 of 2026 (16–22 Nov); "
        f"{among}: 75% (↓ down 25 points)." in lines
    )
    assert (
        f"↑ Requests up 5 from 1 in week 47 of 2026 (16–22 Nov); {among}: 1.5 (↑ up 4.5)." in lines
    )
    assert (
        "↑ Median reply up 1h from 1h in week 47 of 2026 (16–22 Nov); "
        f"{among}: 7h 45m (↓ down 5h 45m)." in lines
    )
    assert "↓ Compliance down 50 points" in html


def test_a_reason_recorded_with_annotate_shows_in_the_next_digest_the_report_and_the_log(
    migrated_sqlite, tmp_path
):
    agency = Agency(tmp_path / "agency", migrated_sqlite)
    for mailbox, folder in FOLDERS:
        agency.import_folder(mailbox, folder, "eml")
    week = ("--since", "2024-12-02", "--until", "2024-12-09")
    before = json.loads(
        agency.mailwatch("report", *week, "--format", "json", "--now", AGENCY_WEEK_NOW)
    )
    breach = next(r for r in before["requests"] if r["status"] == "breached")
    agency.mailwatch(
        "annotate",
        breach["opened_by"],
        "--reason",
        "Site migration weekend",
        "--category",
        "capacity",
        "--now",
        "2024-12-09T12:00:00+00:00",
    )

    out = tmp_path / "digests"
    agency.mailwatch("digest", "--dry-run", "--output", str(out), "--now", AGENCY_WEEK_NOW)
    stem = out / "week-2024-W49-head@rouge.example"
    figures = json.loads(Path(f"{stem}.json").read_text())
    listed = next(b for b in figures["breaches"] if b["opened_by"] == breach["opened_by"])
    assert (listed["reason"], listed["reason_category"]) == ("Site migration weekend", "capacity")
    assert "Site migration weekend" in Path(f"{stem}.html").read_text()
    after = json.loads(
        agency.mailwatch("report", *week, "--format", "json", "--now", AGENCY_WEEK_NOW)
    )
    annotated = next(r for r in after["requests"] if r["opened_by"] == breach["opened_by"])
    assert annotated["reason"] == "Site migration weekend"
    log = agency.mailwatch("lessons", *week, "--format", "csv", "--now", AGENCY_WEEK_NOW)
    assert "Site migration weekend" in log and "capacity" in log
