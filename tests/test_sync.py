"""Polling a real Dovecot into the real store (SQLite and PostgreSQL, via the `store` fixture)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from mailwatch import sync
from mailwatch.adapters.imap import ImapMailbox
from mailwatch.config import MailboxSettings, Secret, Settings
from mailwatch.core.model import Account, Message, Policy
from mailwatch.store.repository import Store
from mailwatch.sync import SyncHistory, poll_all, poll_mailbox
from tests.fixtures.dovecot import ImapUser, free_port
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings

pytestmark = pytest.mark.dovecot

NEW_COMMANDS = ("SELECT", "EXAMINE", "FETCH", "UID FETCH", "SEARCH", "UID SEARCH")


@pytest.fixture
def history() -> Iterator[SyncHistory]:
    """One history across polls, as in the daemon; its kept sessions closed afterwards."""
    kept = SyncHistory()
    yield kept
    kept.close_sessions()


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
    settings = two_mailboxes(
        mailbox_settings(dovecot, alice, tmp_path), mailbox_settings(dovecot, bob, tmp_path)
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
    dovecot, store, tmp_path, history
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "Clients", mail("<c@acme.example>"), hours_ago(5))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("Clients",))
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
    # the first batch, and the second if its fetch (in a thread, while the first was
    # stored) beat the stop
    assert stored_while_down in (2, 4)
    assert (resumed.error, resumed.fetched) == (None, 5 - stored_while_down)
    messages = messages_by_key(store)
    assert sorted(messages) == [f"<m{number}@acme.example>" for number in range(5)]
    assert all(len(message.copies) == 1 for message in messages.values())


class StopAfterFirstBatch:
    """The real store, with the IMAP server stopped right after the first batch is stored."""

    def __init__(self, store: Store, dovecot) -> None:
        self._store = store
        self._dovecot = dovecot

    def add_messages(self, batch, checkpoint=None, policy=None):
        added = self._store.add_messages(batch, checkpoint, policy)
        if self._dovecot.running:
            self._dovecot.stop()
        return added

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_the_waive_keyword_set_later_is_picked_up_and_its_removal_too(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    uid = dovecot.append(user, "INBOX", mail("<q@acme.example>"), hours_ago(3))
    settings = mailbox_settings(dovecot, user, tmp_path)
    poll_mailbox(settings, sync_settings(), store, NOW)

    dovecot.set_flags(user, "INBOX", [uid], ["$NoReplyNeeded"])
    flagged = poll_mailbox(settings, sync_settings(), store, NOW + timedelta(minutes=2))
    (copy,) = store.load_messages()[0].copies
    dovecot.remove_flags(user, "INBOX", [uid], ["$NoReplyNeeded"])
    poll_mailbox(settings, sync_settings(), store, NOW + timedelta(minutes=4))
    (copy_after_removal,) = store.load_messages()[0].copies

    assert [f.waive_changes for f in flagged.folders if f.folder == "INBOX"] == [1]
    assert (copy.waive_keyword, copy.waive_seen_at) == (True, NOW + timedelta(minutes=2))
    assert copy_after_removal.waive_keyword is False


def test_a_message_already_flagged_at_its_first_fetch_carries_the_keyword(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<q@acme.example>"), hours_ago(3), (b"$NoReplyNeeded",))

    poll_mailbox(mailbox_settings(dovecot, user, tmp_path), sync_settings(), store, NOW)

    (copy,) = store.load_messages()[0].copies
    assert (copy.waive_keyword, copy.waive_seen_at) == (True, NOW)


def test_a_copy_in_the_waive_folder_is_marked_waive_folder(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "No reply needed", mail("<q@acme.example>"), hours_ago(3))

    poll_mailbox(mailbox_settings(dovecot, user, tmp_path), sync_settings(), store, NOW)

    (copy,) = store.load_messages()[0].copies
    assert (copy.folder, copy.waive_folder, copy.waive_seen_at) == ("No reply needed", True, NOW)


def test_a_wrong_password_is_one_permanent_line_and_the_other_mailbox_still_syncs(
    dovecot, store, tmp_path, monkeypatch
):
    alice, bob = dovecot.new_user("alice"), dovecot.new_user("bob")
    dovecot.append(bob, "INBOX", mail("<for-bob@acme.example>"), hours_ago(1))
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", "wrong")
    settings = two_mailboxes(
        mailbox_settings(dovecot, alice, tmp_path, password=Secret("env MAILWATCH_ALICE_PASSWORD")),
        mailbox_settings(dovecot, bob, tmp_path),
    )

    alice_result, bob_result = poll_all(settings, store, NOW)

    assert alice_result.permanent
    assert alice_result.error == (
        "alice: login refused by 127.0.0.1: check the password "
        "(password_env MAILWATCH_ALICE_PASSWORD): server said [AUTHENTICATIONFAILED] "
        "Authentication failed."
    )
    assert (bob_result.error, bob_result.new_messages) == (None, 1)
    states = {(s.mailbox, s.folder): s for s in store.sync_states()}
    assert states[("alice", None)].last_error == alice_result.error
    assert states[("bob", None)].last_ok_at == NOW


def test_a_refused_login_is_not_retried_until_the_secret_changes_or_an_hour_passes(
    dovecot, store, tmp_path, monkeypatch, history
):
    alice = dovecot.new_user("alice")
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", "wrong")
    settings = mailbox_settings(
        dovecot, alice, tmp_path, password=Secret("env MAILWATCH_ALICE_PASSWORD")
    )
    poll_mailbox(settings, sync_settings(), store, NOW, history)
    dovecot.clear_rawlog(alice)

    same_secret = poll_mailbox(
        settings, sync_settings(), store, NOW + timedelta(minutes=5), history
    )
    an_hour_later = poll_mailbox(
        settings, sync_settings(), store, NOW + timedelta(hours=1), history
    )
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", alice.password)
    new_secret = poll_mailbox(
        settings, sync_settings(), store, NOW + timedelta(hours=1, minutes=1), history
    )

    assert same_secret.skipped == (
        "alice: login was refused at 09:00Z; waiting for a new secret or 10:00Z "
        "(`mailwatch check` or `--force-login` tries now)"
    )
    assert an_hour_later.skipped is None and an_hour_later.permanent
    assert new_secret.skipped is None and new_secret.error is None


def test_a_host_that_refuses_connections_is_backed_off_exponentially(
    dovecot, store, tmp_path, history
):
    alice = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, alice, tmp_path, port=free_port())

    attempts = []
    for seconds in (0, 20, 31, 60, 92):
        result = poll_mailbox(
            settings, sync_settings(), store, NOW + timedelta(seconds=seconds), history
        )
        attempts.append(result.skipped is None)

    # failures at 0 s (wait 30 s), 31 s (wait 1 min), then the next try at 91 s
    assert attempts == [True, False, True, False, True]


def test_a_message_that_cannot_be_parsed_is_quarantined_and_the_rest_are_stored(
    dovecot, store, tmp_path
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", b"\r\n\r\nno header at all\r\n", hours_ago(3))
    dovecot.append(user, "INBOX", mail("<fine@acme.example>"), hours_ago(2))

    result = poll_mailbox(mailbox_settings(dovecot, user, tmp_path), sync_settings(), store, NOW)

    (inbox,) = [folder for folder in result.folders if folder.folder == "INBOX"]
    assert (inbox.fetched, inbox.quarantined, inbox.new_messages) == (2, 1, 1)
    (quarantined,) = store.quarantined()
    assert quarantined.location == "alice/INBOX uid 1"
    assert "UnparsableMessage" in quarantined.error
    assert [message.key for message in store.load_messages()] == ["<fine@acme.example>"]


def two_mailboxes(*mailboxes: MailboxSettings) -> Settings:
    return Settings(
        source=Path("mailwatch.toml"),
        agency_name="Agency",
        policy=Policy(),
        mailboxes=mailboxes,
        sync=sync_settings(),
    )


def test_only_a_client_reply_has_its_first_body_bytes_read_and_a_thanks_is_marked_courtesy(
    dovecot, store, tmp_path
):
    user = dovecot.new_user("alice")
    thanks = mail(
        "<t1@acme.example>",
        subject="Re: Homepage banner",
        body="Thanks, perfect!",
        extra="In-Reply-To: <r0@agency.test>\r\n",
    )
    question = mail(
        "<q1@acme.example>",
        body="Thanks! Can you also move the logo?",
        extra="In-Reply-To: <r0@agency.test>\r\n",
    )
    fresh = mail("<n1@acme.example>", subject="New topic", body="Thanks!")
    for number, raw in enumerate((thanks, question, fresh)):
        dovecot.append(user, "INBOX", raw, hours_ago(3 - number))
    settings = replace(
        two_mailboxes(mailbox_settings(dovecot, user, tmp_path)),
        policy=Policy(
            agency_domains=("agency.test",), accounts=(Account("Acme", domains=("acme.example",)),)
        ),
    )

    poll_all(settings, store, NOW)

    courtesy = {key: m.courtesy for key, m in messages_by_key(store).items()}
    assert courtesy == {
        "<t1@acme.example>": True,
        "<q1@acme.example>": False,
        "<n1@acme.example>": False,
    }
    body_fetches = [c for c in dovecot.commands_sent(user) if "BODY.PEEK[TEXT]" in c.upper()]
    assert len(body_fetches) == 1  # one small FETCH, for the two client replies only
    assert body_fetches[0].startswith(("UID FETCH 1:2 ", "UID FETCH 1,2 "))


def polled_once(dovecot, store, tmp_path, history) -> tuple[ImapUser, MailboxSettings]:
    """A new user's mailbox, polled once: its session is kept in `history`."""
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path)
    poll_mailbox(settings, sync_settings(), store, NOW, history)
    return user, settings


def test_polls_sharing_a_history_reuse_one_login_and_still_see_new_mail(
    dovecot, store, tmp_path, history
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<first@acme.example>"), hours_ago(3))
    settings = mailbox_settings(dovecot, user, tmp_path)
    dovecot.clear_rawlog(user)

    poll_mailbox(settings, sync_settings(), store, NOW, history)
    idle = poll_mailbox(settings, sync_settings(), store, NOW, history)
    logins_by_polls = dovecot.sessions_opened(user)
    dovecot.append(user, "INBOX", mail("<second@acme.example>"), hours_ago(1))  # its own login
    later = poll_mailbox(settings, sync_settings(), store, NOW, history)

    # one short session lists the folders, the kept one never does (see SyncHistory._open)
    assert (logins_by_polls, dovecot.sessions_opened(user)) == (2, 3)
    assert (idle.error, idle.fetched, later.error, later.new_messages) == (None, 0, None, 1)
    commands = dovecot.commands_sent(user)
    assert commands.count('LIST "" "*"') == 1  # the append helper lists INBOX only
    assert commands.count("LOGOUT") == 2  # the lister's and the append's
    history.close_sessions()
    assert dovecot.commands_sent(user).count("LOGOUT") == 3


def test_a_kept_session_the_server_dropped_is_replaced_without_a_failed_poll(
    dovecot, store, tmp_path, history
):
    user, settings = polled_once(dovecot, store, tmp_path, history)
    dovecot.stop()  # every session ends with the server
    dovecot.start()
    dovecot.append(user, "INBOX", mail("<after@acme.example>"), hours_ago(1))

    result = poll_mailbox(settings, sync_settings(), store, NOW, history)

    assert (result.error, result.new_messages) == (None, 1)
    history.close_sessions()


def test_a_kept_session_that_breaks_after_answering_noop_is_replaced_once(
    dovecot, store, tmp_path, monkeypatch, history
):
    user, settings = polled_once(dovecot, store, tmp_path, history)
    dovecot.append(user, "INBOX", mail("<after@acme.example>"), hours_ago(1))
    broken = history.sessions[settings.name].connection
    # the NOOP answered, then the connection died before the first STATUS
    monkeypatch.setattr(type(broken), "alive", lambda self: True)
    broken._client.socket().shutdown(socket.SHUT_RDWR)

    result = poll_mailbox(settings, sync_settings(), store, NOW, history)

    assert (result.error, result.new_messages) == (None, 1)
    assert history.sessions[settings.name].connection is not broken
    assert all(state.last_error is None for state in store.sync_states())
    history.close_sessions()


def test_a_kept_session_that_breaks_between_folders_keeps_what_it_had_fetched(
    dovecot, store, tmp_path, monkeypatch, history
):
    user, settings = polled_once(dovecot, store, tmp_path, history)
    dovecot.append(user, "INBOX", mail("<in@acme.example>"), hours_ago(1))
    dovecot.append(
        user, "Sent", mail("<out@agency.test>", sender="alice@agency.test"), hours_ago(1)
    )
    kept = history.sessions[settings.name]
    last = kept.folders[-1].name
    status = ImapMailbox.status

    def dies_before_the_last_folder(self, folder):
        if self is kept.connection and folder.name == last:
            self._client.socket().shutdown(socket.SHUT_RDWR)
        return status(self, folder)

    monkeypatch.setattr(ImapMailbox, "status", dies_before_the_last_folder)

    result = poll_mailbox(settings, sync_settings(), store, NOW, history)

    # the folders done before the break count: the daemon evaluates when mail is new
    assert (result.error, result.new_messages) == (None, 2)
    assert sorted(r.folder for r in result.folders) == sorted(f.name for f in kept.folders)
    history.close_sessions()


def test_a_fresh_session_that_fails_is_not_tried_twice(
    dovecot, store, tmp_path, monkeypatch, history
):
    _, settings = polled_once(dovecot, store, tmp_path, history)
    dovecot.stop()  # the kept session is dead (NOOP fails), and a new login cannot connect
    logins = []
    open_mailbox = sync.open_mailbox
    monkeypatch.setattr(sync, "open_mailbox", lambda m: logins.append(m) or open_mailbox(m))

    try:
        result = poll_mailbox(settings, sync_settings(), store, NOW, history)
    finally:
        dovecot.start()

    assert result.error and not result.permanent
    assert len(logins) == 1  # a server that is down is backed off, not retried at once


def test_a_changed_password_opens_a_new_session_and_a_one_shot_poll_keeps_none(
    dovecot, store, tmp_path, monkeypatch, history
):
    user = dovecot.new_user("alice")
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", user.password)
    settings = mailbox_settings(
        dovecot, user, tmp_path, password=Secret("env MAILWATCH_ALICE_PASSWORD")
    )
    dovecot.clear_rawlog(user)
    poll_mailbox(settings, sync_settings(), store, NOW, history)
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", "changed-and-wrong")

    refused = poll_mailbox(settings, sync_settings(), store, NOW, history)
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", user.password)
    (one_shot,) = poll_all(two_mailboxes(settings), store, NOW)

    assert refused.permanent and history.sessions == {}
    assert one_shot.error is None
    assert dovecot.sessions_opened(user) == 3  # lister and kept; the one-shot poll's one
    assert dovecot.commands_sent(user).count("LOGOUT") == 3  # the refused login opened none


def test_a_kept_session_is_replaced_by_a_new_login_after_half_an_hour(
    dovecot, store, tmp_path, history
):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path)
    dovecot.clear_rawlog(user)

    for minutes in (0, 10, 29, 31):
        result = poll_mailbox(
            settings, sync_settings(), store, NOW + timedelta(minutes=minutes), history
        )
        assert result.error is None

    assert dovecot.sessions_opened(user) == 4  # twice a lister and a kept session
    assert dovecot.commands_sent(user).count("LOGOUT") == 3  # the listers', the first kept one


def test_a_poll_logs_no_header_of_the_mail_it_reads_even_at_debug_level(
    dovecot, store, tmp_path, caplog
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<secret@acme.example>", subject="Merger"), hours_ago(2))
    caplog.set_level(logging.DEBUG)

    poll_mailbox(mailbox_settings(dovecot, user, tmp_path), sync_settings(), store, NOW)

    assert len(store.load_messages()) == 1
    assert not [r for r in caplog.records if "Merger" in r.getMessage()]
