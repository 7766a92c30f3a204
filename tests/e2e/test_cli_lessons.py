"""The lessons-learnt log through the command line, on imported mail (SQLite and PostgreSQL):
`annotate` records, `lessons` lists, `report` and `explain` show, each as of `--now`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_import_report import agency, run

__all__ = ["agency"]  # the fixture's Acme mail, as of NOW:
# <c1> "Homepage banner" met; <c2> "Our site is down" (critical, 1h) answered after 2h:
# breached; <c3> "Invoice question", Wed 18 Nov 09:00, unanswered: overdue

NOW = "2026-11-27T09:00Z"
MET, SITE_DOWN, INVOICE = "<c1@acme.example>", "<c2@acme.example>", "<c3@acme.example>"


@pytest.fixture
def imported(agency: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "import", "mail", "--mailbox", "alice")[0] == 0
    return agency


def annotate(capsys, message_id: str, *argv: str, now: str = "2026-11-20T10:00Z"):
    return run(capsys, "annotate", message_id, *argv, "--now", now)


def lessons_json(capsys, *argv: str, now: str = NOW) -> dict:
    code, out, err = run(capsys, "lessons", "--format", "json", "--now", now, *argv)
    assert code == 0, err
    return json.loads(out)


def entry_of(document: dict, opened_by: str) -> dict:
    return next(e for e in document["lessons"] if e["opened_by"] == opened_by)


def report_request(capsys, opened_by: str, now: str = NOW) -> dict:
    code, out, err = run(capsys, "report", "--format", "json", "--now", now)
    assert code == 0, err
    return next(r for r in json.loads(out)["requests"] if r["opened_by"] == opened_by)


def test_a_reason_shows_in_the_report_the_log_and_explain(imported, capsys):
    code, out, err = annotate(
        capsys, SITE_DOWN, "--reason", "Alice was at a client workshop", "--category",
        "Staff absence", "--by", "head@rouge.example",
    )  # fmt: skip

    assert (code, err) == (0, "")
    assert "lesson open" in out and "[staff absence] Alice was at a client workshop" in out
    site_down = report_request(capsys, SITE_DOWN)
    assert (site_down["reason"], site_down["reason_category"]) == (
        "Alice was at a client workshop",
        "staff absence",
    )
    invoice = report_request(capsys, INVOICE)
    assert (invoice["reason"], invoice["reason_category"]) == (None, None)
    code, out, _ = run(capsys, "report", "--format", "csv", "--now", NOW)
    rows = {row["opened_by"]: row for row in csv.DictReader(io.StringIO(out))}
    assert rows[SITE_DOWN]["reason"] == "Alice was at a client workshop"
    assert rows[SITE_DOWN]["reason_category"] == "staff absence"
    assert rows[INVOICE]["reason"] == ""

    entry = entry_of(lessons_json(capsys), SITE_DOWN)
    assert entry["status"] == "open" and entry["request_status"] == "breached"
    assert (entry["reason"], entry["category"]) == (
        "Alice was at a client workshop",
        "staff absence",
    )
    assert (entry["recorded_by"], entry["recorded_at"]) == (
        "head@rouge.example",
        "2026-11-20T10:00:00Z",
    )
    assert (entry["late_seconds"], entry["tier"], entry["responsible"]) == (
        3600,
        "critical",
        ["alice@rouge.example"],
    )
    assert (entry["answered_at"], entry["responder"]) == (
        "2026-11-17T11:00:00Z",
        "bob@rouge.example",
    )

    code, out, _ = run(capsys, "explain", SITE_DOWN, "--now", NOW)
    assert "lesson (open): [staff absence] Alice was at a client workshop" in out
    assert "2026-11-20 10:00  head@rouge.example: reason [staff absence]" in out


def test_the_log_lists_every_breach_and_overdue_request_with_or_without_a_reason(imported, capsys):
    annotate(capsys, SITE_DOWN, "--reason", "Sent to the wrong inbox", "--category", "misrouted")

    document = lessons_json(capsys)

    assert [e["opened_by"] for e in document["lessons"]] == [SITE_DOWN, INVOICE]  # not the met one
    assert entry_of(document, INVOICE)["status"] == "no reason"
    assert entry_of(document, INVOICE)["request_status"] == "overdue"
    assert document["summary"] == {"entries": 2, "no_reason": 1, "open": 1, "resolved": 0}
    code, out, _ = run(capsys, "lessons", "--now", NOW)
    assert code == 0
    assert "[misrouted] Sent to the wrong inbox" in out
    assert "Invoice question" in out and "no reason recorded" in out and "no reply yet" in out
    assert "2 entries: 1 without a reason, 1 open, 0 resolved." in out
    code, out, _ = run(capsys, "lessons", "--since", "2026-11-18", "--format", "json", "--now", NOW)
    assert [e["opened_by"] for e in json.loads(out)["lessons"]] == [INVOICE]


def test_annotating_again_replaces_the_reason_and_keeps_the_earlier_one(imported, capsys):
    annotate(capsys, SITE_DOWN, "--reason", "Nobody saw it", now="2026-11-20T10:00Z")
    annotate(capsys, SITE_DOWN, "--reason", "Sent to the wrong inbox", "--category", "misrouted",
             now="2026-11-21T10:00Z")  # fmt: skip

    entry = entry_of(lessons_json(capsys), SITE_DOWN)
    assert (entry["reason"], entry["category"]) == ("Sent to the wrong inbox", "misrouted")
    assert entry["recorded_at"] == "2026-11-21T10:00:00Z"
    assert report_request(capsys, SITE_DOWN)["reason"] == "Sent to the wrong inbox"
    code, out, _ = run(capsys, "explain", SITE_DOWN, "--now", NOW)
    assert "lesson (open): [misrouted] Sent to the wrong inbox" in out
    assert "2026-11-20 10:00" in out and "reason [other] Nobody saw it" in out
    before = entry_of(lessons_json(capsys, now="2026-11-20T12:00Z"), SITE_DOWN)
    assert (before["reason"], before["category"]) == ("Nobody saw it", "other")


def test_a_lesson_gets_an_action_and_an_owner_then_is_resolved(imported, capsys):
    annotate(capsys, INVOICE, "--reason", "Billing questions have no owner", "--category",
             "unclear request", now="2026-11-20T10:00Z")  # fmt: skip
    code, _, err = annotate(
        capsys, INVOICE, "--action", "Route billing mail to Bob", "--owner", "bob@rouge.example",
        now="2026-11-21T10:00Z",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert [e["opened_by"] for e in lessons_json(capsys, "--open")["lessons"]] == [
        SITE_DOWN,  # no reason yet: open too
        INVOICE,
    ]

    code, _, err = annotate(capsys, INVOICE, "--resolved", "--note", "Rule added in Outlook",
                            "--by", "bob@rouge.example", now="2026-11-24T16:00Z")  # fmt: skip

    assert (code, err) == (0, "")
    assert [e["opened_by"] for e in lessons_json(capsys, "--open")["lessons"]] == [SITE_DOWN]
    entry = entry_of(lessons_json(capsys), INVOICE)
    assert entry["status"] == "resolved"
    assert (entry["action"], entry["owner"]) == ("Route billing mail to Bob", "bob@rouge.example")
    assert (entry["resolved_at"], entry["resolved_by"], entry["resolution_note"]) == (
        "2026-11-24T16:00:00Z",
        "bob@rouge.example",
        "Rule added in Outlook",
    )
    code, out, _ = run(capsys, "lessons", "--format", "csv", "--now", NOW)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.startswith("date,client,category,description,action,owner,status,closed_on,")
    invoice = next(row for row in rows if row["opened_by"] == INVOICE)
    assert {k: invoice[k] for k in ("date", "client", "category", "description")} == {
        "date": "2026-11-18",
        "client": "Acme Ltd",
        "category": "unclear request",
        "description": "Billing questions have no owner",
    }
    assert (invoice["action"], invoice["owner"]) == (
        "Route billing mail to Bob",
        "bob@rouge.example",
    )
    assert (invoice["status"], invoice["closed_on"]) == ("resolved", "2026-11-24")
    code, out, _ = run(capsys, "lessons", "--now", NOW)
    assert "action: Route billing mail to Bob; owner: bob@rouge.example" in out
    assert "resolved 2026-11-24 16:00 by bob@rouge.example: Rule added in Outlook" in out
    code, out, _ = run(capsys, "explain", INVOICE, "--now", NOW)
    assert (
        "lesson (resolved)" in out and "bob@rouge.example: resolved: Rule added in Outlook" in out
    )


def test_the_log_as_of_an_earlier_instant_shows_what_was_known_then(imported, capsys):
    annotate(
        capsys, INVOICE, "--reason", "Billing questions have no owner", now="2026-11-22T10:00Z"
    )
    annotate(capsys, INVOICE, "--resolved", now="2026-11-24T10:00Z")

    before = entry_of(lessons_json(capsys, now="2026-11-21T10:00Z"), INVOICE)
    between = entry_of(lessons_json(capsys, now="2026-11-23T10:00Z"), INVOICE)

    assert (before["status"], before["reason"]) == ("no reason", None)
    assert (between["status"], between["resolved_at"]) == ("open", None)
    assert report_request(capsys, INVOICE, now="2026-11-21T10:00Z")["reason"] is None
    code, out, _ = run(capsys, "lessons", "--now", "2026-11-21T10:00Z")
    assert "no reason recorded" in out and "Billing questions" not in out


def test_a_waived_request_takes_a_lesson_and_stays_in_the_log(imported, capsys):
    run(capsys, "waive", INVOICE, "--reason", "handled on the phone", "--now", "2026-11-20T09:00Z")

    code, _, err = annotate(capsys, INVOICE, "--reason", "Answered by phone, never recorded")

    assert (code, err) == (0, "")
    entry = entry_of(lessons_json(capsys), INVOICE)
    assert (entry["request_status"], entry["status"]) == ("waived", "open")


@pytest.mark.parametrize(
    ("message_id", "argv", "status", "says"),
    [
        (MET, ("--reason", "x"), 1, "is met: a lesson is recorded on a breached, overdue or"),
        (INVOICE, ("--action", "call back"), 1, "no lesson is recorded on the request"),
        (INVOICE, ("--reason", "x", "--category", "weather"), 2, "not a category; one of: staff"),
        (INVOICE, ("--reason", "x", "--owner", "jane@acme.example"), 2, "not a staff address"),
        (INVOICE, ("--reason", " "), 2, "--reason: say why"),
        (INVOICE, ("--reason", "x", "--resolved"), 2, "--resolved stands alone"),
        (INVOICE, (), 2, "give --reason"),
        (INVOICE, ("--reason", "x" * 1001), 2, "--reason is 1001 characters; keep it to 1000"),
        ("<s1@rouge.example>", ("--reason", "x"), 1, "is not a client message (it is staff"),
        ("<nope@acme.example>", ("--reason", "x"), 1, "no stored message has Message-ID"),
    ],
)
def test_an_annotation_that_does_not_apply_is_refused_in_one_line(
    imported, capsys, message_id, argv, status, says
):
    code, out, err = annotate(capsys, message_id, *argv)

    assert (code, out) == (status, "")
    assert len(err.splitlines()) == 1 and says in err
    assert lessons_json(capsys)["summary"]["open"] == 0  # nothing was recorded


def test_an_open_request_has_nothing_to_learn_yet(imported, capsys):
    code, _, err = annotate(capsys, INVOICE, "--reason", "x", now="2026-11-18T12:00Z")

    assert code == 1 and "is open: a lesson is recorded on a breached" in err


def test_resolving_twice_is_refused(imported, capsys):
    annotate(capsys, INVOICE, "--reason", "Billing questions have no owner")
    annotate(capsys, INVOICE, "--resolved", now="2026-11-21T10:00Z")

    code, _, err = annotate(capsys, INVOICE, "--resolved", now="2026-11-22T10:00Z")

    assert code == 1 and "was already resolved by" in err


def test_categories_come_from_the_configuration(imported, capsys):
    config = imported / "mailwatch.toml"
    config.write_text(config.read_text() + '\n[lessons]\ncategories = ["process", "people"]\n')

    assert annotate(capsys, INVOICE, "--reason", "x", "--category", "Process")[0] == 0
    assert annotate(capsys, SITE_DOWN, "--reason", "y")[0] == 0
    code, _, err = annotate(capsys, INVOICE, "--reason", "x", "--category", "misrouted")

    document = lessons_json(capsys)
    assert [e["category"] for e in document["lessons"]] == ["people", "process"]  # the last
    assert code == 2 and "one of: process, people ([lessons] categories)" in err


def test_status_shows_the_reason_of_an_overdue_request(imported, capsys):
    annotate(
        capsys, INVOICE, "--reason", "Billing questions have no owner", "--category", "capacity"
    )

    code, out, _ = run(capsys, "status", "--format", "json", "--now", NOW)

    invoice = next(r for r in json.loads(out)["requests"] if r["opened_by"] == INVOICE)
    assert (invoice["reason"], invoice["reason_category"]) == (
        "Billing questions have no owner",
        "capacity",
    )


def sent_texts(sink) -> dict[str, str]:
    """The plain-text body of each digest the sink received, by recipient."""
    texts = {}
    for received in sink.messages:
        body = received.message.get_body(("plain",))
        texts[received.rcpt_tos[0]] = body.get_content()
    sink.messages.clear()
    return texts


def test_a_lesson_is_open_in_the_digests_until_resolved_then_the_log_shows_it_closed(
    imported, capsys, smtp_server
):
    config = imported / "mailwatch.toml"
    config.write_text(
        config.read_text()
        + f'\n[smtp]\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\n'
        + 'security = "none"\nsender = "Mailwatch <mailwatch@rouge.example>"\n'
    )
    annotate(
        capsys, SITE_DOWN, "--reason", "Alice was at a client workshop",
        "--action", "Critical mail goes to the shared inbox too", "--owner", "bob@rouge.example",
    )  # fmt: skip

    assert run(capsys, "digest", "--now", "2026-11-23T08:00Z")[0] == 0
    texts = sent_texts(smtp_server)
    for reader in ("head@rouge.example", "bob@rouge.example"):
        owned = texts[reader].split("Open lessons by owner")[1]
        assert "Bob (bob@rouge.example)" in owned
        assert "Alice was at a client workshop" in owned
        assert "Critical mail goes to the shared inbox too" in owned
    assert "Open lessons by owner" not in texts["alice@rouge.example"]  # she owns none
    assert INVOICE in {e["opened_by"] for e in lessons_json(capsys, "--open")["lessons"]}

    resolved = annotate(
        capsys, SITE_DOWN, "--resolved", "--note", "Shared inbox rule live",
        "--by", "bob@rouge.example", now="2026-11-24T15:00Z",
    )  # fmt: skip
    assert resolved[0] == 0, resolved[2]

    still_open = {e["opened_by"] for e in lessons_json(capsys, "--open")["lessons"]}
    assert SITE_DOWN not in still_open and INVOICE in still_open
    entry = entry_of(lessons_json(capsys), SITE_DOWN)
    assert entry["status"] == "resolved"
    assert (entry["resolved_at"], entry["resolved_by"]) == (
        "2026-11-24T15:00:00Z",
        "bob@rouge.example",
    )
    assert entry["recorded_at"] == "2026-11-20T10:00:00Z"
    assert run(capsys, "digest", "--now", "2026-11-30T08:00Z")[0] == 0
    assert all("Alice was at a client workshop" not in t for t in sent_texts(smtp_server).values())
