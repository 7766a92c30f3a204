"""Retention, `export`, `forget` and the reduction of mail with no client, through the
`mailwatch` command line on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sqlalchemy import select

from mailwatch.config import load_settings
from mailwatch.store.repository import REDUCED_RAW, Store
from mailwatch.store.tables import MESSAGES
from tests.e2e import test_cli_import_report
from tests.e2e.test_cli_import_report import (
    client_mail,
    eml,
    report_json,
    run,
    staff_mail,
)

agency = test_cli_import_report.agency  # the fixture: alice's and bob's mail on disk
JANE = "jane@acme.example"
LATER = "2028-02-01T09:00Z"  # after retention_days (400) of the agency's November mail


def imported(agency, capsys) -> None:
    assert run(capsys, "import", "mail/alice", "--mailbox", "alice")[0] == 0
    assert run(capsys, "import", "mail/bob", "--mailbox", "bob")[0] == 0


def report_at(capsys, now: str) -> dict:
    code, out, _ = run(
        capsys,
        "report",
        "--format",
        "json",
        "--now",
        now,
        "--since",
        "2026-11-01",
        "--until",
        "2026-12-01",
    )
    assert code == 0
    return json.loads(out)


def open_store(agency) -> Store:
    return Store(load_settings(agency / "mailwatch.toml").database_url)


def raw_headers(store: Store, key: str) -> bytes:
    """The raw header block stored with a message (empty once reduced)."""
    with store.engine.connect() as conn:
        packed = conn.scalar(select(MESSAGES.c.raw_headers).where(MESSAGES.c.key == key))
    return zlib.decompress(packed)


def test_retention_deletes_old_messages_and_a_report_over_their_period_is_unchanged(agency, capsys):
    imported(agency, capsys)
    before = report_at(capsys, LATER)

    code, out, _ = run(capsys, "retention", "--now", LATER)

    assert code == 0 and "deleted 6 message(s)" in out
    store = open_store(agency)
    try:
        assert store.load_messages() == []
    finally:
        store.close()
    assert report_at(capsys, LATER) == before
    assert len(before["requests"]) == 3


def test_retention_keeps_mail_younger_than_retention_days(agency, capsys):
    imported(agency, capsys)
    code, out, _ = run(capsys, "retention", "--now", "2027-12-21T11:00Z")
    assert code == 0 and "deleted 1 message(s)" in out  # only Monday's client mail


def test_export_prints_every_message_and_request_of_an_address_without_raw_headers(agency, capsys):
    imported(agency, capsys)

    code, out, _ = run(capsys, "export", "Jane@ACME.example")

    assert code == 0
    document = json.loads(out)
    assert document["address"] == JANE
    ids = {m["message_id"] for m in document["messages"]}
    assert ids == {
        "<c1@acme.example>",
        "<c2@acme.example>",
        "<c3@acme.example>",
        "<ooo@acme.example>",
        "<s1@rouge.example>",
        "<s2@rouge.example>",
    }
    banner = next(m for m in document["messages"] if m["message_id"] == "<c1@acme.example>")
    assert banner["from"] == JANE and banner["subject"] == "Homepage banner"
    assert banner["copies"][0]["mailbox"] == "alice"
    assert "raw_headers" not in banner
    assert sorted(r["subject"] for r in document["requests"]) == [
        "Homepage banner",
        "Invoice question",
        "Our site is down",
    ]
    code, out, _ = run(capsys, "export", JANE, "--raw")
    raw = json.loads(out)["messages"][0]["raw_headers"]
    assert "Message-ID: <" in raw


def test_export_of_a_staff_address_lists_the_requests_it_answered(agency, capsys):
    imported(agency, capsys)
    document = json.loads(run(capsys, "export", "bob@rouge.example")[1])
    assert [m["message_id"] for m in document["messages"]] == ["<s2@rouge.example>"]
    answered = [r for r in document["requests"] if r["responder"] == "bob@rouge.example"]
    assert [r["subject"] for r in answered] == ["Our site is down"]


def test_export_lists_the_lessons_on_an_addresss_requests_and_those_it_made_or_owns(agency, capsys):
    imported(agency, capsys)
    assert run(capsys, "annotate", "<c2@acme.example>", "--reason", "Sent to the wrong inbox",
        "--by", "carol@rouge.example", "--now", "2026-11-20T10:00Z")[0] == 0  # fmt: skip
    assert run(capsys, "annotate", "<c2@acme.example>", "--action", "Route by subject",
        "--owner", "bob@rouge.example", "--now", "2026-11-20T11:00Z")[0] == 0  # fmt: skip

    client = json.loads(run(capsys, "export", JANE)[1])
    recorder = json.loads(run(capsys, "export", "carol@rouge.example")[1])
    owner = json.loads(run(capsys, "export", "bob@rouge.example")[1])

    assert [e["reason"] for e in client["lessons"]] == ["Sent to the wrong inbox", None]
    assert [e["made_by"] for e in recorder["lessons"]] == ["carol@rouge.example"]
    assert "bob@rouge.example" in [e["owner"] for e in owner["lessons"]]


def test_forget_asks_first_and_deletes_nothing_when_told_no(agency, capsys, monkeypatch):
    imported(agency, capsys)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))

    code, out, _ = run(capsys, "forget", JANE)

    assert code == 1 and "nothing deleted" in out
    assert len(json.loads(run(capsys, "export", JANE)[1])["messages"]) == 6


def test_forget_deletes_the_address_and_keeps_its_requests_in_the_figures_anonymously(
    agency, capsys
):
    imported(agency, capsys)
    before = report_json(capsys)

    code, out, _ = run(capsys, "forget", JANE, "--yes")

    assert code == 0
    assert "4 of its message(s)" not in out and "6 of its message(s)" in out
    assert "3 request(s) kept" in out
    after = report_json(capsys)
    assert after["summary"] == before["summary"]
    assert [r["subject"] for r in after["requests"]] == ["", "", ""]
    assert [r["status"] for r in after["requests"]] == [r["status"] for r in before["requests"]]
    assert not any("acme.example" in json.dumps(r) for r in after["requests"])
    document = json.loads(run(capsys, "export", JANE)[1])
    assert document["messages"] == [] and document["requests"] == []


def test_a_forgotten_conversation_keeps_its_lesson_under_the_anonymous_request(agency, capsys):
    imported(agency, capsys)
    run(capsys, "annotate", "<c2@acme.example>", "--reason", "Sent to the wrong inbox",
        "--now", "2026-11-20T10:00Z")  # fmt: skip

    run(capsys, "forget", JANE, "--yes")

    code, out, _ = run(capsys, "lessons", "--format", "json", "--now", "2026-11-27T09:00Z")
    site_down = next(e for e in json.loads(out)["lessons"] if e["tier"] == "critical")
    assert (site_down["reason"], site_down["status"]) == ("Sent to the wrong inbox", "open")
    assert "acme.example" not in out


def test_forget_takes_the_address_out_of_the_words_of_a_lesson_too(agency, capsys):
    imported(agency, capsys)
    assert run(capsys, "annotate", "<c2@acme.example>", "--reason",
        "Jane@Acme.example wrote to a colleague on leave", "--now", "2026-11-20T10:00Z")[0] == 0  # fmt: skip
    assert run(capsys, "annotate", "<c2@acme.example>", "--action",
        "Ask jane@acme.example to use the support address", "--now", "2026-11-20T11:00Z")[0] == 0  # fmt: skip
    assert run(capsys, "annotate", "<c2@acme.example>", "--resolved", "--note",
        "told jane@acme.example", "--now", "2026-11-21T10:00Z")[0] == 0  # fmt: skip

    run(capsys, "forget", JANE, "--yes")

    code, out, _ = run(capsys, "lessons", "--format", "json", "--now", "2026-11-27T09:00Z")
    assert code == 0 and "acme.example" not in out.lower()
    site_down = next(e for e in json.loads(out)["lessons"] if e["tier"] == "critical")
    assert site_down["reason"] == "(forgotten) wrote to a colleague on leave"
    assert site_down["action"] == "Ask (forgotten) to use the support address"
    assert site_down["resolution_note"] == "told (forgotten)"


def test_a_report_as_of_an_earlier_instant_still_counts_a_forgotten_addresses_requests(
    agency, capsys
):
    imported(agency, capsys)  # evaluated at the real now: the --now below is in the past
    before = report_at(capsys, "2026-11-19T12:00Z")

    run(capsys, "forget", JANE, "--yes")
    after = report_at(capsys, "2026-11-19T12:00Z")

    assert after["summary"] == before["summary"] and before["summary"]["requests"] == 3
    assert [r["status"] for r in after["requests"]] == [r["status"] for r in before["requests"]]


def test_a_report_before_a_forgotten_requests_answer_shows_it_waiting_as_it_was(agency, capsys):
    imported(agency, capsys)
    before = report_at(capsys, "2026-11-16T10:30Z")  # jane's first question is not answered yet

    run(capsys, "forget", JANE, "--yes")
    after = report_at(capsys, "2026-11-16T10:30Z")

    assert [r["status"] for r in before["requests"]] == ["open"]
    assert [r["status"] for r in after["requests"]] == ["open"]
    assert after["summary"] == before["summary"]


def test_the_figures_of_a_forgotten_address_survive_a_full_re_evaluation(agency, capsys):
    imported(agency, capsys)
    before = report_json(capsys)
    run(capsys, "forget", JANE, "--yes")
    config = agency / "mailwatch.toml"
    config.write_text(config.read_text().replace('target = "1h"', 'target = "2h"'))  # policy
    eml(
        agency / "mail" / "late",
        "1.eml",
        client_mail(
            "c4",
            "Thu, 26 Nov 2026 10:00:00 +0000",
            "Another thing",
            **{"In-Reply-To": "<c1@acme.example>"},
        ),
    )
    run(capsys, "import", "mail/late", "--mailbox", "alice")

    after = report_json(capsys)

    assert after["summary"]["met"] == before["summary"]["met"]
    assert after["summary"]["breached"] == before["summary"]["breached"]
    assert after["summary"]["requests"] == before["summary"]["requests"] + 1


def internal(key: str, when: str, subject: str, **extra: str) -> dict[str, str]:
    return {
        "From": "Alice <alice@rouge.example>",
        "To": "bob@rouge.example, supplier@print.example",
        "Subject": subject,
        "Date": when,
        "Message-ID": f"<{key}@rouge.example>",
        **extra,
    }


def test_mail_with_no_client_keeps_only_ids_references_times_and_sender(agency, capsys):
    mail = agency / "mail" / "old"
    eml(mail, "1.eml", internal("i1", "Mon, 05 Oct 2026 10:00:00 +0000", "Salary review"))
    eml(
        mail,
        "2.eml",
        internal(
            "i2",
            "Mon, 05 Oct 2026 11:00:00 +0000",
            "Re: Salary review",
            **{"In-Reply-To": "<i1@rouge.example>"},
        ),
    )
    eml(mail, "3.eml", client_mail("c9", "Mon, 05 Oct 2026 12:00:00 +0000", "Acme matters"))
    eml(
        mail,
        "4.eml",
        {
            **internal("auto", "Mon, 05 Oct 2026 13:00:00 +0000", "Out of Office: Salary review"),
            "From": "Bob <bob@rouge.example>",
        },
    )
    assert run(capsys, "import", "mail/old", "--mailbox", "alice")[0] == 0

    store = open_store(agency)
    try:
        kept = {m.key: m for m in store.load_messages()}
        reduced = kept["<i2@rouge.example>"]
        assert (reduced.subject, reduced.to, reduced.cc) == ("", (), ())
        assert reduced.from_addr == "alice@rouge.example"
        assert reduced.in_reply_to == ("<i1@rouge.example>",)
        assert reduced.date is not None and reduced.copies[0].mailbox == "alice"
        assert raw_headers(store, "<i2@rouge.example>") == b""
        assert kept["<c9@acme.example>"].subject == "Acme matters"
        assert kept["<auto@rouge.example>"].subject == ""
    finally:
        store.close()
    # the out-of-office was recognised by its subject; classified again, reduced, it still is
    config = agency / "mailwatch.toml"
    config.write_text(config.read_text().replace('target = "1h"', 'target = "2h"'))
    assert run(capsys, "report")[0] == 0
    store = open_store(agency)
    try:
        assert [key for _, _, key, _ in store.out_of_office_replies()] == ["<auto@rouge.example>"]
    finally:
        store.close()


def test_a_client_reply_to_reduced_mail_is_threaded_and_measured(agency, capsys):
    mail = agency / "mail" / "old"
    eml(mail, "1.eml", internal("i1", "Mon, 05 Oct 2026 10:00:00 +0000", "Proposal"))
    run(capsys, "import", "mail/old", "--mailbox", "alice")
    eml(
        agency / "mail" / "new",
        "1.eml",
        client_mail(
            "c5",
            "Tue, 06 Oct 2026 09:00:00 +0000",
            "Re: Proposal",
            **{"In-Reply-To": "<i1@rouge.example>"},
        ),
    )
    eml(
        agency / "mail" / "new",
        "2.eml",
        staff_mail("s5", "Tue, 06 Oct 2026 10:00:00 +0000", "Re: Proposal", "c5"),
    )
    run(capsys, "import", "mail/new", "--mailbox", "alice")

    code, out, _ = run(capsys, "explain", "<c5@acme.example>")

    assert code == 0 and out.startswith("Thread <i1@rouge.example>")
    store = open_store(agency)
    try:
        (request,) = [r for r in store.requests() if r.opened_by == "<c5@acme.example>"]
        assert (request.status.value, request.response_seconds) == ("met", 3600)
        assert raw_headers(store, "<i1@rouge.example>") == b""
    finally:
        store.close()


def test_reduced_messages_are_marked_by_an_empty_raw_header_block():
    assert REDUCED_RAW != b""  # compressed: a real header block never compresses to it


def test_old_mail_imported_after_a_reduction_is_reduced_too(agency, capsys):
    eml(
        agency / "mail" / "recent",
        "1.eml",
        client_mail("c1", "Mon, 05 Oct 2026 12:00:00 +0000", "Acme matters"),
    )
    run(capsys, "import", "mail/recent", "--mailbox", "alice")
    # arrived long before the last reduction's window: found by its key, not by the window
    eml(
        agency / "mail" / "archive",
        "1.eml",
        internal("i1", "Mon, 05 Oct 2025 10:00:00 +0000", "Salary review"),
    )
    run(capsys, "import", "mail/archive", "--mailbox", "alice")

    store = open_store(agency)
    try:
        assert raw_headers(store, "<i1@rouge.example>") == b""
        assert raw_headers(store, "<c1@acme.example>") != b""
    finally:
        store.close()


def test_mail_inside_the_grace_period_stays_whole_after_a_run_with_now_ahead(agency, capsys):
    imported(agency, capsys)
    config = agency / "mailwatch.toml"
    config.write_text(config.read_text().replace('target = "1h"', 'target = "2h"'))
    ahead = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%dT%H:%MZ")
    assert run(capsys, "report", "--now", ahead)[0] == 0  # everything evaluated again, 90 days on
    recent = format_datetime(datetime.now(UTC) - timedelta(days=5))
    eml(agency / "mail" / "fresh", "1.eml", internal("i1", recent, "Salary review"))

    assert run(capsys, "import", "mail/fresh", "--mailbox", "alice")[0] == 0

    store = open_store(agency)
    try:  # 5 days old: inside the 30-day grace period, whatever a run ahead recorded
        assert raw_headers(store, "<i1@rouge.example>") != b""
    finally:
        store.close()
