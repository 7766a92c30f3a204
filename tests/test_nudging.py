"""Sending nudges end to end: the real store (SQLite and PostgreSQL) and a real SMTP server."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest

from mailwatch import nudging
from mailwatch.bootstrap import make_mailer, make_renderer
from mailwatch.config import Settings, SmtpSettings, SyncSettings
from mailwatch.core.model import Account, Message
from mailwatch.store.repository import Store, StoredMessage
from tests.core.factory import at, client, policy, staff
from tests.fixtures.smtp import SmtpSink

STANDARD = "<banner@acme.example>"
CRITICAL = "<down@acme.example>"


def settings_for(sink: SmtpSink, store_url: str = "sqlite://", **policy_changes) -> Settings:
    # An 8h target keeps every stage of a 09:00 request inside the working day.
    return Settings(
        source=Path("mailwatch.toml"),
        agency_name="Rouge",
        policy=policy(target=timedelta(hours=8), **policy_changes),
        database_url=store_url,
        smtp=SmtpSettings(
            host=sink.host,
            port=sink.port,
            security="none",
            sender="Mailwatch <mailwatch@rouge.example>",
            timeout=5.0,
        ),
    )


def send_due_nudges(settings: Settings, store: Store, now, **options) -> nudging.NudgeRun:
    """The pass with the mailer and renderer the command line and the daemon give it."""
    mailer, renderer = make_mailer(settings), make_renderer()
    return nudging.send_due_nudges(
        settings, store, now, mailer=mailer, renderer=renderer, **options
    )


def add(store: Store, *messages: Message) -> None:
    store.add_messages(
        [StoredMessage(m, b"Subject: x\r\n\r\n", location=f"test:{m.key}") for m in messages]
    )


def received(sink: SmtpSink) -> list[tuple[str, str]]:
    """(recipient, subject) of every email the server accepted, in order."""
    return [(m.rcpt_tos[0], m.message["Subject"]) for m in sink.messages]


def recipients(sink: SmtpSink) -> list[str]:
    return [rcpt for m in sink.messages for rcpt in m.rcpt_tos]


@pytest.fixture
def standard_request(store: Store) -> Store:
    add(store, client(STANDARD[1:-1], at(0, 9), "Homepage banner"))  # Monday 09:00, 8h target
    return store


def test_nothing_is_sent_before_75_percent_of_the_target(smtp_server, standard_request):
    run = send_due_nudges(settings_for(smtp_server), standard_request, at(0, 14, 59))
    assert run.sent == [] and smtp_server.messages == []


def test_the_manager_is_nudged_at_75_percent_then_backups_at_90_and_the_head_at_100(
    smtp_server, standard_request
):
    settings = settings_for(smtp_server)

    send_due_nudges(settings, standard_request, at(0, 15))  # 6h of 8h
    assert recipients(smtp_server) == ["alice@rouge.example"]

    send_due_nudges(settings, standard_request, at(0, 16, 11))  # just before 90%
    assert len(smtp_server.messages) == 1

    send_due_nudges(settings, standard_request, at(0, 16, 12))  # 7h12m: 90%
    assert sorted(recipients(smtp_server)[1:]) == ["alice@rouge.example", "bob@rouge.example"]

    send_due_nudges(settings, standard_request, at(0, 17))  # breach
    assert sorted(recipients(smtp_server)[3:]) == [
        "alice@rouge.example",
        "bob@rouge.example",
        "head@rouge.example",
    ]
    sent = standard_request.claims("nudge")
    assert {(c.key, c.recipient) for c in sent} == {
        (f"{STANDARD}|reminder", "alice@rouge.example"),
        (f"{STANDARD}|warning", "alice@rouge.example"),
        (f"{STANDARD}|warning", "bob@rouge.example"),
        (f"{STANDARD}|breach", "alice@rouge.example"),
        (f"{STANDARD}|breach", "bob@rouge.example"),
        (f"{STANDARD}|breach", "head@rouge.example"),
    }
    assert all(c.sent_at is not None and c.error is None for c in sent)


def test_a_critical_request_is_nudged_at_45_54_and_60_minutes_even_at_night(smtp_server, store):
    add(store, client(CRITICAL[1:-1], at(0, 22), "Our website is down"))  # Monday 22:00
    settings = settings_for(smtp_server)
    timeline = [(at(0, 22, 44), 0), (at(0, 22, 45), 1), (at(0, 22, 54), 3), (at(0, 23), 6)]
    for now, total in timeline:
        send_due_nudges(settings, store, now)
        assert len(smtp_server.messages) == total, now
    assert "Our website is down" in received(smtp_server)[0][1]
    assert sorted(recipients(smtp_server)[3:]) == [
        "alice@rouge.example",
        "bob@rouge.example",
        "head@rouge.example",
    ]


def test_the_email_lists_the_request_with_its_reasons_in_text_and_html(
    smtp_server, standard_request
):
    send_due_nudges(settings_for(smtp_server), standard_request, at(0, 15))
    (mail,) = smtp_server.messages
    message = mail.message
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert message["Auto-Submitted"] == "auto-generated"
    assert "Homepage banner" in message["Subject"]
    assert "reminder: 6h of 8h elapsed" in text and "you manage Acme Ltd" in text
    assert "mailwatch waive" in text and "Homepage banner" in html


def test_running_the_same_pass_again_sends_nothing_new(smtp_server, standard_request):
    settings = settings_for(smtp_server)
    send_due_nudges(settings, standard_request, at(0, 15))
    again = send_due_nudges(settings, standard_request, at(0, 15, 5))
    assert again.sent == [] and len(smtp_server.messages) == 1


def test_a_restarted_process_on_the_same_database_sends_nothing_twice(
    smtp_server, standard_request, store_url
):
    settings = settings_for(smtp_server, store_url)
    send_due_nudges(settings, standard_request, at(0, 16, 12))
    assert len(smtp_server.messages) == 2
    restarted = Store(store_url)
    try:
        send_due_nudges(settings, restarted, at(0, 16, 20))
    finally:
        restarted.close()
    assert len(smtp_server.messages) == 2


def test_several_stages_due_together_send_only_the_highest(smtp_server, standard_request):
    send_due_nudges(settings_for(smtp_server), standard_request, at(0, 17, 30))
    assert sorted(recipients(smtp_server)) == [
        "alice@rouge.example",
        "bob@rouge.example",
        "head@rouge.example",
    ]
    assert {c.key for c in standard_request.claims("nudge")} == {f"{STANDARD}|breach"}


def test_one_email_per_recipient_lists_every_request_that_fell_due(smtp_server, store):
    add(
        store,
        client("a@acme.example", at(0, 9), "First"),
        client("b@acme.example", at(0, 9, 10), "Second"),
    )
    send_due_nudges(settings_for(smtp_server), store, at(0, 15, 30))
    (mail,) = smtp_server.messages
    text = mail.message.get_body(("plain",)).get_content()
    assert mail.rcpt_tos == ("alice@rouge.example",)
    assert text.index('"First"') < text.index('"Second"')  # the earlier deadline first


def test_smtp_down_for_a_pass_then_up_sends_what_is_still_due_and_not_what_is_late(
    smtp_server, store
):
    add(
        store,
        client("early@acme.example", at(0, 6), "Early"),  # reminder due 12:00
        client("later@acme.example", at(0, 9), "Later"),  # reminder due 15:00
    )
    settings = settings_for(smtp_server)
    smtp_server.stop()
    down = send_due_nudges(settings, store, at(0, 15))
    assert down.sent == [] and {not permanent for _, _, permanent in down.failed} == {True}
    assert all(c.released for c in store.claims("nudge"))
    smtp_server.start()

    # 16:05: "Later"'s reminder fell due 1h05 ago (within the 2h limit): sent.  "Early"'s
    # breach fell due at 14:00, 2h05 ago: skipped, not sent late.
    up = send_due_nudges(settings, store, at(0, 16, 5))

    assert [(n.request.opened_by, n.stage, n.recipient) for n in up.sent] == [
        ("<later@acme.example>", "reminder", "alice@rouge.example")
    ]
    assert recipients(smtp_server) == ["alice@rouge.example"]
    assert {(n.request.opened_by, n.stage) for n in up.plan.skipped} == {
        ("<early@acme.example>", "breach")
    }


def test_a_stage_that_fell_due_too_long_ago_is_skipped_and_recorded_for_the_digest(
    smtp_server, store
):
    add(store, client("old@acme.example", at(0, 9), "Old"))
    run = send_due_nudges(settings_for(smtp_server), store, at(0, 16))  # reminder 1h late: sent
    assert len(run.sent) == 1
    skipped = send_due_nudges(settings_for(smtp_server), store, at(1, 12))  # breach 19h late
    assert skipped.sent == []
    assert {(n.stage, n.recipient) for n in skipped.plan.skipped} >= {
        ("breach", "head@rouge.example")
    }
    recorded = store.claims("nudge-skipped")
    assert {c.recipient for c in recorded} >= {"head@rouge.example"}
    assert all(c.error and c.error.startswith("skipped:") for c in recorded)


def test_a_request_answered_between_passes_gets_no_further_nudge(smtp_server, standard_request):
    settings = settings_for(smtp_server)
    send_due_nudges(settings, standard_request, at(0, 15))
    add(
        standard_request,
        staff(
            "reply@rouge.example",
            at(0, 15, 30),
            refs=(STANDARD,),
            to=("jane@acme.example",),
        ),
    )
    run = send_due_nudges(settings, standard_request, at(0, 17, 30))
    assert run.sent == [] and len(smtp_server.messages) == 1


def test_a_permanent_failure_keeps_the_claim_and_is_not_retried(smtp_server, standard_request):
    settings = settings_for(smtp_server)
    smtp_server.answer_next("550 5.1.1 No such user")
    failed = send_due_nudges(settings, standard_request, at(0, 15))
    assert [permanent for _, _, permanent in failed.failed] == [True]
    (claim,) = standard_request.claims("nudge")
    assert claim.sent_at is None and not claim.released and "550" in claim.error
    again = send_due_nudges(settings, standard_request, at(0, 15, 5))
    assert again.sent == [] and again.failed == [] and smtp_server.messages == []


def test_a_client_address_never_receives_anything(smtp_server, store):
    # Misconfigured by hand (the config loader would refuse it): a client listed as backup.
    base = policy()
    acme = replace(base.accounts[0], backups=("bob@rouge.example", "jane@acme.example"))
    accounts: tuple[Account, ...] = (acme, *base.accounts[1:])
    add(store, client("x@acme.example", at(0, 9), "Anything"))
    run = send_due_nudges(settings_for(smtp_server, accounts=accounts), store, at(0, 17, 30))
    assert "jane@acme.example" not in recipients(smtp_server)
    assert recipients(smtp_server)  # the staff still got theirs
    assert [n.recipient for n in run.plan.refused] == ["jane@acme.example"]


def test_a_dry_run_says_who_would_get_what_and_sends_and_claims_nothing(
    smtp_server, standard_request
):
    run = send_due_nudges(settings_for(smtp_server), standard_request, at(0, 16, 12), dry_run=True)
    assert smtp_server.messages == [] and standard_request.claims("nudge") == []
    text = "\n".join(run.lines)
    assert "would send to alice@rouge.example" in text
    assert "would send to bob@rouge.example" in text
    assert "warning: 7h 12m of 8h elapsed" in text


def parts(mail) -> tuple[str, str]:
    """The text part and the HTML part's visible words, each on one line per paragraph."""
    message = mail.message
    html = message.get_body(("html",)).get_content()
    visible = re.sub(r"<[^>]+>", "", html).replace("&#34;", '"').replace("&#39;", "'")
    return message.get_body(("plain",)).get_content(), unescape(visible)


def test_the_nudge_says_how_to_mark_no_reply_needed_from_each_mail_client_with_the_folder_name(
    smtp_server, standard_request
):
    settings = replace(settings_for(smtp_server), sync=SyncSettings(waive_folder="Sans réponse"))

    send_due_nudges(settings, standard_request, at(0, 15))

    (mail,) = smtp_server.messages
    for part in parts(mail):
        assert 'Move or copy the client\'s email to the "Sans réponse" folder' in part
        assert (
            'Gmail: open the email, click "Move to" (or "Labels") and choose "Sans réponse".'
            in (part)
        )
        assert (
            'Outlook / Microsoft 365: right-click the email, choose Move, then "Sans réponse".'
            in (part)
        )
        assert 'Apple Mail: drag the email onto the "Sans réponse" mailbox in the sidebar.' in part
        assert (
            'Phone: open the email, tap Move (in the Gmail app: ⋮ then "Move to") and choose'
            in (part)
        )
        assert "No reply needed" not in part.replace("No reply needed?", "")


def test_every_request_waiting_for_the_recipient_is_listed_not_just_counted(smtp_server, store):
    add(store, client("banner@acme.example", at(0, 9), "Homepage banner"))
    add(store, client("prices@acme.example", at(0, 10), "Spring price list"))
    add(store, client("logo@acme.example", at(0, 12), "Logo files"))

    send_due_nudges(settings_for(smtp_server), store, at(0, 15))  # the banner's reminder

    (mail,) = smtp_server.messages
    for part in parts(mail):
        assert "2 other client emails are still waiting for a reply:" in part
        assert "Spring price list" in part and "Logo files" in part and "Homepage banner" in part
        assert "received Mon 23 Nov 10:00, due Mon 23 Nov 18:00" in part
        assert "not listed again" not in part


def test_the_heads_copy_names_who_is_responsible_and_the_reminders_sent_and_asks_no_reply(
    smtp_server, standard_request
):
    settings = settings_for(smtp_server)
    for now in (at(0, 15), at(0, 16, 12), at(0, 17)):  # reminder, warning, breach
        send_due_nudges(settings, standard_request, now)

    (to_head,) = [m for m in smtp_server.messages if m.rcpt_tos == ("head@rouge.example",)]
    (to_alice,) = [m for m in smtp_server.messages[3:] if m.rcpt_tos == ("alice@rouge.example",)]
    for part in parts(to_head):
        assert "Responsible: Alice (alice@rouge.example)" in part
        assert (
            "Reminders already sent: reminder to Alice, Mon 23 Nov 15:00; "
            "warning to Alice, Bob, Mon 23 Nov 16:12"
        ) in part
        assert "check that the person responsible has it in hand" in part
        assert "reply to the client" not in part
    for part in parts(to_alice):
        assert "reply to the client" in part and "Reminders already sent" not in part


def test_a_nudge_for_a_client_citing_a_reply_never_seen_says_how_to_record_it(smtp_server, store):
    add(
        store,
        client(STANDARD[1:-1], at(0, 9), "Homepage banner"),
        client(
            "chaser@acme.example",
            at(0, 11),
            "Re: Homepage banner",
            refs=(STANDARD, "<r@rouge.example>"),
        ),
        client("other@acme.example", at(0, 9), "Logo files"),
    )
    send_due_nudges(settings_for(smtp_server), store, at(0, 15))
    (mail,) = smtp_server.messages
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    hint = "A reply may have been sent from another mailbox: record it with"
    assert text.count(hint) == 1 and html.count(hint) == 1
    assert f"mailwatch answered '{STANDARD}' --at DATE" in text
