"""The response clock, case by case (response-clock.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from mailwatch.core.clock import evaluate
from mailwatch.core.model import ClockKind, Copy, Status, Waiver, WaiverVia
from tests.core.factory import at, business_policy, client, leave, policy, staff

H = 3600


def only(evaluation):
    assert len(evaluation.requests) == 1, evaluation.requests
    return evaluation.requests[0]


def test_a_reply_within_the_day_is_met():
    r = only(
        evaluate(
            [client("c1", at(0, 10)), staff("s1", at(0, 12), refs=("<c1>",))], policy(), now=at(3)
        )
    )
    assert (r.status, r.response_seconds, r.target_seconds) == (Status.MET, 2 * H, 24 * H)
    assert (r.answered_by, r.responder, r.tier) == ("<s1>", "alice@rouge.example", "standard")
    assert r.deadline == at(1, 10)


def test_a_follow_up_before_any_reply_keeps_the_clock_from_the_earliest_message():
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(0, 15), refs=("<c1>",)),
        staff("s1", at(1, 11), refs=("<c1>", "<c2>")),
    ]
    r = only(evaluate(messages, policy(), now=at(3)))
    assert r.received_at == at(0, 10)
    assert r.messages == ("<c1>", "<c2>")
    assert (r.status, r.response_seconds) == (Status.BREACHED, 25 * H)


def test_a_staff_out_of_office_reply_does_not_stop_the_clock():
    ooo = staff(
        "ooo",
        at(0, 10, 1),
        subject="Out of Office: Homepage banner",
        refs=("<c1>",),
        headers=(("auto-submitted", "auto-replied"),),
    )
    evaluation = evaluate([client("c1", at(0, 10)), ooo], policy(), now=at(0, 20))
    r = only(evaluation)
    assert r.status is Status.OPEN and r.answered_by is None
    assert evaluation.classifications["<ooo>"].automated


def test_an_internal_only_forward_does_not_answer():
    forward = staff(
        "fwd", at(0, 11), subject="Fwd: Homepage banner", to=("bob@rouge.example",), refs=("<c1>",)
    )
    r = only(evaluate([client("c1", at(0, 10)), forward], policy(), now=at(1, 11)))
    assert r.status is Status.OVERDUE


def test_a_reply_by_the_backup_answers():
    reply = staff("s1", at(0, 13), frm="bob@rouge.example", mailbox="bob", refs=("<c1>",))
    r = only(evaluate([client("c1", at(0, 10)), reply], policy(), now=at(2)))
    assert (r.status, r.responder) == (Status.MET, "bob@rouge.example")


def test_a_reply_exactly_at_the_deadline_is_met():
    r = only(
        evaluate(
            [client("c1", at(0, 10)), staff("s1", at(1, 10), refs=("<c1>",))], policy(), now=at(3)
        )
    )
    assert (r.status, r.response_seconds) == (Status.MET, 24 * H)


def test_a_reply_one_second_late_is_breached():
    late = staff("s1", at(1, 10) + timedelta(seconds=1), refs=("<c1>",))
    r = only(evaluate([client("c1", at(0, 10)), late], policy(), now=at(3)))
    assert r.status is Status.BREACHED


def test_a_reply_with_a_skewed_date_uses_the_server_time():
    # The sender's clock is three days behind: Date is implausible, INTERNALDATE counts.
    skewed = staff("s1", at(0, 12), refs=("<c1>",), date_header=at(0, 12) - timedelta(days=3))
    r = only(evaluate([client("c1", at(0, 10)), skewed], policy(), now=at(3)))
    assert (r.status, r.answered_at, r.response_seconds) == (Status.MET, at(0, 12), 2 * H)


def test_a_reply_whose_plausible_date_precedes_the_request_still_answers_it_with_zero_seconds():
    # Date one minute before the client's arrival (within the 48 h window): the reply quotes it.
    reply = staff("s1", at(0, 10, 2), refs=("<c1>",), date_header=at(0, 9, 59))
    r = only(evaluate([client("c1", at(0, 10)), reply], policy(), now=at(3)))
    assert (r.status, r.response_seconds) == (Status.MET, 0)


def test_a_critical_subject_gets_the_one_hour_tier():
    down = client("c1", at(0, 10), subject="URGENT: our website is down")
    r = only(evaluate([down, staff("s1", at(0, 11, 30), refs=("<c1>",))], policy(), now=at(1)))
    assert (r.tier, r.target_seconds, r.status) == ("critical", H, Status.BREACHED)


def test_a_high_priority_header_matches_the_tier_that_asks_for_it():
    urgent = client("c1", at(0, 10), headers=(("x-priority", "1 (Highest)"),))
    r = only(evaluate([urgent], policy(), now=at(0, 10, 30)))
    assert (r.tier, r.status) == ("critical", Status.OPEN)


def test_a_follow_up_saying_the_site_is_down_tightens_the_deadline():
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(0, 14), subject="Re: Homepage banner - site down now", refs=("<c1>",)),
    ]
    r = only(evaluate(messages, policy(), now=at(0, 14, 30)))
    assert (r.tier, r.deadline, r.received_at) == ("critical", at(0, 15), at(0, 10))
    assert r.target_seconds == 5 * H


def test_a_thread_split_by_a_broken_references_chain_is_rejoined_by_subject():
    messages = [
        client("c1", at(0, 10), subject="Quote for the new shop"),
        staff("s1", at(0, 12), subject="Re: Quote for the new shop", refs=("<c1>",)),
        # the client's mailer dropped References: a new root with the same subject
        client("c2", at(2, 9), subject="RE: AW: Quote for the new shop"),
        staff("s2", at(2, 10), subject="Re: Quote for the new shop", refs=("<c2>",)),
    ]
    evaluation = evaluate(messages, policy(), now=at(4))
    assert {evaluation.thread_of[k] for k in ("<c1>", "<s1>", "<c2>", "<s2>")} == {"<c1>"}
    assert [r.opened_by for r in evaluation.requests] == ["<c1>", "<c2>"]
    assert all(r.thread == "<c1>" for r in evaluation.requests)


def test_a_generic_subject_never_joins_by_subject():
    messages = [
        client("c1", at(0, 10), subject="Question"),
        client("c2", at(1, 10), subject="Question"),
    ]
    evaluation = evaluate(messages, policy(), now=at(1, 11))
    assert evaluation.thread_of["<c1>"] != evaluation.thread_of["<c2>"]
    assert len(evaluation.requests) == 2


def test_the_subject_fallback_needs_recent_activity_and_a_shared_participant():
    old = client("c1", at(0, 10), subject="Logo files")
    stranger = client(
        "c2", at(1, 10), subject="Logo files", frm="tom@acme.example", to=("carol@rouge.example",)
    )
    much_later = client("c3", at(30, 10), subject="Logo files")
    evaluation = evaluate([old, stranger, much_later], policy(), now=at(31))
    threads = {evaluation.thread_of[k] for k in ("<c1>", "<c2>", "<c3>")}
    assert len(threads) == 3


def test_the_subject_fallback_joins_a_long_thread_by_its_recent_messages():
    # the thread began 40 days ago; its last message is 3 days old (window: 14 days)
    messages = [
        client("c1", at(0, 10), subject="Logo files"),
        staff("s1", at(37, 10), subject="Re: Logo files", refs=("<c1>",)),
        client("c2", at(40, 10), subject="Logo files"),
    ]
    evaluation = evaluate(messages, policy(), now=at(41))
    assert evaluation.thread_of["<c2>"] == evaluation.thread_of["<c1>"] == "<c1>"


def test_the_subject_fallback_counts_only_activity_before_the_new_message():
    # the thread's other message is later than the new one: it does not make the thread
    # recent, and the one before is 20 days older than the new message (window: 14 days)
    messages = [
        client("c1", at(0, 10), subject="Logo files"),
        client("c2", at(20, 10), subject="Logo files"),
        staff("s1", at(21, 10), subject="Re: Logo files", refs=("<c1>",)),
    ]
    evaluation = evaluate(messages, policy(), now=at(22))
    assert evaluation.thread_of["<c2>"] != evaluation.thread_of["<c1>"]


def test_the_subject_fallback_never_crosses_accounts():
    messages = [
        client("c1", at(0, 10), subject="Logo files"),
        client("c2", at(0, 11), subject="Logo files", frm="ann@globex.example"),
    ]
    evaluation = evaluate(messages, policy(), now=at(1))
    assert evaluation.thread_of["<c1>"] != evaluation.thread_of["<c2>"]


def test_a_reply_all_to_two_clients_answers_each_of_their_requests_without_references():
    messages = [
        client("c1", at(0, 9), subject="Launch plan", cc=("hank@globex.example",)),
        # Hank answers Alice alone, and his mailer sets no References
        client("c2", at(0, 9, 30), subject="RE: Launch plan", frm="hank@globex.example"),
        staff(
            "s1",
            at(0, 11),
            subject="Re: Launch plan",
            to=("jane@acme.example", "hank@globex.example"),
        ),
    ]
    evaluation = evaluate(messages, policy(), now=at(3))
    assert len(set(evaluation.thread_of.values())) == 1
    answers = {(r.account, r.opened_by, r.answered_by) for r in evaluation.requests}
    assert answers == {("Acme Ltd", "<c1>", "<s1>"), ("Globex", "<c2>", "<s1>")}


def test_a_message_seen_in_two_mailboxes_counts_once():
    in_alice = client("c1", at(0, 10), cc=("bob@rouge.example",))
    in_bob = replace(in_alice, copies=(Copy("bob", "INBOX", internal_date=at(0, 10, 1)),))
    r = only(evaluate([in_alice, in_bob, staff("s1", at(0, 11), refs=("<c1>",))], policy(), at(2)))
    assert (r.received_at, r.messages) == (at(0, 10), ("<c1>",))


def test_a_waived_request_leaves_the_ratio_but_stays_visible():
    waiver = Waiver("<c1>", by="cli: alice", seen_at=at(0, 11), reason="newsletter reply")
    evaluation = evaluate([client("c1", at(0, 10))], policy(), now=at(3), waivers=[waiver])
    r = only(evaluation)
    assert (r.status, r.waiver) == (Status.WAIVED, waiver)


def test_the_waive_keyword_on_a_copy_waives_and_the_next_client_message_opens_a_new_request():
    messages = [
        client("c1", at(0, 10), waive_keyword=True),
        client("c2", at(1, 9), subject="Re: Homepage banner", refs=("<c1>",)),
    ]
    first, second = evaluate(messages, policy(), now=at(1, 10)).requests
    assert first.status is Status.WAIVED
    assert (first.waiver.via, first.waiver.by) == (WaiverVia.KEYWORD, "alice")
    assert (second.opened_by, second.status) == ("<c2>", Status.OPEN)


def test_a_waiver_seen_after_now_does_not_count_yet():
    waiver = Waiver("<c1>", by="cli", seen_at=at(2))
    r = only(evaluate([client("c1", at(0, 10))], policy(), now=at(1, 11), waivers=[waiver]))
    assert r.status is Status.OVERDUE


def test_a_thanks_only_message_after_an_answer_is_waived_as_courtesy():
    messages = [
        client("c1", at(0, 10)),
        staff("s1", at(0, 11), refs=("<c1>",)),
        client("c2", at(0, 12), subject="Re: Homepage banner", refs=("<s1>",), courtesy=True),
    ]
    answered, thanks = evaluate(messages, policy(), now=at(3)).requests
    assert answered.status is Status.MET
    assert (thanks.status, thanks.waiver.by) == (Status.WAIVED, "mailwatch (courtesy)")


def test_courtesy_can_be_switched_off():
    messages = [
        client("c1", at(0, 10)),
        staff("s1", at(0, 11), refs=("<c1>",)),
        client("c2", at(0, 12), refs=("<s1>",), courtesy=True),
    ]
    _, thanks = evaluate(messages, policy(courtesy=False), now=at(3)).requests
    assert thanks.status is Status.OVERDUE


def test_an_unanswered_request_expires_after_fourteen_days_and_a_new_question_opens_a_new_one():
    messages = [
        client("c1", at(0, 10), subject="Thanks for the launch"),
        client("c2", at(20, 10), subject="Re: Thanks for the launch", refs=("<c1>",)),
    ]
    first, second = evaluate(messages, policy(), now=at(20, 11)).requests
    assert (first.status, first.closed_at) == (Status.OVERDUE, at(15, 10))
    assert (second.opened_by, second.status) == ("<c2>", Status.OPEN)


def test_a_request_is_open_until_its_deadline_then_overdue():
    assert only(evaluate([client("c1", at(0, 10))], policy(), now=at(1, 10))).status is Status.OPEN
    late = only(evaluate([client("c1", at(0, 10))], policy(), now=at(1, 10, 1)))
    assert (late.status, late.elapsed_seconds) == (Status.OVERDUE, 24 * H + 60)


def test_mail_that_arrived_after_now_is_not_yet_known():
    messages = [client("c1", at(0, 10)), staff("s1", at(0, 12), refs=("<c1>",))]
    r = only(evaluate(messages, policy(), now=at(0, 11)))
    assert r.status is Status.OPEN
    assert evaluate(messages, policy(), now=at(0, 9)).requests == ()


def test_an_unlisted_agency_address_never_stops_a_clock_and_is_reported():
    billing = staff("s1", at(0, 11), frm="billing@rouge.example", refs=("<c1>",))
    billing = replace(billing, copies=(Copy("billing", "INBOX", internal_date=at(0, 11)),))
    evaluation = evaluate([client("c1", at(0, 10)), billing], policy(), now=at(0, 12))
    assert only(evaluation).status is Status.OPEN
    assert evaluation.unlisted_senders == ("billing@rouge.example",)


def test_a_sender_seen_in_a_sent_folder_can_answer_even_when_not_listed():
    reply = staff("s1", at(0, 11), frm="dave@rouge.example", mailbox="dave", refs=("<c1>",))
    r = only(evaluate([client("c1", at(0, 10)), reply], policy(), now=at(1)))
    assert (r.status, r.responder) == (Status.MET, "dave@rouge.example")


def test_send_on_behalf_names_the_person_as_responder():
    reply = staff(
        "s1", at(0, 11), frm="support@rouge.example", sender="A.Smith@rouge.example", refs=("<c1>",)
    )
    r = only(evaluate([client("c1", at(0, 10)), reply], policy(), now=at(1)))
    assert r.responder == "alice@rouge.example"


def test_a_reply_addressed_to_two_accounts_answers_both_requests():
    messages = [
        client("c1", at(0, 10), cc=("ann@globex.example",)),
        client(
            "c2",
            at(0, 10, 30),
            frm="ann@globex.example",
            refs=("<c1>",),
            to=("alice@rouge.example", "jane@acme.example"),
        ),
        staff(
            "s1", at(0, 12), to=("jane@acme.example", "ann@globex.example"), refs=("<c1>", "<c2>")
        ),
    ]
    requests = evaluate(messages, policy(), now=at(2)).requests
    assert sorted((r.account, r.status) for r in requests) == [
        ("Acme Ltd", Status.MET),
        ("Globex", Status.MET),
    ]


def test_the_manager_on_leave_hands_responsibility_to_the_backups():
    on_leave = policy(leave=(leave("alice@rouge.example", date(2026, 11, 23), date(2026, 11, 27)),))
    r = only(evaluate([client("c1", at(0, 10))], on_leave, now=at(0, 11)))
    assert r.responsible == ("bob@rouge.example",)


def test_a_staff_auto_reply_makes_its_sender_absent_until_their_next_human_mail():
    ooo = staff(
        "ooo",
        at(0, 8),
        subject="Automatic reply: hello",
        to=("x@acme.example",),
        headers=(("auto-submitted", "auto-replied"),),
    )
    back = staff("back", at(1, 9), subject="Back", to=("bob@rouge.example",))
    evaluation = evaluate(
        [ooo, back, client("c1", at(0, 10)), client("c2", at(1, 10), subject="New topic")],
        policy(),
        now=at(1, 11),
    )
    first, second = evaluation.requests
    assert first.responsible == ("bob@rouge.example",)
    assert second.responsible == ("alice@rouge.example",)
    assert evaluation.absences[0].end == at(1, 9)


def test_a_message_without_any_timestamp_is_set_aside_not_crashed_on():
    untimed = replace(client("c1", at(0, 10)), date=None, copies=(Copy("import", "x"),))
    evaluation = evaluate([untimed], policy(), now=at(1))
    assert evaluation.untimed == ("<c1>",) and evaluation.requests == ()


# ---------------------------------------------------------------- business clock


@pytest.mark.parametrize(
    ("received", "deadline"),
    [
        (
            datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
            datetime(2026, 11, 23, 17, 30, tzinfo=UTC),
        ),  # Monday 09:00
        (
            datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
            datetime(2026, 11, 30, 17, 0, tzinfo=UTC),
        ),  # Friday 17:00
        (
            datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
            datetime(2026, 11, 30, 17, 30, tzinfo=UTC),
        ),  # Saturday
        (
            datetime(2026, 11, 23, 20, 0, tzinfo=UTC),
            datetime(2026, 11, 24, 17, 30, tzinfo=UTC),
        ),  # after hours
    ],
)
def test_business_clock_deadlines_follow_the_worked_examples(received, deadline):
    message = client("c1", received)
    r = only(evaluate([message], business_policy(), now=received))
    assert (r.deadline, r.target_seconds, r.clock) == (
        deadline,
        8 * H + 30 * 60,
        ClockKind.BUSINESS,
    )


def test_a_business_clock_reply_after_a_closing_time_deadline_is_met():
    # received Monday 09:00, deadline Monday 17:30; reply Monday 19:00 while closed: no business time passed
    messages = [client("c1", at(0, 9)), staff("s1", at(0, 19), refs=("<c1>",))]
    r = only(evaluate(messages, business_policy(), now=at(1)))
    assert (r.status, r.response_seconds) == (Status.MET, 8 * H + 30 * 60)


def test_the_business_clock_skips_the_weekend_and_keeps_wall_hours_across_dst():
    # Friday 23 October 2026 16:00 BST; clocks go back on Sunday 25 October; hours stay 09:00-17:30 local
    received = datetime(2026, 10, 23, 15, 0, tzinfo=UTC)  # 16:00 London
    r = only(evaluate([client("c1", received)], business_policy(), now=received))
    # 1.5 h on Friday, 7 h on Monday from 09:00 GMT (= 09:00 UTC) -> 16:00 UTC
    assert r.deadline == datetime(2026, 10, 26, 16, 0, tzinfo=UTC)


def test_a_public_holiday_is_not_a_working_day():
    import holidays

    gb = holidays.country_holidays("GB", subdiv="ENG")
    received = datetime(
        2026, 12, 24, 10, 0, tzinfo=UTC
    )  # Thursday; Friday 25 and Monday 28 are holidays
    r = only(evaluate([client("c1", received)], business_policy(holidays=gb), now=received))
    assert r.deadline == datetime(2026, 12, 29, 10, 0, tzinfo=UTC)


def test_an_agency_closure_day_is_not_a_working_day():
    received = at(0, 10)
    closed = frozenset({date(2026, 11, 24)})
    r = only(evaluate([client("c1", received)], business_policy(closed=closed), now=received))
    assert r.deadline == at(2, 10)


def test_a_critical_tier_with_its_own_calendar_clock_runs_around_the_clock():
    base = business_policy()
    critical = replace(base.tiers[0], clock=ClockKind.CALENDAR)
    saturday_outage = client("c1", at(5, 22), subject="Outage on the shop")
    r = only(evaluate([saturday_outage], replace(base, tiers=(critical,)), now=at(5, 22, 30)))
    assert (r.tier, r.clock, r.deadline) == ("critical", ClockKind.CALENDAR, at(5, 23))
