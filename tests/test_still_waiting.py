"""The daily "still waiting" lists, end to end: the real store (SQLite and PostgreSQL), a real
SMTP server, the nudge pass as `mailwatch nudge --now` runs it."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from mailwatch.cli import main
from mailwatch.core.model import Leave
from mailwatch.health import send_problems
from mailwatch.store.repository import Store
from tests.core.factory import at, client, policy, staff
from tests.test_nudging import add, parts, send_due_nudges, settings_for

ALICE, BOB, CAROL, HEAD = (f"{name}@rouge.example" for name in ("alice", "bob", "carol", "head"))


def lists(sink) -> list:
    """The still-waiting emails the server accepted, in order."""
    return [m for m in sink.messages if m.message["X-Mailwatch"] == "still-waiting"]


def lists_to(sink) -> list[str]:
    return [rcpt for m in lists(sink) for rcpt in m.rcpt_tos]


def text_of(mail) -> str:
    return mail.message.get_body(("plain",)).get_content()


def overdue_on_monday(store: Store) -> Store:
    """Acme's banner (Alice's) and Globex's logo (Carol's), both due Monday 17:00 (8h target)."""
    add(
        store,
        client("banner@acme.example", at(0, 9), "Homepage banner"),
        client("logo@globex.example", at(0, 9), "Logo files", frm="kim@globex.example"),
    )
    return store


def test_each_responsible_person_gets_one_list_naming_only_their_overdue_requests(
    smtp_server, store
):
    overdue_on_monday(store)

    send_due_nudges(settings_for(smtp_server), store, at(1, 9))  # Tuesday 09:00

    assert sorted(lists_to(smtp_server)) == [ALICE, CAROL]
    (to_alice,) = [m for m in lists(smtp_server) if m.rcpt_tos == (ALICE,)]
    assert to_alice.message["Auto-Submitted"] == "auto-generated"
    for part in parts(to_alice):
        assert "Homepage banner" in part and "Logo files" not in part
        assert "Overdue by 16h" in part
        assert "Received: Mon 23 Nov 09:00" in " ".join(part.split())
        assert "Also responsible: Bob (bob@rouge.example)" in part
        assert "mailwatch waive '<banner@acme.example>'" in part
    assert "Still waiting" in to_alice.message["Subject"]


def test_the_list_goes_at_most_once_a_day_across_runs_and_restarts(smtp_server, store, store_url):
    overdue_on_monday(store)
    settings = settings_for(smtp_server, store_url)

    send_due_nudges(settings, store, at(1, 8, 59))  # before still_waiting_at
    assert lists(smtp_server) == []
    send_due_nudges(settings, store, at(1, 9, 5))
    send_due_nudges(settings, store, at(1, 14))
    restarted = Store(store_url)
    try:
        send_due_nudges(settings, restarted, at(1, 17))
    finally:
        restarted.close()
    assert sorted(lists_to(smtp_server)) == [ALICE, CAROL]

    send_due_nudges(settings, store, at(2, 9))  # Wednesday: again, while still overdue
    assert sorted(lists_to(smtp_server)) == [ALICE, ALICE, CAROL, CAROL, HEAD]


def test_no_list_goes_on_a_weekend_and_monday_morning_brings_it(smtp_server, store):
    add(store, client("friday@acme.example", at(4, 9), "Friday question"))  # due Fri 17:00
    settings = settings_for(smtp_server)

    send_due_nudges(settings, store, at(5, 10))  # Saturday
    send_due_nudges(settings, store, at(6, 10))  # Sunday
    assert lists(smtp_server) == []

    send_due_nudges(settings, store, at(7, 9))  # Monday: overdue by 64h, the head's too
    assert sorted(lists_to(smtp_server)) == [ALICE, HEAD]


def test_a_manager_on_leave_gets_no_list_and_the_backup_present_gets_it(smtp_server, store):
    overdue_on_monday(store)
    on_leave = (Leave(ALICE, date(2026, 11, 24), date(2026, 11, 27)),)

    send_due_nudges(settings_for(smtp_server, leave=on_leave), store, at(1, 9))

    assert sorted(lists_to(smtp_server)) == [BOB, CAROL]
    (to_bob,) = [m for m in lists(smtp_server) if m.rcpt_tos == (BOB,)]
    for part in parts(to_bob):
        assert "Homepage banner" in part and "Logo files" not in part
        assert "on leave until 27 Nov → you are a backup for Acme Ltd" in part


def test_the_heads_list_has_only_the_requests_overdue_by_more_than_24_hours(smtp_server, store):
    overdue_on_monday(store)
    add(store, client("prices@acme.example", at(1, 9), "Spring price list"))  # due Tue 17:00

    send_due_nudges(settings_for(smtp_server), store, at(2, 9))  # Wednesday

    (to_head,) = [m for m in lists(smtp_server) if m.rcpt_tos == (HEAD,)]
    for part in parts(to_head):
        assert "Homepage banner" in part and "Logo files" in part
        assert "Spring price list" not in part
        assert "overdue by more than 24h" in part
    (to_alice,) = [m for m in lists(smtp_server) if m.rcpt_tos == (ALICE,)]
    text = text_of(to_alice)
    assert text.index("Homepage banner") < text.index("Spring price list")  # most overdue first


def test_the_head_gets_no_list_while_nothing_is_overdue_by_24_hours(smtp_server, store):
    overdue_on_monday(store)
    send_due_nudges(settings_for(smtp_server), store, at(1, 9))  # 16h past the deadline
    assert sorted(lists_to(smtp_server)) == [ALICE, CAROL]  # the head: none


def test_a_head_who_is_also_responsible_gets_one_email_with_both_lists(smtp_server, store):
    overdue_on_monday(store)
    base = policy()
    globex = replace(base.accounts[1], manager=HEAD)
    settings = settings_for(smtp_server, accounts=(base.accounts[0], globex))

    send_due_nudges(settings, store, at(2, 9))

    (to_head,) = [m for m in lists(smtp_server) if m.rcpt_tos == (HEAD,)]
    text = text_of(to_head)
    assert "A client email you answer for is past its deadline" in text
    assert "As Head of Client Management: 1 more client email is overdue by more than 24h" in text
    assert text.count("Logo files") == 1  # theirs, listed once


def test_nobody_gets_a_list_when_nothing_is_overdue(smtp_server, store):
    overdue_on_monday(store)
    answers = (
        ("banner@acme.example", "jane@acme.example"),
        ("logo@globex.example", "kim@globex.example"),
    )
    for key, to in answers:
        add(store, staff(f"re-{key}", at(0, 16), refs=(f"<{key}>",), to=(to,)))

    run = send_due_nudges(settings_for(smtp_server), store, at(2, 9))

    assert lists(smtp_server) == [] and run.lists is not None and run.lists.due == []


def test_a_dry_run_says_who_would_get_a_list_and_sends_and_claims_nothing(smtp_server, store):
    overdue_on_monday(store)

    run = send_due_nudges(settings_for(smtp_server), store, at(1, 9), dry_run=True)

    assert smtp_server.messages == [] and store.claims("still-waiting") == []
    text = "\n".join(run.lines)
    assert "would send a still-waiting list to alice@rouge.example" in text
    assert "Acme Ltd: 'Homepage banner'" in text


def test_a_list_the_smtp_server_defers_goes_at_the_next_run_that_day(smtp_server, store):
    add(store, client("banner@acme.example", at(0, 9), "Homepage banner"))
    settings = settings_for(smtp_server)
    smtp_server.answer_next("451 4.3.0 Try again later")

    deferred = send_due_nudges(settings, store, at(1, 9))
    assert lists(smtp_server) == [] and deferred.failures == 1
    send_due_nudges(settings, store, at(1, 9, 5))

    assert lists_to(smtp_server) == [ALICE]


def test_a_hostile_subject_is_escaped_in_the_list(smtp_server, store):
    add(store, client("x@acme.example", at(0, 9), "<script>alert(1)</script><img onerror=x>"))

    send_due_nudges(settings_for(smtp_server), store, at(1, 9))

    (mail,) = lists(smtp_server)
    html = mail.message.get_body(("html",)).get_content()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_mailwatch_nudge_with_now_sends_the_morning_lists(tmp_path, smtp_server, capsys):
    database = tmp_path / "mailwatch.db"
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        f"""
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"

[database]
url = "sqlite:///{database}"

[sla]
target = "8h"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"

[smtp]
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
sender = "mailwatch@rouge.example"
"""
    )
    store = Store(f"sqlite:///{database}")
    store.upgrade()
    add(store, client("banner@acme.example", at(0, 9), "Homepage banner"))
    store.close()
    tuesday = "2026-11-24T09:30:00Z"

    assert main(["nudge", "--now", tuesday, "--dry-run", "--config", str(config)]) == 0
    assert "would send a still-waiting list to alice@rouge.example" in capsys.readouterr().out
    assert main(["nudge", "--now", tuesday, "--config", str(config)]) == 0
    assert main(["nudge", "--now", tuesday, "--config", str(config)]) == 0

    assert lists_to(smtp_server) == [ALICE]


def test_a_request_that_breaches_after_the_morning_list_is_on_the_next_mornings(smtp_server, store):
    add(store, client("banner@acme.example", at(0, 9), "Homepage banner"))  # due Mon 17:00
    settings = settings_for(smtp_server)

    send_due_nudges(settings, store, at(0, 17, 30))  # the breach nudge, no list
    assert lists(smtp_server) == []
    send_due_nudges(settings, store, at(1, 9))

    assert lists_to(smtp_server) == [ALICE]


def test_a_list_the_smtp_server_refuses_for_good_is_a_health_problem(smtp_server, store):
    add(store, client("banner@acme.example", at(0, 9), "Homepage banner"))
    smtp_server.answer_next("550 5.1.1 No such user")

    run = send_due_nudges(settings_for(smtp_server), store, at(1, 9))

    assert run.failures == 1
    assert send_problems(store) == [
        "the last still-waiting to alice@rouge.example failed: "
        + store.claims("still-waiting")[0].error
    ]
    send_due_nudges(settings_for(smtp_server), store, at(1, 10))  # not retried that day
    assert lists(smtp_server) == []
