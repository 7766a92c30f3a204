"""A long first sync parses in a process of its own, batches ahead of the storing: against
the real Dovecot, it stores exactly what a poll parsing in its own process stores, and a
stop or a server lost midway loses and doubles nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from mailwatch import sync_batches
from mailwatch.adapters.imap import MailboxError, OpenFolder
from mailwatch.config import Settings
from mailwatch.core.model import Account, Policy, policy_fingerprint
from mailwatch.evaluation_parts import classified, save_classified
from mailwatch.progress import Progress
from mailwatch.store.repository import Store
from mailwatch.store.tables import MESSAGES
from mailwatch.sync import SyncHistory, poll_all, poll_mailbox
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings
from tests.test_sync import StopAfterFirstBatch

pytestmark = pytest.mark.dovecot


class CountedPool(ProcessPoolExecutor):
    """The parsing process's pool, counted as it is started, and the most alive at once."""

    started = alive = most_alive = 0
    lock = threading.Lock()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        with CountedPool.lock:
            CountedPool.started += 1
            CountedPool.alive += 1
            CountedPool.most_alive = max(CountedPool.most_alive, CountedPool.alive)
        self._counted = True

    def shutdown(self, *args, **kwargs) -> None:
        super().shutdown(*args, **kwargs)
        with CountedPool.lock:
            if self._counted:
                CountedPool.alive -= 1
                self._counted = False


def parse_apart(monkeypatch: pytest.MonkeyPatch) -> type[CountedPool]:
    """From now on every poll parses in a process of its own, however few its new messages."""
    CountedPool.started = CountedPool.alive = CountedPool.most_alive = 0
    monkeypatch.setattr(sync_batches, "PARSE_APART_FROM", 0)
    monkeypatch.setattr(sync_batches, "ProcessPoolExecutor", CountedPool)
    return CountedPool


@pytest.fixture
def parsing_apart(monkeypatch: pytest.MonkeyPatch) -> type[CountedPool]:
    return parse_apart(monkeypatch)


def a_store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    return store


def mixed_mailbox(dovecot):
    """Client questions, replies (one only thanks), staff replies in Sent, a message with the
    waive keyword and one with no header at all: every path of a batch."""
    user = dovecot.new_user("alice")
    reply = "In-Reply-To: <r0@agency.test>\r\n"
    inbox = [
        mail("<q0@acme.example>"),
        mail("<t1@acme.example>", subject="Re: Banner", body="Thanks, perfect!", extra=reply),
        b"\r\n\r\nno header at all\r\n",
        mail("<q3@acme.example>", body="Thanks! And the logo?", extra=reply),
        mail("<q4@acme.example>", subject="Invoice"),
        mail("<t5@acme.example>", subject="Re: Invoice", body="Thank you!", extra=reply),
        mail("<q6@acme.example>", subject="Outage"),
    ]
    for number, raw in enumerate(inbox):
        flags = ("$NoReplyNeeded",) if number == 4 else ()
        dovecot.append(user, "INBOX", raw, hours_ago(20 - number), flags)
    for number in range(5):
        staff = mail(f"<s{number}@agency.test>", sender="alice@agency.test", extra=reply)
        dovecot.append(user, "Sent", staff, hours_ago(10 - number))
    return user


def agency(dovecot, user, tmp_path, **sync_changes) -> Settings:
    return Settings(
        source=Path("mailwatch.toml"),
        agency_name="Agency",
        policy=Policy(
            agency_domains=("agency.test",), accounts=(Account("Acme", domains=("acme.example",)),)
        ),
        mailboxes=(mailbox_settings(dovecot, user, tmp_path),),
        sync=sync_settings(**sync_changes),
    )


def stored(store: Store) -> tuple[object, ...]:
    messages = sorted(store.load_messages(), key=lambda message: message.key)
    return (
        messages,
        [(q.location, q.error) for q in store.quarantined()],
        [store.checkpoint("alice", folder) for folder in ("INBOX", "Sent")],
    )


def test_a_sync_parsed_in_a_process_of_its_own_stores_what_one_parsed_in_the_polling_process_stores(
    dovecot, tmp_path, monkeypatch
):
    user = mixed_mailbox(dovecot)
    settings = agency(dovecot, user, tmp_path, batch_size=2)
    in_process = a_store(tmp_path / "in-process.db")
    poll_all(settings, in_process, NOW)
    pool = parse_apart(monkeypatch)
    apart = a_store(tmp_path / "apart.db")

    results = poll_all(settings, apart, NOW)

    assert pool.started == 2  # one per folder
    assert [(f.folder, f.fetched, f.quarantined) for f in results[0].folders] == [
        ("Sent", 5, 0),
        ("INBOX", 7, 1),
    ]
    assert stored(apart) == stored(in_process)
    courteous = {m.key for m in apart.load_messages() if m.courtesy}
    assert courteous == {"<t1@acme.example>", "<t5@acme.example>"}
    (waived,) = [m for m in apart.load_messages() if m.copies[0].waive_keyword]
    assert waived.key == "<q4@acme.example>"


def test_a_sync_parsing_apart_stopped_midway_keeps_whole_batches_and_goes_on_from_there(
    dovecot, store, tmp_path, parsing_apart
):
    user = dovecot.new_user("alice")
    for number in range(30):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(30 - number))
    stopping = threading.Event()
    history = SyncHistory(
        keeps_sessions=False, progress=Progress(lambda *_: stopping.set(), 0.0, shown_from=1)
    )
    history.stopping = stopping
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))

    stopped = poll_mailbox(settings, sync_settings(batch_size=5), store, NOW, history)
    after_stop = sorted(m.key for m in store.load_messages())
    checkpoint = store.checkpoint("alice", "INBOX")
    resumed = poll_mailbox(settings, sync_settings(batch_size=5), store, NOW)

    assert [(f.fetched, f.finished) for f in stopped.folders] == [(5, False)]
    # the batches parsed ahead of the stop were not stored: the checkpoint is the first one's
    assert len(after_stop) == 5 and checkpoint is not None and checkpoint.last_uid == 5
    assert (resumed.fetched, resumed.new_messages) == (25, 25)
    assert [len(m.copies) for m in store.load_messages()] == [1] * 30
    assert parsing_apart.started == 2


def test_a_server_lost_while_batches_are_parsed_ahead_keeps_those_fetched_before_it(
    dovecot, store, tmp_path, parsing_apart
):
    user = dovecot.new_user("alice")
    for number in range(12):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(12 - number))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))

    try:
        lost = poll_mailbox(
            settings, sync_settings(batch_size=2), StopAfterFirstBatch(store, dovecot), NOW
        )
        stored_while_down = sorted(m.key for m in store.load_messages())
        checkpoint = store.checkpoint("alice", "INBOX")
    finally:
        dovecot.start()
    resumed = poll_mailbox(settings, sync_settings(batch_size=2), store, NOW)

    assert lost.error is not None and not lost.permanent
    # the server went after the first batch was stored, while the next ones were fetched
    # (three, or four if the fetching thread was quicker than the stop): those are stored
    # too (they need nothing more from it), in order, with their checkpoints
    (folder,) = lost.folders
    assert folder.fetched in (8, 10) and not folder.finished
    assert len(stored_while_down) == folder.fetched
    assert checkpoint is not None and checkpoint.last_uid == folder.fetched
    assert (resumed.error, resumed.fetched) == (None, 12 - folder.fetched)
    messages = store.load_messages()
    assert sorted(m.key for m in messages) == sorted(f"<m{n}@acme.example>" for n in range(12))
    assert all(len(message.copies) == 1 for message in messages)


def test_a_check_failing_after_the_last_fetch_keeps_the_batches_checked_before_it(
    dovecot, store, tmp_path, parsing_apart, monkeypatch
):
    # client replies: each batch's check fetches their first body bytes, the fifth fails
    user = dovecot.new_user("alice")
    reply = "In-Reply-To: <r0@agency.test>\r\n"
    for number in range(12):
        raw = mail(f"<m{number}@acme.example>", body="Thanks!", extra=reply)
        dovecot.append(user, "INBOX", raw, hours_ago(12 - number))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))
    checks = []
    body_prefixes = OpenFolder.body_prefixes

    def failing_from_the_fifth(opened, uids):
        checks.append(uids)
        if len(checks) >= 5:
            raise MailboxError("connection lost", permanent=False)
        return body_prefixes(opened, uids)

    monkeypatch.setattr(OpenFolder, "body_prefixes", failing_from_the_fifth)
    lost = poll_mailbox(settings, sync_settings(batch_size=2), store, NOW)
    checkpoint = store.checkpoint("alice", "INBOX")

    # the six batches were fetched before the fifth was checked: the four checked are stored
    assert lost.error is not None and len(checks) == 5
    assert [(f.fetched, f.finished) for f in lost.folders] == [(8, False)]
    assert checkpoint is not None and checkpoint.last_uid == 8
    assert len(store.load_messages()) == 8


class StopsTheService:
    """The real store; after the first batch is stored, systemd's stop: SIGTERM to every
    process of the service (the parsing process too); the daemon's stop event is seen some
    batches later, as a signal handler and the polling thread take their time."""

    def __init__(self, store: Store, stopping: threading.Event) -> None:
        self._store = store
        self._stopping = stopping
        self._batches = 0

    def add_messages(self, batch, checkpoint=None, policy=None):
        added = self._store.add_messages(batch, checkpoint, policy)
        self._batches += 1
        if self._batches == 1:
            children = multiprocessing.active_children()
            for child in children:
                os.kill(child.pid, signal.SIGTERM)
            for child in children:
                child.join(timeout=2)  # dead by now, unless it leaves stopping to us
        elif self._batches == 4:
            self._stopping.set()
        return added

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_service_stop_during_a_sync_parsing_apart_is_a_clean_stop(
    dovecot, store, tmp_path, parsing_apart
):
    user = dovecot.new_user("alice")
    for number in range(20):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(20 - number))
    history = SyncHistory(keeps_sessions=False)
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))

    stopped = poll_mailbox(
        settings,
        sync_settings(batch_size=2),
        StopsTheService(store, history.stopping),
        NOW,
        history,
    )
    resumed = poll_mailbox(settings, sync_settings(batch_size=2), store, NOW)

    assert stopped.error is None
    assert [(f.fetched, f.finished, f.error) for f in stopped.folders] == [(8, False, None)]
    assert (resumed.error, resumed.fetched, resumed.new_messages) == (None, 12, 12)
    assert [len(m.copies) for m in store.load_messages()] == [1] * 20


def test_the_first_polls_of_many_mailboxes_at_once_start_one_parsing_process_at_a_time(
    dovecot, store, tmp_path, parsing_apart
):
    settings = []
    for name in ("alice", "bob", "carol"):
        user = dovecot.new_user(name)
        for number in range(12):
            raw = mail(f"<{name}{number}@acme.example>")
            dovecot.append(user, "INBOX", raw, hours_ago(12 - number))
        settings.append(mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",)))
    threads = [
        threading.Thread(target=poll_mailbox, args=(s, sync_settings(batch_size=2), store, NOW))
        for s in settings
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(store.load_messages()) == 36
    assert parsing_apart.most_alive == 1


def test_a_few_new_messages_are_parsed_in_the_polling_process(
    dovecot, store, tmp_path, monkeypatch
):
    monkeypatch.setattr(sync_batches, "ProcessPoolExecutor", CountedPool)
    CountedPool.started = 0
    user = mixed_mailbox(dovecot)

    poll_all(agency(dovecot, user, tmp_path), store, NOW)

    assert CountedPool.started == 0
    assert len(store.load_messages()) == 11


def classification_columns(store: Store) -> dict[str, tuple[object, ...]]:
    columns = ("key", "role", "responder", "at", "automated", "out_of_office", "classified_under")
    with store.engine.connect() as conn:
        rows = conn.execute(select(*(MESSAGES.c[c] for c in columns)))
        return {row[0]: tuple(row[1:]) for row in rows}


def test_a_poll_stores_each_message_classified_as_the_evaluation_classifies_it_read_back(
    dovecot, tmp_path, monkeypatch
):
    user = mixed_mailbox(dovecot)
    away = mail(
        "<ooo@agency.test>", sender="alice@agency.test", extra="Auto-Submitted: auto-replied\r\n"
    )
    dovecot.append(user, "INBOX", away, hours_ago(3))
    settings = agency(dovecot, user, tmp_path, batch_size=2)
    parse_apart(monkeypatch)
    store = a_store(tmp_path / "apart.db")

    poll_all(settings, store, NOW)
    as_stored = classification_columns(store)
    rows = store.loaded_between(0, store.last_row_id(), except_classified_under="another policy")
    found = classified(settings, rows)
    save_classified(store, found)

    policy = policy_fingerprint(settings.policy)
    assert len(as_stored) == 12
    assert {under for *_, under in as_stored.values()} == {policy}
    assert classification_columns(store) == as_stored
    roles = {key: role for key, (role, *_) in as_stored.items()}
    assert roles["<q0@acme.example>"] == "client" and roles["<s0@agency.test>"] == "staff"
    automated, out_of_office = as_stored["<ooo@agency.test>"][3:5]
    assert automated and out_of_office
