"""Polling a real Dovecot into the real store (SQLite and PostgreSQL, via the `store` fixture)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from mailwatch.config import Settings
from mailwatch.core.model import Message, Policy
from mailwatch.store.repository import Store
from mailwatch.sync import SyncHistory, poll_all, poll_mailbox
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings

pytestmark = pytest.mark.dovecot

NEW_COMMANDS = ("SELECT", "EXAMINE", "FETCH", "UID FETCH", "SEARCH", "UID SEARCH")


def messages_by_key(store: Store) -> dict[str, Message]:
    return {message.key: message for message in store.load_messages()}


def test_a_first_sync_stores_the_history_window_with_one_copy_each(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<old@acme.example>"), hours_ago(24 * 31))
    dovecot.append(user, "INBOX", mail("<recent@acme.example>"), hours_ago(2))
    settings = mailbox_settings(dovecot, user, tmp_path)

    result = poll_mailbox(settings, sync_settings(history_days=30), store, NOW)

    assert (result.error, result.fetched, result.new_messages) == (None, 1, 1)
    (message,) = store.load_messages()
    assert message.key == "<recent@acme.example>"
    assert message.from_addr == "carol@acme.example"
    (copy,) = message.copies
    assert (copy.mailbox, copy.folder, copy.sent_folder) == ("alice", "INBOX", False)
    assert copy.internal_date == hours_ago(2)


def test_a_later_poll_fetches_only_what_arrived_since(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<first@acme.example>"), hours_ago(3))
    settings = mailbox_settings(dovecot, user, tmp_path)
    poll_mailbox(settings, sync_settings(), store, NOW)
    dovecot.append(user, "INBOX", mail("<second@acme.example>"), hours_ago(1))

    result = poll_mailbox(settings, sync_settings(), store, NOW)

    assert [(f.folder, f.fetched, f.new_messages) for f in result.folders if f.fetched] == [
        ("INBOX", 1, 1)
    ]
    assert set(messages_by_key(store)) == {"<first@acme.example>", "<second@acme.example>"}


def test_a_poll_with_nothing_new_sends_no_select_no_search_and_no_fetch(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<a@acme.example>"), hours_ago(3))
    dovecot.append(user, "Sent", mail("<b@agency.test>", sender="alice@agency.test"), hours_ago(2))
    settings = mailbox_settings(dovecot, user, tmp_path)
    poll_mailbox(settings, sync_settings(), store, NOW)
    dovecot.clear_rawlog(user)

    result = poll_mailbox(settings, sync_settings(), store, NOW)

    commands = dovecot.commands_sent(user)
    assert result.error is None and result.fetched == 0
    assert [c for c in commands if c.startswith("STATUS")] == [
        'STATUS "Sent" (UIDVALIDITY UIDNEXT HIGHESTMODSEQ)',
        'STATUS "INBOX" (UIDVALIDITY UIDNEXT HIGHESTMODSEQ)',
    ]
    assert [c for c in commands if c.startswith(NEW_COMMANDS)] == []


def test_polling_never_changes_a_flag_not_even_seen_or_recent(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    flag_sets = [(), (b"\\Seen",), (b"\\Flagged", b"\\Answered"), (b"$NoReplyNeeded",)]
    for number, flags in enumerate(flag_sets):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(9), flags)
    dovecot.append(user, "Sent", mail("<s@agency.test>"), hours_ago(8), (b"\\Seen",))
    before = {folder: dovecot.folder_flags(user, folder) for folder in ("INBOX", "Sent")}
    settings = mailbox_settings(dovecot, user, tmp_path)

    poll_mailbox(settings, sync_settings(), store, NOW)
    after_first = {folder: dovecot.folder_flags(user, folder) for folder in ("INBOX", "Sent")}
    dovecot.append(user, "INBOX", mail("<later@acme.example>"), hours_ago(1))
    before_second = dovecot.folder_flags(user, "INBOX")
    poll_mailbox(settings, sync_settings(), store, NOW)

    assert after_first == before
    assert before["INBOX"][1] == (b"\\Recent",)  # unseen, and still unseen
    assert dovecot.folder_flags(user, "INBOX") == before_second
    assert len(store.load_messages()) == 6


def test_copies_in_the_sent_folder_are_marked_sent(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    reply = mail("<reply@agency.test>", sender="alice@agency.test", to="carol@acme.example")
    dovecot.append(user, "Sent", reply, hours_ago(1), (b"\\Seen",))
    dovecot.append(user, "INBOX", mail("<question@acme.example>"), hours_ago(2))

    poll_mailbox(mailbox_settings(dovecot, user, tmp_path), sync_settings(), store, NOW)

    messages = messages_by_key(store)
    assert [c.sent_folder for c in messages["<reply@agency.test>"].copies] == [True]
    assert [c.sent_folder for c in messages["<question@acme.example>"].copies] == [False]


def test_a_message_in_two_watched_mailboxes_is_stored_once_with_two_copies(
    dovecot, store, tmp_path
):
    alice, bob = dovecot.new_user("alice"), dovecot.new_user("bob")
    shared = mail("<cc@acme.example>", to="alice@agency.test, bob@agency.test")
    dovecot.append(alice, "INBOX", shared, hours_ago(2))
    dovecot.append(bob, "INBOX", shared, hours_ago(2) + timedelta(seconds=3))
    settings = Settings(
        source=Path("mailwatch.toml"),
        agency_name="Agency",
        policy=Policy(),
        mailboxes=(
            mailbox_settings(dovecot, alice, tmp_path),
            mailbox_settings(dovecot, bob, tmp_path),
        ),
        sync=sync_settings(),
    )

    results = poll_all(settings, store, NOW)

    assert [result.new_messages for result in results] == [1, 0]
    (message,) = store.load_messages()
    assert sorted((copy.mailbox, copy.folder) for copy in message.copies) == [
        ("alice", "INBOX"),
        ("bob", "INBOX"),
    ]


def test_a_recreated_folder_is_synced_again_without_duplicates(dovecot, store, tmp_path, caplog):
    user = dovecot.new_user("alice")
    for number in range(2):
        dovecot.append(user, "Clients", mail(f"<c{number}@acme.example>"), hours_ago(5))
    settings = mailbox_settings(dovecot, user, tmp_path)
    poll_mailbox(settings, sync_settings(), store, NOW)
    dovecot.recreate_folder(user, "Clients")  # new UIDVALIDITY, UIDs from 1 again
    for number in range(3):
        dovecot.append(user, "Clients", mail(f"<c{number}@acme.example>"), hours_ago(5))

    with caplog.at_level(logging.WARNING, logger="mailwatch.sync"):
        result = poll_mailbox(settings, sync_settings(), store, NOW)

    (clients,) = [folder for folder in result.folders if folder.folder == "Clients"]
    assert (clients.uidvalidity_changed, clients.fetched, clients.new_messages) == (True, 3, 1)
    messages = messages_by_key(store)
    assert sorted(messages) == ["<c0@acme.example>", "<c1@acme.example>", "<c2@acme.example>"]
    assert all(len(message.copies) == 1 for message in messages.values())
    assert "alice/Clients: UIDVALIDITY changed from" in caplog.text


def test_a_folder_whose_uidvalidity_keeps_changing_is_given_up_after_three_resets(
    dovecot, store, tmp_path
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "Clients", mail("<c@acme.example>"), hours_ago(5))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("Clients",))
    history = SyncHistory()  # one history across polls, as in the daemon
    poll_mailbox(settings, sync_settings(), store, NOW, history)
    results = []
    for minute in range(1, 5):
        dovecot.recreate_folder(user, "Clients")
        now = NOW + timedelta(minutes=minute)
        results.append(poll_mailbox(settings, sync_settings(), store, now, history).folders[0])

    assert [result.uidvalidity_changed for result in results] == [True, True, True, False]
    assert results[-1].error == (
        "alice/Clients: UIDVALIDITY changed more than 3 times in 24 h; "
        "not re-syncing it again today: check the server"
    )
    assert len(store.load_messages()) == 1


def test_a_server_stopped_in_the_middle_of_a_sync_loses_and_doubles_nothing(
    dovecot, store, tmp_path
):
    user = dovecot.new_user("alice")
    for number in range(5):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(5 - number))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))
    stopping = StopAfterFirstBatch(store, dovecot)

    try:
        interrupted = poll_mailbox(settings, sync_settings(batch_size=2), stopping, NOW)
        stored_while_down = len(store.load_messages())
    finally:
        dovecot.start()
    resumed = poll_mailbox(settings, sync_settings(batch_size=2), store, NOW)

    assert interrupted.error is not None and not interrupted.permanent
    assert stored_while_down == 2
    assert (resumed.error, resumed.fetched) == (None, 3)
    messages = messages_by_key(store)
    assert sorted(messages) == [f"<m{number}@acme.example>" for number in range(5)]
    assert all(len(message.copies) == 1 for message in messages.values())


class StopAfterFirstBatch:
    """The real store, with the IMAP server stopped right after the first batch is stored."""

    def __init__(self, store: Store, dovecot) -> None:
        self._store = store
        self._dovecot = dovecot

    def add_messages(self, batch, checkpoint=None):
        added = self._store.add_messages(batch, checkpoint)
        if self._dovecot.running:
            self._dovecot.stop()
        return added

    def __getattr__(self, name):
        return getattr(self._store, name)
