"""`mailwatch answered` / `unanswered` and replies mailwatch may not have seen, through the
command line on imported mail (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_import_report import agency, client_mail, eml, run, staff_mail

__all__ = ["agency"]  # the fixture: Acme's "Invoice question" <c3>, Wed 18 Nov 09:00, unanswered

NOW = "2026-11-27T09:00Z"
INVOICE = "<c3@acme.example>"


@pytest.fixture
def imported(agency: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "import", "mail", "--mailbox", "alice")[0] == 0
    return agency


def request_of(capsys, opened_by: str, *, now: str = NOW, command: str = "report") -> dict:
    code, out, err = run(capsys, command, "--format", "json", "--now", now)
    assert code == 0, err
    return next(r for r in json.loads(out)["requests"] if r["opened_by"] == opened_by)


def answered(capsys, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "answered", INVOICE, *argv)


def test_an_answer_by_phone_measures_the_request_to_that_instant(imported, capsys):
    code, out, err = answered(
        capsys, "--at", "2026-11-18T15:00Z", "--via", "phone", "--by", "bob@rouge.example",
        "--note", "called Jane back", "--now", "2026-11-19T09:00Z",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "is now met" in out

    invoice = request_of(capsys, INVOICE)
    assert invoice["status"] == "met"
    assert (invoice["answered_via"], invoice["answered_by"]) == ("phone", None)
    assert (invoice["answered_at"], invoice["response_seconds"]) == ("2026-11-18T15:00:00Z", 21600)
    assert invoice["responder"] == "bob@rouge.example"
    code, out, _ = run(capsys, "explain", INVOICE, "--now", NOW)
    assert "answered by bob@rouge.example by phone at 2026-11-18 15:00Z" in out
    assert "called Jane back" in out
    code, out, _ = run(capsys, "report", "--format", "csv", "--now", NOW)
    assert out.splitlines()[0].endswith(",answered_via")


def test_an_answer_given_after_the_deadline_is_a_breach(imported, capsys):
    assert answered(capsys, "--at", "2026-11-20T09:00Z", "--now", NOW)[0] == 0
    invoice = request_of(capsys, INVOICE)
    assert (invoice["status"], invoice["answered_via"], invoice["responder"]) == (
        "breached",
        "other",
        None,
    )


def test_a_reply_by_email_says_so(imported, capsys):
    assert request_of(capsys, "<c1@acme.example>")["answered_via"] == "email"
    assert request_of(capsys, INVOICE)["answered_via"] is None


def test_unanswered_takes_the_answer_back_and_the_past_still_shows_it(imported, capsys):
    answered(capsys, "--at", "2026-11-18T15:00Z", "--now", "2026-11-19T09:00Z")

    code, out, err = run(capsys, "unanswered", "<c3@acme.example>", "--now", "2026-11-20T09:00Z")

    assert (code, err) == (0, "")
    assert "is now overdue" in out
    assert request_of(capsys, INVOICE)["status"] == "overdue"
    assert request_of(capsys, INVOICE, now="2026-11-19T12:00Z")["status"] == "met"
    code, _, err = run(capsys, "unanswered", INVOICE, "--now", NOW)
    assert code == 1 and err.startswith("mailwatch: no answer is recorded")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--at", "2026-11-18T08:00Z"), "is before the request's first message"),
        (("--at", "2026-11-27T10:00Z"), "is in the future"),
        (("--at", "2026-11-18T15:00Z", "--by", "jane@acme.example"), "not a staff address"),
    ],
)
def test_an_answer_before_the_request_in_the_future_or_by_a_stranger_is_refused(
    imported, capsys, argv, says
):
    code, out, err = answered(capsys, *argv, "--now", NOW)

    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and says in err
    assert request_of(capsys, INVOICE)["status"] == "overdue"  # nothing was recorded


# ---------------------------------------------------------------- replies mailwatch may not have seen


@pytest.fixture
def chaser_citing_a_reply(agency: Path) -> Path:
    """Jane's brochure question, then her chaser quoting a reply Bob sent from a mailbox
    mailwatch does not watch."""
    inbox = agency / "mail" / "alice" / "INBOX"
    eml(inbox, "5.eml", client_mail("b1", "Thu, 19 Nov 2026 10:00:00 +0000", "Brochure"))
    eml(
        inbox,
        "6.eml",
        client_mail(
            "b2",
            "Sat, 21 Nov 2026 10:00:00 +0000",
            "Re: Brochure",
            **{
                "In-Reply-To": "<bob-reply@rouge.example>",
                "References": "<b1@acme.example> <bob-reply@rouge.example>",
            },
        ),
    )
    return agency


def test_a_chaser_citing_agency_mail_never_seen_flags_the_request(chaser_citing_a_reply, capsys):
    run(capsys, "import", "mail", "--mailbox", "alice")
    brochure = request_of(capsys, "<b1@acme.example>", command="status")
    assert (brochure["status"], brochure["reply_possibly_unseen"]) == ("overdue", True)
    assert request_of(capsys, INVOICE, command="status")["reply_possibly_unseen"] is False

    code, out, _ = run(capsys, "status", "--now", NOW)
    assert "overdue*" in out
    assert "record it with `mailwatch answered MESSAGE_ID --at DATE`" in out


def test_the_request_is_not_flagged_once_the_cited_reply_is_seen(chaser_citing_a_reply, capsys):
    reply = {
        **staff_mail("bob-reply", "Thu, 19 Nov 2026 15:00:00 +0000", "Re: Brochure", "b1", "bob"),
        "References": "<b1@acme.example>",
    }
    eml(chaser_citing_a_reply / "mail" / "bob" / "Sent", "2.eml", reply)
    run(capsys, "import", "mail", "--mailbox", "alice")

    brochure = request_of(capsys, "<b1@acme.example>")
    chaser = request_of(capsys, "<b2@acme.example>")
    assert (brochure["status"], brochure["reply_possibly_unseen"]) == ("met", False)
    assert chaser["reply_possibly_unseen"] is False
