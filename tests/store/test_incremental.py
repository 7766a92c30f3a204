"""Incremental evaluation: re-evaluating only what new mail touches gives the same
requests as evaluating all mail from scratch."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.clock import evaluate, status_as_of, threads_of
from mailwatch.core.model import Message, Waiver, policy_fingerprint
from mailwatch.evaluation import refresh_requests
from mailwatch.evaluation_workers import Workers
from mailwatch.requests_as_of import current_requests, waiting_requests
from mailwatch.store.repository import Store, StoredMessage
from tests.core.factory import at, client, policy, staff
from tests.core.test_properties import mailboxes
from tests.fixtures.stores import SqliteTemplate

NOW = at(30)


def settings_with(p=None) -> Settings:
    return Settings(source=Path("test.toml"), agency_name="Rouge", policy=p or policy())


def stored(messages: list[Message]) -> list[StoredMessage]:
    items = []
    for message in messages:
        for n, copy in enumerate(message.copies):
            one = replace(message, copies=(copy,))
            items.append(
                StoredMessage(one, b"X: y\r\n\r\n", location=f"{message.key}#{copy.mailbox}{n}")
            )
    return items


def from_scratch(messages: list[Message], now=NOW, waivers=()):
    return sorted(evaluate(messages, policy(), now, waivers).requests, key=_order)


def _order(request):
    return (request.received_at, request.opened_by, request.account)


def stored_requests(store: Store, now=NOW):
    return sorted((status_as_of(r, policy(), now) for r in store.requests()), key=_order)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mailboxes(), st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=6))
def test_evaluating_in_batches_gives_the_same_requests_as_all_at_once(
    migrated_sqlite: SqliteTemplate, messages, batches, part
):
    import mailwatch.evaluation as engine

    # the changes of each batch are also evaluated in parts of `part` messages (whole threads)
    with tempfile.TemporaryDirectory() as folder, patch.object(engine, "EVALUATION_BATCH", part):
        store = Store(migrated_sqlite.copy(Path(folder) / "m.db"))
        try:
            size = max(1, len(messages) // batches)
            for start in range(0, len(messages), size):
                store.add_messages(stored(messages[start : start + size]))
                refresh_requests(settings_with(), store, NOW)
            assert stored_requests(store) == from_scratch(messages)
        finally:
            store.close()


def test_a_reply_dated_after_it_arrived_reaches_as_far_in_an_incremental_evaluation(store):
    """A staff reply counts from its Date, a minute after its Sent copy arrived: that minute
    brings a chaser exactly a subject window later into its thread, here as from scratch
    (the store's search for related mail compared arrivals only)."""
    window = policy().subject_window
    first = [
        staff("s1", at(0), to=("tom@acme.example",)),
        client("c2", at(0, 0, 1) + window, "Logo files"),
    ]
    later = [
        staff("s7", at(0), to=("tom@acme.example",), date_header=at(0, 0, 1)),
        client("c8", at(0), "Logo files", refs=("<s1>",)),
    ]
    store.add_messages(stored(first))
    refresh_requests(settings_with(), store, NOW)
    store.add_messages(stored(later))
    refresh_requests(settings_with(), store, NOW)

    assert len({r.thread for r in stored_requests(store)}) == 1  # the chaser joined
    assert stored_requests(store) == from_scratch([*first, *later])


def test_a_subject_is_looked_for_as_far_as_any_mail_of_what_may_be_its_thread_reaches(store):
    """A client's reply to an old thread brings its subject into a thread a later staff
    reply keeps active: a chaser on that subject, a subject window after the staff reply,
    joins that thread here as from scratch (it was looked for only around the reply)."""
    window = policy().subject_window
    batches = [
        [staff("s0", at(0)), client("c2", at(3) + window, "Invoice 42")],
        [staff("s7", at(3))],
        [client("c8", at(0), "Invoice 42", refs=("<s0>",))],
    ]
    for batch in batches:
        store.add_messages(stored(batch))
        refresh_requests(settings_with(), store, NOW)

    assert len({r.thread for r in stored_requests(store)}) == 1  # the chaser joined
    assert stored_requests(store) == from_scratch([m for batch in batches for m in batch])


def test_mail_stored_while_a_first_evaluation_runs_waits_for_the_next_one(store, monkeypatch):
    import mailwatch.evaluation as engine

    history = [client("c1", at(0, 10)), staff("s1", at(0, 11), refs=("<c1>",))]
    chaser = client("c2", at(0, 12), subject="Re: Homepage banner", refs=("<c1>",))
    classify_everything = engine._classify_everything

    def then_a_poll_stores_more(store, workers, last):
        seen = classify_everything(store, workers, last)
        store.add_messages(stored([chaser]))  # after every message was classified
        return seen

    monkeypatch.setattr(engine, "_classify_everything", then_a_poll_stores_more)
    store.add_messages(stored(history))
    refresh_requests(settings_with(), store, NOW)
    assert stored_requests(store) == from_scratch(history)
    assert set(store.dirty_keys()) == {"<c2>"}

    monkeypatch.setattr(engine, "_classify_everything", classify_everything)
    refresh_requests(settings_with(), store, NOW)
    assert stored_requests(store) == from_scratch([*history, chaser])


def test_an_auto_reply_stored_while_a_poll_is_evaluated_is_not_taken_for_an_answer(
    store, monkeypatch
):
    import mailwatch.evaluation as engine

    question = client("c1", at(0, 10))
    store.add_messages(stored([question]))
    refresh_requests(settings_with(), store, at(0, 10, 30))
    auto_reply = staff(
        "ooo", at(0, 11), refs=("<c1>",), headers=(("auto-submitted", "auto-replied"),)
    )
    closure = engine.closure

    def a_poll_stores_more_first(store, seeds, policy):
        store.add_messages(stored([auto_reply]))  # not classified by this refresh
        return closure(store, seeds, policy)

    monkeypatch.setattr(engine, "closure", a_poll_stores_more_first)
    chaser = client("c1b", at(0, 10, 45), subject="Re: Homepage banner", refs=("<c1>",))
    store.add_messages(stored([chaser]))
    refresh_requests(settings_with(), store, NOW)

    (request,) = [r for r in stored_requests(store) if r.opened_by == "<c1>"]
    assert request.answered_by is None


def test_a_later_poll_joins_a_thread_by_a_subject_it_had_before_the_window(store):
    # the subject fallback matches a thread by any subject it ever had while its latest
    # message is within the window: here "Site down" (day 0) through the reply of day 10
    history = [
        client("c1", at(0, 10), subject="Site down"),
        staff("s1", at(0, 11), subject="Re: Site down", refs=("<c1>",)),
        staff("s2", at(10, 9), subject="Homepage banner update", refs=("<c1>",)),
    ]
    store.add_messages(stored(history))
    refresh_requests(settings_with(), store, at(10, 10))
    chaser = client("c2", at(20, 9), subject="Site down")
    store.add_messages(stored([chaser]))
    refresh_requests(settings_with(), store, NOW)

    assert stored_requests(store) == from_scratch([*history, chaser])
    assert {r.thread for r in stored_requests(store)} == {"<c1>"}


def test_a_reply_arriving_later_updates_only_its_thread(store):
    question, other = client("c1", at(0, 10)), client("c2", at(0, 11), subject="Logo files")
    store.add_messages(stored([question, other]))
    first = refresh_requests(settings_with(), store, at(0, 12))
    assert (first.messages, first.rebuilt) == (2, True)

    store.add_messages(stored([staff("s1", at(0, 13), refs=("<c1>",))]))
    second = refresh_requests(settings_with(), store, at(0, 14))

    assert (second.messages, second.rebuilt) == (2, False)  # the reply and its question
    statuses = {
        r.opened_by: r.status.value for r in current_requests(settings_with(), store, at(2))
    }
    assert statuses == {"<c1>": "met", "<c2>": "overdue"}


def test_nothing_new_evaluates_nothing(store):
    store.add_messages(stored([client("c1", at(0, 10))]))
    refresh_requests(settings_with(), store, at(0, 11))
    assert refresh_requests(settings_with(), store, at(0, 12)).messages == 0


def test_time_passing_turns_a_stored_open_request_overdue_without_re_evaluation(store):
    store.add_messages(stored([client("c1", at(0, 10))]))
    refresh_requests(settings_with(), store, at(0, 11))
    (waiting,) = waiting_requests(settings_with(), store, at(1, 11))
    assert (waiting.status.value, waiting.elapsed_seconds) == ("overdue", 25 * 3600)


def test_a_changed_policy_re_evaluates_everything(store):
    store.add_messages(stored([client("c1", at(0, 10), subject="Our site is down")]))
    refresh_requests(settings_with(), store, at(0, 11))
    stricter = policy(target=timedelta(hours=4), tiers=())
    assert policy_fingerprint(stricter) != policy_fingerprint(policy())

    again = refresh_requests(settings_with(stricter), store, at(0, 12))

    assert again.rebuilt
    (request,) = store.requests()
    assert (request.tier, request.target_seconds) == ("standard", 4 * 3600)


def test_a_waiver_marks_its_thread_for_re_evaluation(store):
    store.add_messages(stored([client("c1", at(0, 10))]))
    refresh_requests(settings_with(), store, at(0, 11))
    store.add_waiver(Waiver("<c1>", by="cli", seen_at=at(0, 12)))
    assert store.dirty_keys() == {"<c1>": 1}
    refresh_requests(settings_with(), store, at(0, 13))
    (request,) = store.requests()
    assert request.status.value == "waived"


def test_a_subject_match_pulls_the_earlier_thread_into_the_evaluation(store):
    store.add_messages(
        stored(
            [
                client("c1", at(0, 10), subject="Quote for the shop"),
                staff("s1", at(0, 11), subject="Re: Quote for the shop", refs=("<c1>",)),
            ]
        )
    )
    refresh_requests(settings_with(), store, at(0, 12))
    store.add_messages(stored([client("c2", at(2, 9), subject="RE: Quote for the shop")]))
    refresh_requests(settings_with(), store, at(2, 10))
    threads = {r.opened_by: r.thread for r in store.requests()}
    assert threads == {"<c1>": "<c1>", "<c2>": "<c1>"}


def test_an_out_of_office_reply_stored_earlier_still_hands_new_requests_to_the_backup(store):
    ooo = staff(
        "ooo",
        at(0, 8),
        subject="Automatic reply: hello",
        to=("x@acme.example",),
        headers=(("auto-submitted", "auto-replied"),),
    )
    store.add_messages(stored([ooo]))
    refresh_requests(settings_with(), store, at(0, 9))
    store.add_messages(stored([client("c1", at(0, 10))]))
    refresh_requests(settings_with(), store, at(0, 11))
    (request,) = store.requests()
    assert request.responsible == ("bob@rouge.example",)


def test_a_change_stored_while_an_evaluation_ran_stays_to_be_evaluated(store):
    store.add_messages(stored([client("c1", at(0, 10))]))
    (row,) = store.loaded_by_keys(["<c1>"])
    store.add_waiver(Waiver("<c1>", by="cli", seen_at=at(0, 11)))  # arrives mid-evaluation

    store.save_evaluation(
        marks={row.row_id: ("<c1>", row.dirty)},
        requests=[],
        threads={"<c1>"},
        state={},
    )

    assert store.dirty_keys() == {"<c1>": 2}


def test_concurrent_evaluations_take_turns_and_agree_with_one_from_scratch(store):
    import threading

    history = [client(f"c{i}", at(0, 9 + i), subject=f"Topic {i % 3}") for i in range(6)]
    history += [
        staff(f"s{i}", at(0, 10 + i), subject=f"Re: Topic {i % 3}", refs=(f"<c{i}>",))
        for i in range(6)
    ]
    errors = []

    def worker(part):
        try:
            for message in part:
                store.add_messages(stored([message]))
                refresh_requests(settings_with(), store, NOW)
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(history[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refresh_requests(settings_with(), store, NOW)

    assert errors == []
    assert stored_requests(store) == from_scratch(history)


def test_a_large_change_is_evaluated_in_bounded_batches_with_the_same_result(store, monkeypatch):
    import mailwatch.evaluation as engine

    history = [client(f"c{i}", at(0, 9, i), subject=f"Topic {i % 4}") for i in range(12)]
    history += [
        staff(f"s{i}", at(0, 10, i), subject=f"Re: Topic {i % 4}", refs=(f"<c{i}>",))
        for i in range(0, 12, 2)
    ]
    # a staff person seen sending only late in the history still answers early requests
    history += [
        staff("late", at(3), frm="dave@rouge.example", subject="Hello", to=("x@acme.example",))
    ]
    history += [
        staff("d1", at(0, 11), frm="dave@rouge.example", subject="Re: Topic 1", refs=("<c1>",))
    ]
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 3)

    store.add_messages(stored(history))
    refreshed = refresh_requests(settings_with(), store, NOW)

    assert refreshed.messages == len(history)
    assert stored_requests(store) == from_scratch(history)


def test_the_policy_fingerprint_is_the_same_in_every_process():
    import os
    import subprocess
    import sys

    script = (
        "from pathlib import Path; from mailwatch.config import load_settings;"
        "from mailwatch.core.model import policy_fingerprint;"
        "print(policy_fingerprint(load_settings(Path('config.example.toml')).policy))"
    )
    root = Path(__file__).parents[2]
    prints = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(prints) == 1


def test_stored_out_of_office_replies_make_their_sender_absent_until_their_next_human_mail(store):
    from mailwatch.evaluation import store_absences

    auto = (("auto-submitted", "auto-replied"),)
    history = [
        staff(
            "ooo1", at(0, 8), subject="Automatic reply: hello", to=("x@acme.example",), headers=auto
        ),
        staff("other", at(0, 9), frm="bob@rouge.example", subject="Hi", to=("x@acme.example",)),
        staff("back", at(1, 9), subject="Back", to=("bob@rouge.example",)),
        staff(
            "ooo2", at(5, 8), subject="Automatic reply: again", to=("x@acme.example",), headers=auto
        ),
    ]
    store.add_messages(stored(history))
    refresh_requests(settings_with(), store, NOW)

    absences = store_absences(store, policy(), at(0), NOW)

    assert [(a.who, a.start, a.end, a.evidence) for a in absences] == [
        ("alice@rouge.example", at(0, 8), at(1, 9), "<ooo1>"),
        ("alice@rouge.example", at(5, 8), at(5, 8) + policy().absence_max, "<ooo2>"),
    ]


def test_the_subject_window_around_times_at_the_ends_of_the_calendar_does_not_overflow(store):
    # times no longer trusted when stored, but a database from before may hold them
    last = datetime.max.replace(tzinfo=UTC)
    first = datetime.min.replace(tzinfo=UTC)
    store.add_messages(
        stored(
            [
                client("late", last, subject="Quote"),
                client("late-too", last - timedelta(days=3), subject="Re: Quote"),
                client("early", first, subject="Quote"),
            ]
        )
    )

    span = store.arrival_span({"<late>", "<early>"})
    assert span == (first, last)

    related = store.related_keys({"<late>", "<early>"}, [({"quote"}, *span)], timedelta(days=14))

    assert related == {"<late>", "<late-too>", "<early>"}


@st.composite
def linked_mailboxes(draw):
    """Random histories with conversation keys, and second copies arriving days later."""
    messages = []
    for message in draw(mailboxes()):
        if draw(st.integers(0, 3)) == 0:
            message = replace(message, thread_index=draw(st.sampled_from(["aa", "bb"])))
        copies = message.copies
        if draw(st.integers(0, 3)) == 0:
            copies = (replace(copies[0], gm_thrid=draw(st.sampled_from(["1", "2"]))),)
        if draw(st.integers(0, 3)) == 0:
            later = copies[0].internal_date + timedelta(days=draw(st.integers(1, 9)))
            copies += (replace(copies[0], mailbox="bob", internal_date=later),)
        messages.append(replace(message, copies=copies))
    return messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linked_mailboxes(), st.integers(min_value=0, max_value=25), st.integers(1, 4))
def test_a_first_evaluation_threads_every_message_group_by_group_into_whole_threads(
    migrated_sqlite: SqliteTemplate, messages, day, part
):
    import mailwatch.evaluation as engine

    now = at(day)
    with tempfile.TemporaryDirectory() as folder, patch.object(engine, "EVALUATION_BATCH", part):
        store = Store(migrated_sqlite.copy(Path(folder) / "m.db"))
        try:
            store.add_messages(stored(messages))
            with Workers(settings_with(), store, processes=0) as workers:
                engine._classify_everything(store, workers, store.last_row_id())
            outside = store.outside_time_order(now)
            late = engine._known_late(store, Directory(policy()), now, outside)
            parts = [list(p) for p in engine._parts_of_all_threads(store, policy(), now, late)]
            # the rest (untimed, not arrived by `now`) is evaluated alone: every message once
            threaded = {row.row_id for row, _ in late}
            alone = [i for i in outside if i not in threaded]
            rest = [row.message.key for row in store.loaded_by_ids(alone)]
            every = sorted({m.key for m in messages})
            assert sorted([*rest, *(k for p in parts for k in p)]) == every
            part_of = {key: n for n, p in enumerate(parts) for key in p}
            part_of.update({key: -1 - n for n, key in enumerate(rest)})  # each one alone
            # the mail as stored (two copies of one key in one folder are one copy there)
            for thread in threads_of(store.messages_by_keys(every), policy(), now):
                assert len({part_of[key] for key in thread}) == 1
        finally:
            store.close()
