"""`report --account/--responsible/--status` and an `explain` that explains, through the
command line on imported mail (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import getpass
import io
import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_import_report import CONFIG, client_mail, eml, run, staff_mail

NOW = "2026-11-27T09:00Z"

GLOBEX = """
[[accounts]]
name = "Globex Inc"
domains = ["globex.example"]
manager = "bob@rouge.example"
backups = ["alice@rouge.example"]
"""


def globex_mail(key: str, when: str, subject: str) -> dict[str, str]:
    return {
        **client_mail(key, when, subject),
        "From": "Hank Scorpio <hank@globex.example>",
        "To": "bob@rouge.example",
        "Message-ID": f"<{key}@globex.example>",
    }


@pytest.fixture
def agency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    """Two accounts, imported. Acme (alice answers for it): Homepage banner met, Our site
    is down breached (bob replied), Invoice question overdue and forwarded internally to
    bob. Globex (bob answers for it): Logo files met by alice, Renewal overdue, and a
    Homepage banner of its own."""
    monkeypatch.chdir(tmp_path)
    inbox, sent = tmp_path / "mail" / "INBOX", tmp_path / "mail" / "Sent"
    eml(inbox, "1.eml", client_mail("c1", "Mon, 16 Nov 2026 10:00:00 +0000", "Homepage banner"))
    eml(inbox, "2.eml", client_mail("c2", "Tue, 17 Nov 2026 09:00:00 +0000", "Our site is down"))
    eml(inbox, "3.eml", client_mail("c3", "Wed, 18 Nov 2026 09:00:00 +0000", "Invoice question"))
    eml(inbox, "4.eml", globex_mail("g1", "Mon, 16 Nov 2026 14:00:00 +0000", "Logo files"))
    eml(inbox, "5.eml", globex_mail("g2", "Thu, 19 Nov 2026 10:00:00 +0000", "Renewal"))
    eml(inbox, "6.eml", globex_mail("g3", "Fri, 20 Nov 2026 10:00:00 +0000", "Homepage banner"))
    eml(
        sent,
        "1.eml",
        staff_mail("s1", "Mon, 16 Nov 2026 12:00:00 +0000", "Re: Homepage banner", "c1"),
    )
    eml(
        sent,
        "2.eml",
        staff_mail("s2", "Tue, 17 Nov 2026 11:00:00 +0000", "Re: Our site is down", "c2", "bob"),
    )
    eml(
        sent,
        "3.eml",
        {
            **staff_mail("fwd", "Wed, 18 Nov 2026 09:30:00 +0000", "Fwd: Invoice question", "c3"),
            "To": "bob@rouge.example",
        },
    )
    eml(
        sent,
        "4.eml",
        {
            **staff_mail("s4", "Mon, 16 Nov 2026 15:00:00 +0000", "Re: Logo files", "g1"),
            "To": "hank@globex.example",
            "Cc": "bob@rouge.example",
            "In-Reply-To": "<g1@globex.example>",
            "References": "<g1@globex.example>",
        },
    )
    (tmp_path / "mailwatch.toml").write_text(CONFIG.format(url=store_url) + GLOBEX)
    assert run_quietly("import", "mail/INBOX", "--mailbox", "alice") == 0
    assert run_quietly("import", "mail/Sent", "--mailbox", "alice", "--sent") == 0
    return tmp_path


def run_quietly(*argv: str) -> int:
    from mailwatch.cli import main

    return main(list(argv))


def report(capsys: pytest.CaptureFixture[str], *filters: str) -> dict:
    capsys.readouterr()
    code, out, err = run(capsys, "report", "--format", "json", "--now", NOW, *filters)
    assert code == 0, err
    return json.loads(out)


def subjects(document: dict) -> set[str]:
    return {f"{r['account']}: {r['subject']}" for r in document["requests"]}


# ---------------------------------------------------------------- report filters


def test_report_for_one_account_shows_its_requests_and_sums_only_them(agency, capsys):
    document = report(capsys, "--account", "Globex Inc")
    assert subjects(document) == {
        "Globex Inc: Logo files",
        "Globex Inc: Renewal",
        "Globex Inc: Homepage banner",
    }
    assert document["summary"]["requests"] == 3
    assert (document["summary"]["met"], document["summary"]["overdue"]) == (1, 2)
    assert set(document["accounts"]) == {"Globex Inc"}


def test_values_of_one_filter_add_up_and_different_filters_narrow(agency, capsys):
    either = report(capsys, "--status", "met", "--status", "breached")
    assert subjects(either) == {
        "Acme Ltd: Homepage banner",
        "Acme Ltd: Our site is down",
        "Globex Inc: Logo files",
    }
    both = report(capsys, "--status", "overdue", "--account", "Acme Ltd")
    assert subjects(both) == {"Acme Ltd: Invoice question"}
    assert both["summary"]["requests"] == 1 and both["summary"]["compliance"] == 0.0


def test_report_for_one_responsible_person_shows_what_they_answer_for(agency, capsys):
    document = report(capsys, "--responsible", "BOB@rouge.example")
    assert {r["account"] for r in document["requests"]} == {"Globex Inc"}
    assert {r["responsible"] for r in document["requests"]} == {"bob@rouge.example"}
    assert document["summary"]["requests"] == 3


def test_the_table_totals_count_only_the_requests_shown(agency, capsys):
    code, out, _ = run(capsys, "report", "--now", NOW, "--account", "Acme Ltd")
    assert code == 0
    assert "3 requests: 1 met, 1 breached, 1 overdue, 0 open, 0 waived." in out
    assert "Globex" not in out


def test_a_filter_that_matches_nothing_shows_no_request_and_zero_totals(agency, capsys):
    code, out, _ = run(capsys, "report", "--now", NOW, "--status", "waived")
    header, blank, totals = out.splitlines()
    assert code == 0 and header.startswith("Received") and blank == ""
    assert totals.startswith("0 requests: 0 met") and "Compliance n/a" in totals


def test_csv_is_filtered_like_json(agency, capsys):
    code, out, _ = run(capsys, "report", "--format", "csv", "--now", NOW, "--status", "overdue")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert {(row["account"], row["subject"]) for row in rows} == {
        ("Acme Ltd", "Invoice question"),
        ("Globex Inc", "Renewal"),
        ("Globex Inc", "Homepage banner"),
    }


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--account", "Globex", "Acme Ltd, Globex Inc"),
        ("--status", "late", "met, breached, open, overdue, waived"),
    ],
)
def test_an_unknown_account_or_status_is_refused_naming_the_valid_ones(
    agency, capsys, option, value, valid
):
    code, out, err = run(capsys, "report", "--now", NOW, option, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and value in err and valid in err


def test_the_table_shows_who_answered_and_who_is_responsible_in_separate_columns(agency, capsys):
    code, out, _ = run(capsys, "report", "--now", NOW, "--account", "Globex Inc")
    header, *lines = out.splitlines()
    assert code == 0 and header.split()[-2:] == ["Responsible", "Who"]
    logo = next(line for line in lines if "Logo files" in line)
    renewal = next(line for line in lines if "Renewal" in line)
    assert logo.split()[-2:] == ["bob@rouge.example", "alice@rouge.example"]
    assert renewal.split()[-2:] == ["bob@rouge.example", "-"]  # nobody answered


# ---------------------------------------------------------------- explain


def explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    return run(capsys, "explain", *argv, "--now", NOW)


def test_explain_shows_the_recipients_of_each_message(agency, capsys):
    code, out, _ = explain(capsys, "<g1@globex.example>")
    assert code == 0
    assert "to bob@rouge.example" in out  # Hank's request
    assert "to hank@globex.example; cc bob@rouge.example" in out  # Alice's answer


def test_explain_says_an_internal_forward_does_not_answer(agency, capsys):
    code, out, _ = explain(capsys, "<c3@acme.example>")
    lines = out.splitlines()
    forward = next(i for i, line in enumerate(lines) if "<fwd@rouge.example>" in line)
    assert code == 0
    assert "internal: no client recipient, does not answer" in "\n".join(
        lines[forward : forward + 3]
    )
    assert "overdue" in out


def test_explain_shows_who_waived_a_request_how_when_and_why(agency, capsys):
    waived = run(
        capsys,
        "waive",
        "<g2@globex.example>",
        "--reason",
        "they phoned",
        "--now",
        "2026-11-20T09:00Z",
    )
    assert waived[0] == 0
    code, out, _ = explain(capsys, "<g2@globex.example>")
    assert code == 0
    waiver_line = next(line for line in out.splitlines() if "waived (no reply needed)" in line)
    assert f"via command by {getpass.getuser()} on 2026-11-20 09:00" in waiver_line
    assert waiver_line.endswith("reason: they phoned")


def test_explain_finds_a_conversation_by_its_subject_in_any_case(agency, capsys):
    code, out, err = explain(capsys, "--subject", "RE: invoice QUESTION")
    assert code == 0, err
    assert out.startswith("Thread <c3@acme.example>")
    assert "<fwd@rouge.example>" in out


def test_explain_by_a_subject_two_conversations_share_lists_both_to_choose_from(agency, capsys):
    code, out, err = explain(capsys, "--subject", "homepage banner")
    assert code == 1
    assert "2026-11-16 10:00  <c1@acme.example>" in out
    assert "2026-11-20 10:00  <g3@globex.example>" in out
    assert err.count("\n") == 1 and "2 conversations" in err and "Message-ID" in err


def test_explain_by_a_subject_nobody_wrote_fails_with_one_line(agency, capsys):
    code, out, err = explain(capsys, "--subject", "Quarterly review")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Quarterly review" in err


def test_explain_by_subject_sees_only_mail_that_had_arrived_by_now(agency, capsys):
    capsys.readouterr()
    code, _, err = run(capsys, "explain", "--subject", "Renewal", "--now", "2026-11-18T00:00Z")
    assert code == 1 and "no stored message has the subject" in err


def test_explain_by_a_blank_subject_is_refused_with_one_line(agency, capsys):
    code, out, err = explain(capsys, "--subject", "  ")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--subject" in err
