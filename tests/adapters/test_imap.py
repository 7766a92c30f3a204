"""The IMAP adapter against a real Dovecot (tests/fixtures/dovecot.py)."""

from __future__ import annotations

import pytest

from mailwatch.adapters.imap import MailboxError, check_mailbox, open_mailbox
from mailwatch.config import Secret
from tests.fixtures.dovecot import free_port
from tests.imap_helpers import hours_ago, mail, mailbox_settings

pytestmark = pytest.mark.dovecot


def test_folders_are_every_folder_but_drafts_and_trash_with_sent_and_waive_folder_named(
    dovecot, tmp_path
):
    user = dovecot.new_user("alice")
    with dovecot.client(user) as client:
        client.create_folder("Trash")
        client.create_folder("No reply needed")
        client.create_folder("Clients")
    dovecot.append(user, "Trash", mail("<t@acme.example>"), hours_ago(1))

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        folders = {folder.name: folder for folder in mailbox.folders("No reply needed")}

    # Dovecot marks Drafts \Drafts; "Trash" has no attribute here but is not special-use,
    # so it stays: only RFC 6154 attributes exclude a folder.
    assert set(folders) == {"INBOX", "Sent", "No reply needed", "Clients", "Trash"}
    assert [name for name, folder in folders.items() if folder.sent] == ["Sent"]
    assert [name for name, folder in folders.items() if folder.waive] == ["No reply needed"]


def test_the_junk_folder_is_watched_a_client_email_caught_as_spam_still_waits(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    with dovecot.client(user) as client:
        client.create_folder("Junk")
        flags = {name: flags for flags, _, name in client.list_folders()}

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        watched = {folder.name for folder in mailbox.folders(None)}

    assert b"\\Junk" in flags["Junk"] and b"\\Drafts" in flags["Drafts"]
    assert "Junk" in watched and "Drafts" not in watched


def test_configured_folders_are_exactly_the_ones_watched(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX",))

    with open_mailbox(settings) as mailbox:
        assert [folder.name for folder in mailbox.folders(None)] == ["INBOX"]


def test_a_first_sync_reaches_back_exactly_the_history_window(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<old@acme.example>"), hours_ago(24 * 3 + 1))
    dovecot.append(user, "INBOX", mail("<edge@acme.example>"), hours_ago(24 * 3 - 1))
    dovecot.append(user, "INBOX", mail("<new@acme.example>"), hours_ago(1))

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [f for f in mailbox.folders(None) if f.name == "INBOX"]
        with mailbox.examine(inbox) as opened:
            batches = list(opened.new_messages(None, hours_ago(24 * 3), batch_size=200))

    fetched = [m for batch in batches for m in batch.messages]
    assert [b"<edge@acme.example>" in m.raw_headers for m in fetched] == [True, False]
    assert [m.internal_date for m in fetched] == [hours_ago(24 * 3 - 1), hours_ago(1)]
    # Everything before the window is behind the checkpoint for good.
    assert batches[-1].checkpoint.last_uid == 3


def test_only_the_last_batch_carries_uidnext_so_an_interrupted_folder_is_not_skipped(
    dovecot, tmp_path
):
    user = dovecot.new_user("alice")
    for number in range(5):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(5 - number))

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [f for f in mailbox.folders(None) if f.name == "INBOX"]
        with mailbox.examine(inbox) as opened:
            batches = list(opened.new_messages(None, None, batch_size=2))

    assert [len(batch.messages) for batch in batches] == [2, 2, 1]
    assert [batch.checkpoint.last_uid for batch in batches] == [2, 4, 5]
    assert [batch.checkpoint.uidnext for batch in batches] == [None, None, 6]
    assert batches[-1].checkpoint.highestmodseq is not None


def test_an_incremental_search_ignores_the_highest_uid_that_star_always_matches(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<only@acme.example>"), hours_ago(1))

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [f for f in mailbox.folders(None) if f.name == "INBOX"]
        with mailbox.examine(inbox) as opened:
            (first,) = opened.new_messages(None, None, batch_size=200)
            (again,) = opened.new_messages(first.checkpoint, None, batch_size=200)

    assert len(first.messages) == 1
    assert again.messages == ()


def test_headers_and_the_body_prefix_are_fetched_without_setting_seen(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<a@acme.example>", body="Thanks!"), hours_ago(1))

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [f for f in mailbox.folders(None) if f.name == "INBOX"]
        with mailbox.examine(inbox) as opened:
            (batch,) = opened.new_messages(None, None, batch_size=200)
            prefixes = opened.body_prefixes([batch.messages[0].uid])

    (message,) = batch.messages
    assert b"Message-ID: <a@acme.example>" in message.raw_headers
    assert prefixes[message.uid].startswith(b"Thanks!")
    assert dovecot.folder_flags(user, "INBOX") == {1: (b"\\Recent",)}


def test_a_wrong_password_is_a_permanent_one_line_error_naming_where_the_secret_comes_from(
    dovecot, tmp_path, monkeypatch
):
    user = dovecot.new_user("alice")
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", "not-the-password")
    settings = mailbox_settings(
        dovecot, user, tmp_path, name="alice", password=Secret("env MAILWATCH_ALICE_PASSWORD")
    )

    with pytest.raises(MailboxError) as raised:
        check_mailbox(settings, None)

    message = raised.value.message
    assert raised.value.permanent
    assert message.startswith(
        "alice: login refused by 127.0.0.1: check the password "
        "(password_env MAILWATCH_ALICE_PASSWORD): server said [AUTHENTICATIONFAILED]"
    )
    assert "not-the-password" not in message and "\n" not in message


def test_a_refused_connection_is_a_temporary_error(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path, port=free_port())

    with pytest.raises(MailboxError) as raised:
        check_mailbox(settings, None)

    assert not raised.value.permanent
    assert raised.value.message == f"alice: 127.0.0.1:{settings.port}: connection refused"


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_self_signed_certificate_is_refused_with_the_fix(dovecot, tmp_path, security):
    user = dovecot.new_user("alice")
    port = dovecot.tls_port if security == "ssl" else dovecot.port
    settings = mailbox_settings(dovecot, user, tmp_path, security=security, port=port)

    with pytest.raises(MailboxError) as raised:
        check_mailbox(settings, None)

    assert raised.value.permanent
    assert "TLS certificate not trusted (self-signed certificate)" in raised.value.message
    assert "set ca_file" in raised.value.message


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_self_signed_certificate_is_accepted_with_ca_file(dovecot, tmp_path, security):
    user = dovecot.new_user("alice")
    port = dovecot.tls_port if security == "ssl" else dovecot.port
    settings = mailbox_settings(
        dovecot, user, tmp_path, security=security, port=port, ca_file=dovecot.cert_file
    )

    lines = check_mailbox(settings, None)

    expected = "TLS" if security == "ssl" else "STARTTLS"
    assert lines[0] == f"alice: login ok as {user.username} on 127.0.0.1:{port} ({expected})"


def test_check_reports_login_extensions_folders_sent_and_waive_folder(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path)

    lines = check_mailbox(settings, "No reply needed")

    assert lines == [
        f"alice: login ok as {user.username} on 127.0.0.1:{dovecot.port} (no encryption)",
        "alice: server offers CONDSTORE, IDLE, SPECIAL-USE, UNSELECT",
        "alice: watching 2 folder(s): Sent, INBOX",
        "alice: Sent folder: Sent",
        "alice: waive folder 'No reply needed' not found "
        "(create it to let people waive by moving mail there)",
    ]
