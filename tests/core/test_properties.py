"""Properties of the clock that must hold for any mail (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.core.addresses import Directory
from mailwatch.core.clock import evaluate, merge_copies, threads_of
from mailwatch.core.conversations import reference_groups, stream_threads, thread_messages
from mailwatch.core.model import Absence
from mailwatch.core.responsibility import AbsenceIndex
from mailwatch.core.stats import by_account
from tests.core.factory import at, client, policy, staff

SUBJECTS = ["Homepage banner", "Invoice 42", "Site down", "Question", "Logo files"]
ACME = ["jane@acme.example", "tom@acme.example"]
GLOBEX = ["ann@globex.example", "ceo@gmail.example"]
STAFF = ["alice@rouge.example", "bob@rouge.example", "carol@rouge.example", "dave@rouge.example"]


@st.composite
def mailboxes(draw, clients=ACME + GLOBEX, prefix="m"):
    """A small random history: client mail and staff replies, with references, skew and duplicates."""
    count = draw(st.integers(min_value=1, max_value=14))
    messages = []
    for i in range(count):
        key = f"{prefix}{i}"
        when = at(0) + timedelta(minutes=draw(st.integers(0, 60 * 24 * 20)))
        refs = tuple(
            f"<{prefix}{j}>"
            for j in draw(st.sets(st.integers(0, max(0, i - 1)), max_size=2))
            if j < i
        )
        subject = draw(st.sampled_from(SUBJECTS))
        if draw(st.booleans()):
            messages.append(
                client(
                    key,
                    when,
                    subject,
                    frm=draw(st.sampled_from(clients)),
                    to=(draw(st.sampled_from(STAFF)),),
                    refs=refs,
                    courtesy=draw(st.booleans()),
                )
            )
        else:
            skew = timedelta(minutes=draw(st.integers(-3000, 10)))
            messages.append(
                staff(
                    key,
                    when,
                    "Re: " + subject,
                    frm=draw(st.sampled_from(STAFF)),
                    to=tuple(
                        draw(st.sets(st.sampled_from(clients + STAFF), min_size=1, max_size=2))
                    ),
                    refs=refs,
                    date_header=when + skew,
                )
            )
        if draw(st.integers(0, 5)) == 0:
            messages.append(messages[-1])  # the same message seen twice
    return messages


NOW = at(30)


@settings(max_examples=150, deadline=None)
@given(mailboxes(), st.randoms(use_true_random=False))
def test_any_order_of_the_input_gives_identical_results(messages, random):
    shuffled = list(messages)
    random.shuffle(shuffled)
    assert evaluate(shuffled, policy(), NOW).requests == evaluate(messages, policy(), NOW).requests


@settings(max_examples=150, deadline=None)
@given(mailboxes())
def test_response_and_elapsed_times_are_never_negative(messages):
    for request in evaluate(messages, policy(), NOW).requests:
        assert request.response_seconds is None or request.response_seconds >= 0
        assert request.elapsed_seconds >= 0 and request.target_seconds > 0


@settings(max_examples=100, deadline=None)
@given(mailboxes(clients=ACME, prefix="a"), mailboxes(clients=GLOBEX, prefix="g"))
def test_mail_of_an_unrelated_account_never_changes_another_accounts_figures(acme, globex):
    alone = by_account(evaluate(acme, policy(), NOW).requests).get("Acme Ltd")
    together = by_account(evaluate(acme + globex, policy(), NOW).requests).get("Acme Ltd")
    assert alone == together


@settings(max_examples=150, deadline=None)
@given(mailboxes(), st.randoms(use_true_random=False))
def test_evaluating_whole_threads_part_by_part_gives_the_requests_of_all_at_once(messages, random):
    everything = evaluate(messages, policy(), NOW)
    threads = threads_of(messages, policy(), NOW)
    assert sorted(key for thread in threads for key in thread) == sorted({m.key for m in messages})
    parts: list[set[str]] = [set() for _ in range(random.randint(1, 4))]
    for thread in threads:
        random.choice(parts).update(thread)

    found = []
    for part in parts:
        found += evaluate(
            [m for m in messages if m.key in part],
            policy(),
            NOW,
            known_people=everything.people,
            absences=everything.absences,
        ).requests

    assert sorted(found, key=_order) == sorted(everything.requests, key=_order)


def _order(request):
    return (request.received_at, request.opened_by, request.account)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(STAFF), st.integers(0, 500), st.integers(1, 200)), max_size=30
    ),
    st.sampled_from(STAFF),
    st.integers(-10, 800),
)
def test_the_absence_index_finds_what_reading_every_absence_finds(spans, who, hour):
    absences = [
        Absence(who=person, start=at(0, start), end=at(0, start + length), evidence=f"<{n}>")
        for n, (person, start, length) in enumerate(spans)
    ]
    instant = at(0, hour) if hour >= 0 else at(0) - timedelta(hours=-hour)
    first = next((a for a in absences if a.who == who and a.start <= instant < a.end), None)
    assert AbsenceIndex(absences).covering(who, instant) == first


@settings(max_examples=200, deadline=None)
@given(mailboxes(), st.integers(0, 10))
def test_threading_streamed_group_by_group_finds_the_threads_of_threading_all_at_once(
    messages, window_days
):
    rules = replace(policy(), subject_window=timedelta(days=window_days))
    timed = merge_copies(messages)
    directory = Directory(rules)

    def accounts_of(message):
        return frozenset(directory.accounts_addressed(tuple(message.participants)))

    whole = thread_messages(timed, _time_of, accounts_of, rules).thread_of
    groups = reference_groups(timed, _time_of)
    streamed = stream_threads(iter(groups), _time_of, accounts_of, rules)
    threads = {root: sorted(keys) for root, keys in streamed}
    assert sorted(threads.values()) == sorted(_partition(whole))
    assert {k: root for root, keys in threads.items() for k in keys} == whole


def _time_of(message):
    return message.date


def _partition(thread_of):
    threads = {}
    for key, root in thread_of.items():
        threads.setdefault(root, []).append(key)
    return [sorted(keys) for keys in threads.values()]
