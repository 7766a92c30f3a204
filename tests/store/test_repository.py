"""The store on real SQLite and PostgreSQL databases (the `store` fixture runs each test on both)."""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, text

from mailwatch.core.model import (
    Checkpoint,
    ClockKind,
    Copy,
    Message,
    Request,
    Status,
    Waiver,
)
from mailwatch.core.periods import Period
from mailwatch.core.stats import Outcome
from mailwatch.store.evaluation import StoredOutcome
from mailwatch.store.repository import Store, StoredMessage
from mailwatch.store.rows import request_rows
from mailwatch.store.tables import COPIES, MESSAGES, QuarantineRow

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
READS = re.compile(r"SCAN|SEARCH|Scan")  # a table read in SQLite's and PostgreSQL's plans


def imap_copy(
    key: str,
    mailbox: str = "alice",
    folder: str = "INBOX",
    uid: int = 1,
    uidvalidity: int = 7,
    at: datetime = T0,
    **copy_fields: object,
) -> StoredMessage:
    message = Message(
        key=key,
        from_addr="client@acme.example",
        from_name="Client",
        to=("alice@rouge.example",),
        cc=("bob@rouge.example", "carol@rouge.example"),
        subject=f"About {key}",
        date=at - timedelta(minutes=1),
        received_time=at - timedelta(seconds=30),
        in_reply_to=("<parent@acme.example>",),
        references=("<root@acme.example>", "<parent@acme.example>"),
        thread_index="0a1b2c",
        headers=(("subject", f"About {key}"), ("received", "from a"), ("received", "from b")),
        courtesy=False,
        copies=(Copy(mailbox=mailbox, folder=folder, internal_date=at, **copy_fields),),  # type: ignore[arg-type]
    )
    raw = f"Subject: About {key}\r\nMessage-ID: {key}\r\n\r\n".encode()
    return StoredMessage(message, raw, uidvalidity=uidvalidity, uid=uid, location="")


def file_copy(key: str, location: str, at: datetime = T0) -> StoredMessage:
    message = Message(
        key=key,
        from_addr="client@acme.example",
        date=at,
        copies=(Copy(mailbox="archive", folder="import", envelope_time=at),),
    )
    return StoredMessage(message, b"Subject: x\r\n", location=location)


def a_request(thread: str, received_at: datetime, **fields: object) -> Request:
    values: dict[str, object] = {
        "account": "Acme Ltd",
        "thread": thread,
        "subject": "Site down",
        "opened_by": thread,
        "received_at": received_at,
        "messages": (thread, "<second@acme.example>"),
        "tier": "default",
        "clock": ClockKind.CALENDAR,
        "target_seconds": 86400,
        "deadline": received_at + timedelta(days=1),
        "responsible": ("alice@rouge.example", "bob@rouge.example"),
        "status": Status.OPEN,
    }
    values.update(fields)
    return Request(**values)  # type: ignore[arg-type]


def raw_headers(store: Store, key: str) -> bytes:
    """The raw header block stored with a message."""
    with store.engine.connect() as conn:
        packed = conn.scalar(select(MESSAGES.c.raw_headers).where(MESSAGES.c.key == key))
    return zlib.decompress(packed)


def known_uids(store: Store, mailbox: str, folder: str, uidvalidity: int) -> set[int]:
    """The UIDs stored for the folder under this UIDVALIDITY."""
    query = select(COPIES.c.uid).where(
        COPIES.c.mailbox == mailbox, COPIES.c.folder == folder, COPIES.c.uidvalidity == uidvalidity
    )
    with store.engine.connect() as conn:
        return set(conn.scalars(query))


def replace_requests(store: Store, requests: list[Request], evaluated_at: datetime) -> None:
    """Every stored request swapped for `requests`: an evaluation of all their threads."""
    threads = {r.thread for r in store.requests()} | {r.thread for r in requests}
    store.save_evaluation({}, request_rows(requests, evaluated_at, store.dialect), threads, {})


# ---------------------------------------------------------------- messages


def test_a_message_seen_in_two_mailboxes_comes_back_exactly_with_all_its_copies(store: Store):
    inbox = imap_copy("<m1@acme.example>", "alice", "INBOX", uid=10)
    sent = imap_copy(
        "<m1@acme.example>", "bob", "Sent", uid=3, at=T0 + timedelta(minutes=5), sent_folder=True
    )
    waived = imap_copy(
        "<m1@acme.example>",
        "bob",
        "No reply needed",
        uid=4,
        waive_folder=True,
        waive_seen_at=T0 + timedelta(hours=1),
        gm_thrid="1234567890",
    )

    assert store.add_messages([inbox, sent, waived]) == 1

    (loaded,) = store.load_messages()
    expected = inbox.message.copies + sent.message.copies + waived.message.copies
    assert loaded == replace(inbox.message, copies=expected)
    assert loaded.copies[0].internal_date.tzinfo is not None
    assert raw_headers(store, "<m1@acme.example>") == inbox.raw_headers


def test_adding_the_same_batch_again_adds_nothing(store: Store):
    batch = [imap_copy(f"<m{i}@acme.example>", uid=i) for i in range(1, 6)]
    batch += [file_copy("<f1@acme.example>", "/mail/old.mbox#1")]

    assert store.add_messages(batch) == 6
    assert store.add_messages(batch) == 0
    assert store.add_messages(list(reversed(batch))) == 0

    messages = store.load_messages()
    assert len(messages) == 6
    assert all(len(message.copies) == 1 for message in messages)


def test_a_copy_of_a_known_message_in_another_mailbox_only_adds_a_copy(store: Store):
    store.add_messages([imap_copy("<m1@acme.example>", "alice", uid=1)])

    assert store.add_messages([imap_copy("<m1@acme.example>", "bob", uid=1)]) == 0

    (message,) = store.load_messages()
    assert [copy.mailbox for copy in message.copies] == ["alice", "bob"]


def test_a_batch_and_its_checkpoint_are_saved_together(store: Store):
    checkpoint = Checkpoint("alice", "INBOX", uidvalidity=7, last_uid=2, uidnext=3)

    store.add_messages([imap_copy("<m1@acme.example>", uid=1)], checkpoint)

    assert store.checkpoint("alice", "INBOX") == checkpoint
    assert known_uids(store, "alice", "INBOX", 7) == {1}


def test_a_failure_mid_batch_saves_neither_the_messages_nor_the_checkpoint(store: Store):
    good = imap_copy("<m1@acme.example>", uid=1)
    # a naive datetime is refused as the copy rows are built, after the message rows went in
    bad = imap_copy("<m2@acme.example>", uid=2, waive_seen_at=datetime(2026, 3, 2, 9, 0))

    with pytest.raises(Exception, match="timezone"):
        store.add_messages([good, bad], Checkpoint("alice", "INBOX", uidvalidity=7, last_uid=2))

    assert store.load_messages() == []
    assert store.checkpoint("alice", "INBOX") is None


def test_saving_a_checkpoint_again_moves_it_forward(store: Store):
    store.add_messages([], Checkpoint("alice", "INBOX", uidvalidity=7, last_uid=10))
    store.add_messages([], Checkpoint("alice", "INBOX", uidvalidity=7, last_uid=25, uidnext=26))

    assert store.checkpoint("alice", "INBOX") == Checkpoint("alice", "INBOX", 7, 25, 26)
    assert store.checkpoint("alice", "Sent") is None


def test_uids_and_uidvalidity_beyond_signed_32_bits_are_kept(store: Store):
    big = 2**32 - 1
    store.add_messages(
        [imap_copy("<m1@acme.example>", uid=big, uidvalidity=big)],
        Checkpoint("alice", "INBOX", uidvalidity=big, last_uid=big, highestmodseq=2**63 - 1),
    )

    assert known_uids(store, "alice", "INBOX", big) == {big}
    assert store.checkpoint("alice", "INBOX").highestmodseq == 2**63 - 1


def test_load_messages_leaves_out_mail_that_arrived_after_the_given_instant(store: Store):
    store.add_messages(
        [
            imap_copy("<early@acme.example>", uid=1, at=T0),
            imap_copy("<late@acme.example>", uid=2, at=T0 + timedelta(hours=2)),
        ]
    )

    keys = [message.key for message in store.load_messages(T0 + timedelta(hours=1))]

    assert keys == ["<early@acme.example>"]


def test_a_later_copy_with_an_earlier_time_moves_the_arrival_back(store: Store):
    store.add_messages([imap_copy("<m1@acme.example>", "alice", uid=1, at=T0)])
    store.add_messages([imap_copy("<m1@acme.example>", "bob", uid=1, at=T0 - timedelta(hours=3))])

    assert len(store.load_messages(T0 - timedelta(hours=2))) == 1


def test_an_imported_copy_arrives_at_its_top_received_header_not_its_later_mbox_line(
    store: Store,
):
    exported = Copy("archive", "import", envelope_time=T0 + timedelta(days=5), received_time=T0)
    message = Message(key="<m1@acme.example>", from_addr="client@acme.example", copies=(exported,))
    store.add_messages([StoredMessage(message, b"Subject: x\r\n", location="a.mbox#1")])

    assert len(store.load_messages(T0 + timedelta(hours=1))) == 1


def test_each_copy_keeps_its_own_received_time_so_the_earliest_arrival_counts(store: Store):
    def delivered(mailbox: str, at: datetime) -> StoredMessage:
        copy = Copy(mailbox, "INBOX", received_time=at)
        message = Message(key="<m1@acme.example>", received_time=at, copies=(copy,))
        return StoredMessage(message, b"Subject: x\r\n", location=f"{mailbox}/1.eml")

    store.add_messages([delivered("alice", T0 + timedelta(hours=3))])
    store.add_messages([delivered("info", T0)])

    (loaded,) = store.load_messages()
    assert sorted(c.received_time for c in loaded.copies) == [T0, T0 + timedelta(hours=3)]
    assert len(store.load_messages(T0 + timedelta(hours=1))) == 1


def test_adding_a_batch_of_500_takes_a_handful_of_queries(store: Store):
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    batch = [imap_copy(f"<m{i}@acme.example>", uid=i) for i in range(500)]

    assert store.add_messages(batch, Checkpoint("alice", "INBOX", 7, 499)) == 500

    # lookups, inserts and the checkpoint; SQLAlchemy may split a 500-row INSERT in a few
    assert len(statements) <= 12


# ---------------------------------------------------------------- UIDVALIDITY and waive keywords


def test_forgetting_locations_keeps_the_messages_and_their_copies(store: Store):
    store.add_messages(
        [
            imap_copy("<m1@acme.example>", "alice", "INBOX", uid=1),
            imap_copy("<m1@acme.example>", "alice", "Archive", uid=1),
            imap_copy("<m2@acme.example>", "alice", "INBOX", uid=2),
        ]
    )
    before = store.load_messages()

    assert store.forget_locations("alice", "INBOX") == 2

    assert store.load_messages() == before
    assert known_uids(store, "alice", "INBOX", 7) == set()
    assert known_uids(store, "alice", "Archive", 7) == {1}


def test_a_message_fetched_again_under_a_new_uidvalidity_keeps_its_one_copy(store: Store):
    store.add_messages([imap_copy("<m1@acme.example>", uid=1, uidvalidity=7)])
    store.forget_locations("alice", "INBOX")

    refetched = imap_copy("<m1@acme.example>", uid=50, uidvalidity=8, at=T0 + timedelta(days=30))
    assert store.add_messages([refetched]) == 0

    (message,) = store.load_messages()
    assert len(message.copies) == 1
    assert message.copies[0].internal_date == T0  # the original INTERNALDATE is history
    assert known_uids(store, "alice", "INBOX", 8) == {50}


def test_the_waive_keyword_is_set_and_unset_among_the_checked_uids(store: Store):
    store.add_messages([imap_copy(f"<m{uid}@acme.example>", uid=uid) for uid in (1, 2, 3)])
    first_seen = T0 + timedelta(hours=1)

    assert store.set_waive_keyword("alice", "INBOX", 7, {1, 2}, {1, 2, 3}, first_seen) == 2
    assert store.set_waive_keyword("alice", "INBOX", 7, {1, 2}, {1, 2, 3}, T0 + timedelta(2)) == 0

    waived = {m.key: m.copies[0] for m in store.load_messages()}
    assert waived["<m1@acme.example>"].waive_keyword
    assert waived["<m1@acme.example>"].waive_seen_at == first_seen
    assert not waived["<m3@acme.example>"].waive_keyword

    # uid 2 lost its keyword; uid 1 was not checked this time, so it keeps it
    assert store.set_waive_keyword("alice", "INBOX", 7, set(), {2}, T0 + timedelta(days=3)) == 1

    waived = {m.key: m.copies[0] for m in store.load_messages()}
    assert waived["<m1@acme.example>"].waive_keyword
    assert not waived["<m2@acme.example>"].waive_keyword
    assert waived["<m2@acme.example>"].waive_seen_at is None


# ---------------------------------------------------------------- quarantine and waivers


def test_a_quarantined_message_is_kept_once_per_location_with_its_raw_bytes_capped(store: Store):
    huge = b"x" * (3 * 1024 * 1024)

    store.quarantine("alice/INBOX uid 9", "unparsable Date", huge, T0)
    store.quarantine("alice/INBOX uid 9", "unparsable Date", huge, T0 + timedelta(hours=1))
    store.quarantine("/mail/bad.eml", "empty", None, T0 + timedelta(hours=2))

    listed = store.quarantined()
    assert [(q.location, q.error, q.seen_at) for q in listed] == [
        ("alice/INBOX uid 9", "unparsable Date", T0),
        ("/mail/bad.eml", "empty", T0 + timedelta(hours=2)),
    ]
    with store.engine.connect() as conn:
        raw, size = conn.execute(
            select(QuarantineRow.raw, QuarantineRow.raw_size).where(
                QuarantineRow.location == "alice/INBOX uid 9"
            )
        ).one()
    assert (len(raw), size) == (1024 * 1024, len(huge))


def test_the_first_waiver_of_a_message_wins(store: Store):
    first = Waiver("<m1@acme.example>", "cli: root", T0, "handled by phone")
    store.add_waiver(first)
    store.add_waiver(Waiver("<m1@acme.example>", "keyword in alice/INBOX", T0 + timedelta(1)))
    store.add_waiver(Waiver("<m2@acme.example>", "cli: root", T0 + timedelta(2)))

    assert store.waivers() == [first, Waiver("<m2@acme.example>", "cli: root", T0 + timedelta(2))]


# ---------------------------------------------------------------- computed requests


def test_requests_round_trip_and_filter_on_received_time(store: Store):
    answered = a_request(
        "<a@acme.example>",
        T0,
        status=Status.MET,
        answered_by="<reply@rouge.example>",
        answered_at=T0 + timedelta(hours=2),
        responder="alice@rouge.example",
        response_seconds=7200,
        elapsed_seconds=7200,
        closed_at=T0 + timedelta(hours=2),
        notes=("answered by alice@ at 11:00",),
    )
    waived = a_request(
        "<b@acme.example>",
        T0 + timedelta(days=1),
        status=Status.WAIVED,
        tier="critical",
        clock=ClockKind.BUSINESS,
        waiver=Waiver("<b@acme.example>", "cli: root", T0 + timedelta(days=1, hours=1), "call"),
    )
    later = a_request("<c@acme.example>", T0 + timedelta(days=2))

    replace_requests(store, [later, answered, waived], evaluated_at=T0 + timedelta(days=3))

    assert store.requests() == [answered, waived, later]
    assert store.requests(received_since=T0 + timedelta(days=1)) == [waived, later]
    assert store.requests(received_until=T0 + timedelta(days=1)) == [answered]
    assert store.requests(T0 + timedelta(hours=1), T0 + timedelta(days=2)) == [waived]


def test_requests_of_periods_are_read_as_outcomes_and_in_full_only_those_picked(store: Store):
    answered = a_request(
        "<a@acme.example>",
        T0,
        status=Status.MET,
        answered_at=T0 + timedelta(hours=2),
        response_seconds=7200,
    )
    seen_at = T0 + timedelta(days=1, hours=1)
    waiver = Waiver("<b@acme.example>", "cli: root", seen_at, "call")
    waived = a_request(
        "<b@acme.example>", T0 + timedelta(days=1), status=Status.WAIVED, waiver=waiver
    )
    unanswered = a_request("<c@acme.example>", T0 + timedelta(days=2))
    later = a_request("<d@acme.example>", T0 + timedelta(days=3))
    before = a_request("<e@acme.example>", T0 - timedelta(days=1))
    replace_requests(store, [later, unanswered, waived, answered, before], T0 + timedelta(days=4))
    days = [
        Period("day", "", "", T0 + timedelta(days=n), T0 + timedelta(days=n + 1)) for n in range(3)
    ]

    stored, picked, after = store.requests_in_full_from(days, lambda found: not found.final)

    assert [[s.outcome for s in found] for found in stored] == [
        [Outcome("<a@acme.example>", "Acme Ltd", Status.MET, 7200)],
        [Outcome("<b@acme.example>", "Acme Ltd", Status.WAIVED, None)],
        [Outcome("<c@acme.example>", "Acme Ltd", Status.OPEN, None)],
    ]
    assert [(s.period, s.final, s.waiver_seen_at) for (s,) in stored] == [
        (0, True, None),
        (1, True, seen_at),
        (2, False, None),
    ]
    assert stored[0][0].messages == ["<a@acme.example>", "<second@acme.example>"]
    assert (picked, after) == ([unanswered], [later])


@pytest.mark.parametrize(
    "keys",
    [[], ["<a@acme.example>"], ["<a@acme.example>", "<b@acme.example>"], ['<"q"@x>', "<é\\>"]],
)
@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_a_stored_outcome_gives_its_messages_as_decoding_their_json_would(
    keys: list[str], separators: tuple[str, str]
):
    outcome = Outcome("<a@acme.example>", "Acme Ltd", Status.MET, 60)
    stored = StoredOutcome(outcome, 0, True, None, json.dumps(keys, separators=separators))

    assert stored.messages == keys


def query_plan(store: Store, marker: str, call: Callable[[], object]) -> list[str]:
    """The plan of the one statement holding `marker` that `call` runs (PostgreSQL told to
    prefer an index, as it would on more than a handful of rows)."""
    statements: list[tuple[str, object]] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def keep(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if marker in statement:
            statements.append((statement, parameters))

    call()
    event.remove(store.engine, "before_cursor_execute", keep)
    ((statement, parameters),) = statements
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.begin() as conn:
        if not sqlite:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        return [str(row[-1]) for row in conn.exec_driver_sql(explain + statement, parameters)]


def test_the_last_contact_of_each_client_is_looked_up_in_an_index_not_by_scanning_mail(
    store: Store,
):
    plan = query_plan(
        store,
        "max(message.arrived_at)",
        lambda: store.last_contacts(T0, lambda address: "Acme Ltd", ["Acme Ltd"]),
    )

    reads = [line for line in plan if " message" in line and READS.search(line)]
    assert reads and all("ix_message_human_client_mail" in line for line in reads), plan


def test_outside_senders_staff_replied_to_are_found_in_an_index_not_by_reading_the_period(
    store: Store,
):
    plan = query_plan(
        store, "message_ref", lambda: store.unconfigured_senders(T0, T0 + timedelta(days=7))
    )

    # the outside sender's mail, counted and replied to: both read from the index of it
    reads = [line for line in plan if READS.search(line) and "ix_message_human_other_mail" in line]
    assert len(reads) == 2, plan
    assert not any("ix_message_arrived_at" in line or "SCAN message" in line for line in plan)


def test_out_of_office_replies_are_found_in_their_partial_index_not_by_scanning_mail(
    store: Store,
):
    plan = query_plan(store, "out_of_office", store.out_of_office_replies)

    assert any("ix_message_out_of_office" in line for line in plan), plan
    assert not any("SCAN message" in line or "Seq Scan on message" in line for line in plan)


def test_replacing_requests_drops_the_ones_no_longer_computed(store: Store):
    replace_requests(store, [a_request("<a@acme.example>", T0)], T0)
    fresh = a_request("<b@acme.example>", T0 + timedelta(hours=1))

    replace_requests(store, [fresh], T0 + timedelta(hours=2))

    assert store.requests() == [fresh]


def test_deleting_old_messages_keeps_the_requests_computed_from_them(store: Store):
    store.add_messages(
        [
            imap_copy("<old@acme.example>", uid=1, at=T0),
            imap_copy("<new@acme.example>", uid=2, at=T0 + timedelta(days=10)),
        ]
    )
    store.quarantine("alice/INBOX uid 3", "broken", b"raw", T0)
    old = a_request("<old@acme.example>", T0)
    new = a_request("<new@acme.example>", T0 + timedelta(days=10))
    replace_requests(store, [old, new], T0 + timedelta(days=10))

    assert store.delete_messages_before(T0 + timedelta(days=5)) == 1

    assert [m.key for m in store.load_messages()] == ["<new@acme.example>"]
    assert store.quarantined() == []
    assert store.requests() == [old, new]
    # a re-evaluation that can no longer see the old thread does not erase its history
    renewed = a_request("<new@acme.example>", T0 + timedelta(days=10), status=Status.OVERDUE)
    replace_requests(store, [renewed], T0 + timedelta(days=11))
    assert store.requests() == [old, renewed]


# ---------------------------------------------------------------- claim, then act


def test_only_the_first_claim_wins(store: Store):
    assert store.claim("nudge", "<m1@acme.example>|reminder", "alice@rouge.example", T0)
    assert not store.claim("nudge", "<m1@acme.example>|reminder", "alice@rouge.example", T0)
    assert store.claim("nudge", "<m1@acme.example>|reminder", "bob@rouge.example", T0)
    assert store.claim("digest", "<m1@acme.example>|reminder", "alice@rouge.example", T0)


def test_two_threads_claiming_at_once_give_exactly_one_winner(store: Store):
    keys = [f"week:2026-W{week:02d}" for week in range(1, 21)]
    results = _claim_from_threads(store, keys)

    assert all(won.count(True) == 1 for won in zip(*results, strict=True))
    assert len(store.claims("digest")) == len(keys)


def test_two_processes_claiming_at_once_give_exactly_one_winner(store: Store, store_url: str):
    keys = [f"week:2026-W{week:02d}" for week in range(1, 21)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=claim_in_process, args=(store_url, keys, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)

    assert all(worker.exitcode == 0 for worker in workers)
    assert all(won.count(True) == 1 for won in zip(*outcomes, strict=True))


def claim_in_process(url: str, keys: list[str], barrier, results) -> None:  # noqa: ANN001
    """Runs in a spawned process: its own Store, racing the other process key by key."""
    store = Store(url)
    won = []
    for key in keys:
        barrier.wait(timeout=60)
        won.append(store.claim("digest", key, "head@rouge.example", T0))
    store.close()
    results.put(won)


def _claim_from_threads(store: Store, keys: list[str]) -> list[list[bool]]:
    barrier = threading.Barrier(2)
    results: list[list[bool]] = [[], []]

    def race(slot: int) -> None:
        for key in keys:
            barrier.wait(timeout=60)
            results[slot].append(store.claim("digest", key, "head@rouge.example", T0))

    threads = [threading.Thread(target=race, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_a_temporary_failure_releases_the_claim_for_a_retry(store: Store):
    claim = ("nudge", "<m1@acme.example>|warning", "alice@rouge.example")
    store.claim(*claim, T0)

    store.mark_failed(*claim, "421 try later", permanent=False, now=T0 + timedelta(minutes=1))

    assert store.claim(*claim, T0 + timedelta(minutes=10))
    assert not store.claim(*claim, T0 + timedelta(minutes=11))
    store.mark_sent(*claim, T0 + timedelta(minutes=12))
    (sent,) = store.claims("nudge")
    assert (sent.attempts, sent.sent_at, sent.error) == (2, T0 + timedelta(minutes=12), None)
    assert sent.claimed_at == T0 + timedelta(minutes=10)


def test_a_permanent_failure_keeps_the_claim(store: Store):
    claim = ("nudge", "<m1@acme.example>|breach", "gone@rouge.example")
    store.claim(*claim, T0)

    store.mark_failed(*claim, "550 no such user", permanent=True, now=T0 + timedelta(minutes=1))

    assert not store.claim(*claim, T0 + timedelta(hours=1))
    (failed,) = store.claims("nudge")
    assert (failed.error, failed.sent_at, failed.attempts) == ("550 no such user", None, 1)
    assert failed.failed_at == T0 + timedelta(minutes=1)


def test_marking_a_claim_that_was_never_made_is_an_error(store: Store):
    with pytest.raises(LookupError):
        store.mark_sent("nudge", "nothing", "alice@rouge.example", T0)


def test_a_lease_is_renewed_by_its_owner_and_moves_once_it_expires(store: Store):
    ttl = timedelta(minutes=5)

    assert store.acquire_lease("scheduler", "worker-a", T0, ttl)
    assert not store.acquire_lease("scheduler", "worker-b", T0 + timedelta(minutes=1), ttl)
    assert store.acquire_lease("scheduler", "worker-a", T0 + timedelta(minutes=4), ttl)
    assert not store.acquire_lease("scheduler", "worker-b", T0 + timedelta(minutes=8), ttl)
    assert store.acquire_lease("scheduler", "worker-b", T0 + timedelta(minutes=9), ttl)
    assert not store.acquire_lease("scheduler", "worker-a", T0 + timedelta(minutes=10), ttl)


def test_a_released_lease_can_be_taken_at_once(store: Store):
    ttl = timedelta(minutes=5)
    store.acquire_lease("scheduler", "worker-a", T0, ttl)

    store.release_lease("scheduler", "worker-a")

    assert store.acquire_lease("scheduler", "worker-b", T0 + timedelta(seconds=1), ttl)


# ---------------------------------------------------------------- sync health


def test_sync_states_count_consecutive_failures_until_a_success(store: Store):
    store.record_sync("alice", "INBOX", True, None, T0, fetched=12)
    store.record_sync("alice", "INBOX", False, "timeout", T0 + timedelta(minutes=2))
    store.record_sync("alice", "INBOX", False, "timeout", T0 + timedelta(minutes=4))
    store.record_sync("bob", None, False, "login refused", T0)

    alice, bob = store.sync_states()
    assert (alice.mailbox, alice.folder, alice.failures) == ("alice", "INBOX", 2)
    assert (alice.last_ok_at, alice.last_error, alice.fetched) == (T0, "timeout", 12)
    assert (bob.folder, bob.last_ok_at, bob.failures) == (None, None, 1)

    store.record_sync("alice", "INBOX", True, None, T0 + timedelta(minutes=6), fetched=1)
    alice = store.sync_states()[0]
    assert (alice.failures, alice.last_ok_at) == (0, T0 + timedelta(minutes=6))


# ---------------------------------------------------------------- concurrency of ingest


def test_two_threads_adding_the_same_batch_store_each_message_once(store: Store):
    batch = [imap_copy(f"<m{i}@acme.example>", uid=i) for i in range(200)]
    added: list[int] = []
    barrier = threading.Barrier(2)

    def ingest() -> None:
        barrier.wait(timeout=60)
        added.append(store.add_messages(batch))

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(added) == 2 and sum(added) == 200
    assert [len(m.copies) for m in store.load_messages()] == [1] * 200


# ---------------------------------------------------------------- SQLite specifics


def test_a_new_sqlite_file_is_private_and_sound(tmp_path):
    path = tmp_path / "mailwatch.db"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    store.add_messages([imap_copy("<m1@acme.example>")])

    with store.engine.connect() as conn:
        integrity = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
        busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    store.close()

    assert path.stat().st_mode & 0o777 == 0o600
    assert (integrity, journal, foreign_keys, busy) == ("ok", "wal", 1, 30000)


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path):
    path = tmp_path / "mailwatch.db"
    path.touch(mode=0o640)
    path.chmod(0o640)

    Store(f"sqlite:///{path}").upgrade()

    assert path.stat().st_mode & 0o777 == 0o640


def test_the_store_refuses_databases_other_than_sqlite_and_postgresql():
    with pytest.raises(ValueError, match="mysql"):
        Store("mysql://localhost/mailwatch")


def test_the_postgresql_server_answers(postgres_url: str):
    store = Store(postgres_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    store.close()
