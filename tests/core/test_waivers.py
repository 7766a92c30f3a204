"""A waiver covers the whole request it names, up to when it was made (response-clock.md,
Decisions 1): the chaser case, the table of ways to waive, and waivers after an answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.core.clock import evaluate
from mailwatch.core.model import Copy, Message, Status, Waiver, WaiverVia
from tests.core.factory import at, client, policy, staff
from tests.core.test_properties import NOW, mailboxes


def marked(message: Message, via: WaiverVia, seen_at: datetime) -> Message:
    """The message with a copy in the waive folder, or with the waive keyword, seen then."""
    copy = Copy(
        "bob",
        "No reply needed" if via is WaiverVia.FOLDER else "INBOX",
        internal_date=message.copies[0].internal_date,
        waive_keyword=via is WaiverVia.KEYWORD,
        waive_folder=via is WaiverVia.FOLDER,
        waive_seen_at=seen_at,
    )
    return replace(message, copies=(*message.copies, copy))


def first_and_chaser() -> list[Message]:
    return [
        client("c1", at(0, 10)),
        client("c2", at(1, 9), subject="Re: Homepage banner", refs=("<c1>",)),
    ]


@pytest.mark.parametrize("named", ["<c1>", "<c2>"])
@pytest.mark.parametrize("via", [WaiverVia.COMMAND, WaiverVia.KEYWORD, WaiverVia.FOLDER])
def test_a_waiver_of_any_client_message_covers_every_one_received_before_it(named, via):
    messages = first_and_chaser()
    waivers = []
    if via is WaiverVia.COMMAND:
        waivers.append(Waiver(named, by="alice", seen_at=at(1, 12), via=via))
    else:
        index = 0 if named == "<c1>" else 1
        messages[index] = marked(messages[index], via, at(1, 12))

    (request,) = evaluate(messages, policy(), now=at(3), waivers=waivers).requests

    assert (request.status, request.messages) == (Status.WAIVED, ("<c1>", "<c2>"))
    assert (request.waiver.message_key, request.waiver.via) == (named, via)
    assert request.closed_at == at(1, 12)


def test_waiving_the_first_message_does_not_leave_the_clients_chaser_overdue():
    waiver = Waiver("<c1>", by="alice", seen_at=at(1, 12))
    requests = evaluate(first_and_chaser(), policy(), now=at(3), waivers=[waiver]).requests
    assert [(r.opened_by, r.status) for r in requests] == [("<c1>", Status.WAIVED)]


def test_a_client_message_after_the_waiver_opens_a_new_request():
    messages = [*first_and_chaser(), client("c3", at(1, 13), refs=("<c2>",))]
    waiver = Waiver("<c1>", by="alice", seen_at=at(1, 12))
    waived, new = evaluate(messages, policy(), now=at(1, 14), waivers=[waiver]).requests
    assert (waived.messages, waived.status) == (("<c1>", "<c2>"), Status.WAIVED)
    assert (new.opened_by, new.status, new.waiver) == ("<c3>", Status.OPEN, None)


@pytest.mark.parametrize("via", [WaiverVia.KEYWORD, WaiverVia.FOLDER])
def test_a_keyword_or_folder_copy_after_the_answer_leaves_the_answer_standing(via):
    messages = [
        marked(client("c1", at(0, 10)), via, at(2)),
        staff("s1", at(1, 11), refs=("<c1>",)),
    ]
    (request,) = evaluate(messages, policy(), now=at(3)).requests
    assert (request.status, request.waiver, request.answered_by) == (Status.BREACHED, None, "<s1>")
    assert f"the {via} waiver came after the answer: the answer stands" in request.notes


def test_a_forced_command_waiver_after_the_answer_waives_it_and_keeps_the_answer_visible():
    messages = [client("c1", at(0, 10)), staff("s1", at(1, 11), refs=("<c1>",))]
    waiver = Waiver("<c1>", by="carol", seen_at=at(2), reason="client withdrew it")
    (request,) = evaluate(messages, policy(), now=at(3), waivers=[waiver]).requests
    assert (request.status, request.waiver) == (Status.WAIVED, waiver)
    assert (request.answered_by, request.response_seconds) == ("<s1>", 25 * 3600)


def test_a_waiver_made_after_the_request_expired_waives_it_closed_at_the_expiry():
    waiver = Waiver("<c1>", by="alice", seen_at=at(20))
    (request,) = evaluate(
        [client("c1", at(0, 10))], policy(), now=at(21), waivers=[waiver]
    ).requests
    assert (request.status, request.closed_at) == (Status.WAIVED, at(15, 10))


@settings(max_examples=150, deadline=None)
@given(mailboxes(), st.data())
def test_a_waiver_made_after_all_the_mail_never_adds_a_request(messages, data):
    clients = sorted({m.key for m in messages if m.from_addr and "rouge" not in m.from_addr})
    if not clients:
        return
    named = data.draw(st.sampled_from(clients))
    before = evaluate(messages, policy(), NOW).requests
    waiver = Waiver(named, by="alice", seen_at=NOW)
    after = evaluate(messages, policy(), NOW, waivers=[waiver]).requests
    assert len(after) == len(before)
    assert all(r.status is Status.WAIVED for r in after if named in r.messages)
