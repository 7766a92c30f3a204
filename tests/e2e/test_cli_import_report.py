"""From mail on disk to a report, through the `mailwatch` command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailwatch.cli import main

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
name = "Alice"

[[staff]]
email = "bob@rouge.example"
name = "Bob"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
backups = ["bob@rouge.example"]
"""


def eml(folder: Path, name: str, headers: dict[str, str], body: str = "Hello.\n") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k}: {v}\n" for k, v in headers.items()) + "\n" + body
    (folder / name).write_text(text)


def client_mail(key: str, when: str, subject: str, **extra: str) -> dict[str, str]:
    return {
        "Received": f"from mx.acme.example by mx.rouge.example; {when}",
        "From": "Jane Doe <jane@acme.example>",
        "To": "alice@rouge.example",
        "Subject": subject,
        "Date": when,
        "Message-ID": f"<{key}@acme.example>",
        **extra,
    }


def staff_mail(
    key: str, when: str, subject: str, replying_to: str, sender: str = "alice"
) -> dict[str, str]:
    return {
        "From": f"{sender.title()} <{sender}@rouge.example>",
        "To": "jane@acme.example",
        "Subject": subject,
        "Date": when,
        "Message-ID": f"<{key}@rouge.example>",
        "In-Reply-To": f"<{replying_to}@acme.example>",
        "References": f"<{replying_to}@acme.example>",
    }


@pytest.fixture
def agency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    """Two staff mailboxes on disk: alice (INBOX + Sent) and bob (Sent); the config's
    database is a fresh SQLite file or PostgreSQL database."""
    monkeypatch.chdir(tmp_path)
    mail = tmp_path / "mail"
    eml(
        mail / "alice" / "INBOX",
        "1.eml",
        client_mail("c1", "Mon, 16 Nov 2026 10:00:00 +0000", "Homepage banner"),
    )
    eml(
        mail / "alice" / "INBOX",
        "2.eml",
        client_mail("c2", "Tue, 17 Nov 2026 09:00:00 +0000", "Our site is down"),
    )
    eml(
        mail / "alice" / "INBOX",
        "3.eml",
        client_mail("c3", "Wed, 18 Nov 2026 09:00:00 +0000", "Invoice question"),
    )
    eml(
        mail / "alice" / "INBOX",
        "4.eml",
        {
            **client_mail(
                "ooo", "Wed, 18 Nov 2026 09:01:00 +0000", "Automatic reply: Invoice question"
            ),
            "Auto-Submitted": "auto-replied",
            "In-Reply-To": "<c3@acme.example>",
        },
    )
    eml(
        mail / "alice" / "Sent",
        "1.eml",
        staff_mail("s1", "Mon, 16 Nov 2026 12:00:00 +0000", "Re: Homepage banner", "c1"),
    )
    eml(
        mail / "bob" / "Sent",
        "1.eml",
        staff_mail(
            "s2", "Tue, 17 Nov 2026 11:00:00 +0000", "Re: Our site is down", "c2", sender="bob"
        ),
    )
    (tmp_path / "mailwatch.toml").write_text(CONFIG.format(url=store_url))
    return tmp_path


@pytest.fixture
def other_database(store_url: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh database of the same kind as the agency's."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    server = make_url(store_url).set(database="postgres")
    name = f"mw_{uuid.uuid4().hex}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(store_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report_json(capsys, *extra: str) -> dict:
    code, out, _ = run(capsys, "report", "--format", "json", "--now", "2026-11-27T09:00Z", *extra)
    assert code == 0
    return json.loads(out)


def test_import_then_report_measures_each_request(agency, capsys):
    assert run(capsys, "import", "mail/alice", "--mailbox", "alice")[0] == 0
    assert run(capsys, "import", "mail/bob", "--mailbox", "bob")[0] == 0
    document = report_json(capsys)
    by_subject = {r["subject"]: r for r in document["requests"]}
    assert by_subject["Homepage banner"]["status"] == "met"
    assert by_subject["Homepage banner"]["response_seconds"] == 7200
    assert by_subject["Our site is down"]["tier"] == "critical"
    assert by_subject["Our site is down"]["status"] == "breached"
    assert by_subject["Our site is down"]["responder"] == "bob@rouge.example"
    assert by_subject["Invoice question"]["status"] == "overdue"
    assert by_subject["Invoice question"]["answered_by"] is None
    assert document["summary"] == {
        "requests": 3,
        "met": 1,
        "breached": 1,
        "overdue": 1,
        "open": 0,
        "waived": 0,
        "compliance": pytest.approx(1 / 3),
        "median_response_seconds": 7200,
        "p90_response_seconds": 7200,
    }


def test_importing_the_same_mail_twice_changes_nothing(agency, capsys):
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    first = report_json(capsys)
    code, out, _ = run(capsys, "import", "mail/alice", "--mailbox", "alice")
    assert code == 0 and "0 new" in out
    assert report_json(capsys) == first


def test_the_order_of_imports_does_not_matter(agency, capsys, tmp_path, other_database):
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    run(capsys, "import", "mail/bob", "--mailbox", "bob")
    forwards = report_json(capsys)
    (tmp_path / "mailwatch.toml").write_text(CONFIG.format(url=other_database))
    run(capsys, "import", "mail/bob", "--mailbox", "bob")
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    assert report_json(capsys) == forwards


def test_a_reply_imported_later_updates_the_earlier_result(agency, capsys):
    run(capsys, "import", "mail/alice/INBOX", "--mailbox", "alice")
    before = {r["subject"]: r["status"] for r in report_json(capsys)["requests"]}
    assert before["Our site is down"] == "overdue"
    run(capsys, "import", "mail/bob", "--mailbox", "bob")
    after = {r["subject"]: r["status"] for r in report_json(capsys)["requests"]}
    assert after["Our site is down"] == "breached"


def test_report_filters_by_received_date_in_the_agency_timezone(agency, capsys):
    run(capsys, "import", "mail", "--mailbox", "all")
    document = report_json(capsys, "--since", "2026-11-17", "--until", "2026-11-18")
    assert [r["subject"] for r in document["requests"]] == ["Our site is down"]


def test_waive_takes_a_request_out_of_the_ratio(agency, capsys):
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    code, out, _ = run(
        capsys,
        "waive",
        "c3@acme.example",
        "--reason",
        "answered by phone",
        "--now",
        "2026-11-20T09:00Z",
    )
    assert code == 0 and "waived" in out
    invoice = next(r for r in report_json(capsys)["requests"] if r["subject"] == "Invoice question")
    assert invoice["status"] == "waived"
    assert invoice["waiver"]["reason"] == "answered by phone"


def test_waiving_an_unknown_message_fails_with_one_line(agency, capsys):
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    code, _, err = run(capsys, "waive", "<nope@acme.example>")
    assert code == 1 and err.count("\n") == 1 and "no stored message" in err


def test_explain_names_the_rule_that_set_the_auto_reply_aside(agency, capsys):
    run(capsys, "import", "mail/alice", "--mailbox", "alice")
    code, out, _ = run(capsys, "explain", "<c3@acme.example>", "--now", "2026-11-27T09:00Z")
    assert code == 0
    assert "automated" in out and "auto-replied" in out.lower()
    assert "overdue" in out


def test_csv_and_table_formats(agency, capsys):
    run(capsys, "import", "mail", "--mailbox", "all")
    code, out, _ = run(capsys, "report", "--format", "csv", "--now", "2026-11-27T09:00Z")
    assert code == 0 and out.splitlines()[0].startswith("account,thread,subject")
    assert len(out.splitlines()) == 4
    code, out, _ = run(capsys, "report", "--now", "2026-11-27T09:00Z")
    assert "Compliance 33%" in out


def test_status_lists_what_waits_and_json_follows_the_interface(agency, capsys):
    run(capsys, "import", "mail", "--mailbox", "all")
    code, out, _ = run(capsys, "status", "--format", "json", "--now", "2026-11-18T10:00Z")
    document = json.loads(out)
    assert code == 0
    assert [r["subject"] for r in document["requests"]] == ["Invoice question"]
    assert document["requests"][0]["status"] == "open"
    assert document["generated_at"] == "2026-11-18T10:00:00Z"


def test_a_bad_config_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailwatch.toml").write_text(
        '[agency]\nname = "x"\ndomains = ["rouge.example"]\nbogus = 1\n'
    )
    code, out, err = run(capsys, "report")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "mailwatch.toml" in err and "bogus" in err


def test_a_bad_date_argument_exits_2(agency, capsys):
    code, _, err = run(capsys, "report", "--since", "last tuesday")
    assert code == 2 and "YYYY-MM-DD" in err
