"""`waive` and `unwaive` through the command line with `--now`, on imported mail (SQLite
and PostgreSQL): an answered request is refused unless `--force`; forced and late waivers
are listed in the digest; every waiver says via, by, when and why in the JSON and `explain`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli_import_report import client_mail, eml, run
from tests.e2e.test_cli_report_filters_and_explain import NOW, agency, report, run_quietly

__all__ = ["agency"]  # the fixture, imported for these tests

IN_THE_WEEK = "2026-11-24T09:00Z"  # Tuesday of the week of 23 November
AFTER_THE_WEEK = "2026-11-30T08:00Z"  # its digest is due


def request_of(document: dict, opened_by: str) -> dict:
    return next(r for r in document["requests"] if r["opened_by"] == opened_by)


def test_waiving_an_answered_request_is_refused_in_one_line_and_changes_nothing(agency, capsys):
    code, out, err = run(capsys, "waive", "<c2@acme.example>", "--now", IN_THE_WEEK)

    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert "already answered (breached)" in err and "--force" in err
    assert request_of(report(capsys), "<c2@acme.example>")["status"] == "breached"


def test_a_forced_waiver_keeps_who_when_and_why_and_explain_says_it_was_forced(agency, capsys):
    code, _, err = run(
        capsys,
        "waive",
        "c2@acme.example",
        "--force",
        "--by",
        "carol",
        "--reason",
        "client withdrew it",
        "--now",
        IN_THE_WEEK,
    )

    assert code == 0, err
    request = request_of(report(capsys), "<c2@acme.example>")
    assert request["status"] == "waived"
    assert request["waiver"] == {
        "via": "command",
        "by": "carol",
        "seen_at": "2026-11-24T09:00:00Z",
        "reason": "client withdrew it",
    }
    assert request["answered_by"] == "<s2@rouge.example>"
    _, out, _ = run(capsys, "explain", "<c2@acme.example>", "--now", NOW)
    assert "via command by carol on 2026-11-24 09:00 (forced) (after the deadline)" in out


def test_forced_and_late_waivers_are_listed_in_the_digest_with_who_and_when(
    agency, capsys, tmp_path
):
    run(capsys, "waive", "<c2@acme.example>", "--force", "--by", "carol", "--now", IN_THE_WEEK)
    run(capsys, "waive", "<g2@globex.example>", "--by", "bob", "--now", IN_THE_WEEK)
    code, _, err = run(capsys, "digest", "--dry-run", "--output", "out", "--now", AFTER_THE_WEEK)

    assert code == 0, err
    figures = json.loads(Path("out/week-2026-W48-head@rouge.example.json").read_text())
    listed = [(w["subject"], w["via"], w["by"], w["warnings"]) for w in figures["waivers_to_check"]]
    assert listed == [
        ("Our site is down", "command", "carol", ["forced", "after the deadline"]),
        ("Renewal", "command", "bob", ["after the deadline"]),
    ]
    html = Path("out/week-2026-W48-head@rouge.example.html").read_text()
    assert "Waivers of the period" in html
    assert "waived (after the deadline) via command by bob on Tue 24 Nov 09:00" in html


def test_unwaive_takes_back_a_command_waiver_and_the_request_is_overdue_again(agency, capsys):
    run(capsys, "waive", "<g2@globex.example>", "--now", IN_THE_WEEK)

    code, out, err = run(
        capsys,
        "unwaive",
        "<g2@globex.example>",
        "--reason",
        "they did want a reply",
        "--now",
        "2026-11-25T09:00Z",
    )

    assert code == 0, err
    assert out == "<g2@globex.example>: waiver taken back; now overdue\n"
    request = request_of(report(capsys), "<g2@globex.example>")
    assert (request["status"], request["waiver"]) == ("overdue", None)
    again = run(capsys, "unwaive", "<g2@globex.example>", "--now", "2026-11-25T09:00Z")
    assert again[0] == 1 and "its request is not waived" in again[2]


def test_a_courtesy_thanks_is_waived_via_courtesy_by_mailwatch(agency, capsys):
    thanks = client_mail(
        "c9",
        "Mon, 16 Nov 2026 13:00:00 +0000",
        "Re: Homepage banner",
        **{"In-Reply-To": "<s1@rouge.example>", "References": "<s1@rouge.example>"},
    )
    eml(agency / "more", "1.eml", thanks, body="Thanks, perfect!\n")
    assert run_quietly("import", "more", "--mailbox", "alice") == 0

    waiver = request_of(report(capsys), "<c9@acme.example>")["waiver"]

    assert (waiver["via"], waiver["by"]) == ("courtesy", "mailwatch (courtesy)")
