"""Answers given outside email and replies mailwatch may not have seen, in the pure clock."""

from __future__ import annotations

from mailwatch.core.clock import evaluate
from mailwatch.core.model import RecordedAnswer, Request, Status
from tests.core.factory import at, client, policy, staff


def phone_answer(key: str, when, recorded_at=None, **changes) -> RecordedAnswer:
    values = dict(
        message_key=f"<{key}>",
        at=when,
        via="phone",
        responder="bob@rouge.example",
        recorded_by="bob@rouge.example",
        recorded_at=recorded_at or when,
    )
    values.update(changes)
    return RecordedAnswer(**values)


def requests(messages, answers, now) -> tuple[Request, ...]:
    return evaluate(messages, policy(), now=now, recorded_answers=answers).requests


def test_a_phone_answer_measures_the_request_to_that_instant_like_an_email_reply():
    (r,) = requests([client("c1", at(0, 10))], [phone_answer("c1", at(0, 14))], now=at(3))
    assert (r.status, r.answered_via, r.answered_by) == (Status.MET, "phone", None)
    assert (r.answered_at, r.response_seconds, r.responder) == (
        at(0, 14),
        4 * 3600,
        "bob@rouge.example",
    )
    assert any("by phone" in note and "recorded by bob@rouge.example" in note for note in r.notes)


def test_a_phone_answer_after_the_deadline_is_a_breach():
    (r,) = requests([client("c1", at(0, 10))], [phone_answer("c1", at(1, 11))], now=at(3))
    assert r.status is Status.BREACHED


def test_an_answer_recorded_on_a_follow_up_answers_the_whole_request():
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(0, 12), subject="Re: Homepage banner", refs=("<c1>",)),
    ]
    (r,) = requests(messages, [phone_answer("c2", at(0, 13))], now=at(3))
    assert (r.opened_by, r.status, r.answered_at) == ("<c1>", Status.MET, at(0, 13))


def test_an_email_reply_before_the_phone_call_is_the_answer():
    messages = [client("c1", at(0, 10)), staff("s1", at(0, 11), refs=("<c1>",))]
    (r,) = requests(messages, [phone_answer("c1", at(0, 14))], now=at(3))
    assert (r.answered_via, r.answered_by) == ("email", "<s1>")


def test_the_client_writing_after_the_call_opens_a_new_request():
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(1, 9), subject="Re: Homepage banner", refs=("<c1>",)),
    ]
    first, second = requests(messages, [phone_answer("c1", at(0, 15))], now=at(1, 10))
    assert (first.status, first.messages) == (Status.MET, ("<c1>",))
    assert (second.opened_by, second.status) == ("<c2>", Status.OPEN)


def test_an_answer_recorded_after_now_or_taken_back_by_now_is_not_known():
    message = client("c1", at(0, 10))
    later = phone_answer("c1", at(0, 14), recorded_at=at(2))
    withdrawn = phone_answer("c1", at(0, 14), withdrawn_at=at(1), withdrawn_by="root")
    assert requests([message], [later], now=at(1, 11))[0].status is Status.OVERDUE
    assert requests([message], [withdrawn], now=at(3))[0].status is Status.OVERDUE
    assert requests([message], [withdrawn], now=at(0, 20))[0].status is Status.MET


def test_a_client_citing_agency_mail_no_folder_holds_may_have_had_a_reply():
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(1, 9), subject="Re: Homepage banner", refs=("<c1>", "<r1@rouge.example>")),
    ]
    (r,) = requests(messages, [], now=at(1, 11))
    assert (r.status, r.reply_possibly_unseen) == (Status.OVERDUE, True)


def test_a_cited_reply_that_is_held_or_not_from_the_agency_raises_no_doubt():
    reply = staff("r1@rouge.example", at(0, 11), refs=("<c1>",))
    cited = ("<c1>", "<r1@rouge.example>", "<CAx1@mail.gmail.example>")
    messages = [
        client("c1", at(0, 10)),
        client("c2", at(1, 9), subject="Re: Homepage banner", refs=cited),
    ]
    assert not any(r.reply_possibly_unseen for r in requests([*messages, reply], [], now=at(2)))
    without_agency_ref = [messages[0], client("c2", at(1, 9), refs=("<c1>", cited[2]))]
    assert not any(r.reply_possibly_unseen for r in requests(without_agency_ref, [], now=at(2)))
