"""Servers that fail: a real Dovecot and a real aiosmtpd behind our own misbehaving proxy
(tests/reliability/proxy.py), or changed under mailwatch's feet between polls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from imapclient.exceptions import LoginError

from mailwatch.adapters.render import RenderedEmail
from mailwatch.adapters.smtp import Mailer, TransportError
from mailwatch.cli import main
from mailwatch.config import SmtpSettings
from mailwatch.store.repository import Store
from mailwatch.sync import poll_all, poll_mailbox
from tests.fixtures.stores import SqliteTemplate
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings
from tests.reliability.agency import NOW as NUDGE_NOW
from tests.reliability.agency import NUDGE_ACCOUNTS, nudge_agency
from tests.reliability.proxy import Cut, FaultProxy
from tests.test_sync import two_mailboxes


@pytest.fixture
def sqlite_store(tmp_path: Path, migrated_sqlite: SqliteTemplate):
    store = Store(migrated_sqlite.copy(tmp_path / "mailwatch.db"))
    yield store
    store.close()


def keys_and_copies(store: Store) -> list[tuple[str, int]]:
    return sorted((m.key, len(m.copies)) for m in store.load_messages())


# ---------------------------------------------------------------- IMAP


@pytest.mark.dovecot
@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
def test_a_connection_cut_mid_fetch_is_temporary_and_the_next_poll_stores_each_message_once(
    dovecot, sqlite_store, tmp_path, reset
):
    user = dovecot.new_user("alice")
    for number in range(12):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(12 - number))
    with FaultProxy(dovecot.port) as proxy:
        settings = mailbox_settings(dovecot, user, tmp_path, port=proxy.port, folders=("INBOX",))
        # The second batch's FETCH: its answer is cut off after 300 bytes.
        proxy.cut = Cut(b"FETCH 6,", reply_bytes=300, reset=reset)
        cut = poll_mailbox(settings, sync_settings(batch_size=5), sqlite_store, NOW)
        stored_after_cut = len(sqlite_store.load_messages())
        resumed = poll_mailbox(settings, sync_settings(batch_size=5), sqlite_store, NOW)

    assert proxy.cuts_done == 1
    assert cut.error is not None and not cut.permanent
    assert "connection lost" in cut.error or "reset" in cut.error or "closed" in cut.error
    assert stored_after_cut == 5  # the first batch, committed with its checkpoint
    assert (resumed.error, resumed.fetched) == (None, 7)
    assert keys_and_copies(sqlite_store) == sorted((f"<m{n}@acme.example>", 1) for n in range(12))


@pytest.mark.dovecot
def test_a_poll_cut_mid_fetch_counts_in_its_summary_what_it_stored_before_the_cut(
    dovecot, sqlite_store, tmp_path
):
    user = dovecot.new_user("alice")
    for number in range(12):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(12 - number))
    with FaultProxy(dovecot.port) as proxy:
        settings = mailbox_settings(dovecot, user, tmp_path, port=proxy.port, folders=("INBOX",))
        proxy.cut = Cut(b"FETCH 6,", reply_bytes=300, reset=True)
        cut = poll_mailbox(settings, sync_settings(batch_size=5), sqlite_store, NOW)

    assert cut.error is not None
    assert (cut.fetched, cut.new_messages) == (5, 5)


@pytest.mark.dovecot
@pytest.mark.parametrize("greeting", [True, False], ids=["slow-after-login", "slow-greeting"])
def test_a_slow_server_times_out_within_the_timeout_and_the_other_mailbox_still_syncs(
    dovecot, sqlite_store, tmp_path, greeting
):
    alice, bob = dovecot.new_user("alice"), dovecot.new_user("bob")
    dovecot.append(bob, "INBOX", mail("<for-bob@acme.example>"), hours_ago(1))
    # Every reply held 3 s (after the greeting, or including it); the timeout is 0.5 s.
    with FaultProxy(dovecot.port, delay=3.0, delay_after=1 if greeting else 0) as slow:
        settings = two_mailboxes(
            mailbox_settings(dovecot, alice, tmp_path, port=slow.port, timeout=0.5),
            mailbox_settings(dovecot, bob, tmp_path),
        )
        started = time.monotonic()
        alice_result, bob_result = poll_all(settings, sqlite_store, NOW)
        elapsed = time.monotonic() - started

    assert alice_result.error == f"alice: 127.0.0.1:{slow.port}: timed out"
    assert not alice_result.permanent
    assert (bob_result.error, bob_result.new_messages) == (None, 1)
    assert elapsed < 2.5


@pytest.mark.dovecot
def test_a_folder_deleted_is_recorded_and_skipped_and_once_recreated_synced_without_duplicates(
    dovecot, sqlite_store, tmp_path
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "Clients", mail("<before@acme.example>"), hours_ago(5))
    settings = mailbox_settings(dovecot, user, tmp_path, folders=("INBOX", "Clients"))
    poll_mailbox(settings, sync_settings(), sqlite_store, NOW)

    with dovecot.client(user) as client:
        client.delete_folder("Clients")
    dovecot.append(user, "INBOX", mail("<meanwhile@acme.example>"), hours_ago(3))
    deleted = poll_mailbox(settings, sync_settings(), sqlite_store, NOW)
    dovecot.append(user, "Clients", mail("<before@acme.example>"), hours_ago(5))
    dovecot.append(user, "Clients", mail("<after@acme.example>"), hours_ago(2))
    recreated = poll_mailbox(settings, sync_settings(), sqlite_store, NOW)

    folders = {f.folder: f for f in deleted.folders}
    assert deleted.error is None
    assert "Clients" in (folders["Clients"].error or "")
    assert folders["INBOX"].new_messages == 1
    states = {(s.mailbox, s.folder): s for s in sqlite_store.sync_states()}
    assert states[("alice", "Clients")].last_error == folders["Clients"].error
    assert recreated.errors == []
    assert keys_and_copies(sqlite_store) == [
        ("<after@acme.example>", 1),
        ("<before@acme.example>", 1),
        ("<meanwhile@acme.example>", 1),
    ]


@pytest.mark.dovecot
def test_a_password_changed_on_the_server_is_a_permanent_error_until_the_secret_follows(
    dovecot, sqlite_store, tmp_path
):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path)
    first = poll_mailbox(settings, sync_settings(), sqlite_store, NOW)
    changed = dovecot.add_user(user.username, "a-new-password")
    wait_until_refused(dovecot, user)
    refused = poll_mailbox(settings, sync_settings(), sqlite_store, NOW)
    (tmp_path / "alice.password").write_text(changed.password)
    followed = poll_mailbox(settings, sync_settings(), sqlite_store, NOW)

    assert first.error is None
    assert refused.permanent
    assert refused.error.startswith(
        f"alice: login refused by 127.0.0.1: check the password (password_file {tmp_path}"
    )
    assert "a-new-password" not in refused.error and user.password not in refused.error
    assert followed.error is None


def wait_until_refused(dovecot, user, within: float = 10.0) -> None:
    """Dovecot notices a changed password file within a second or two."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with dovecot.client(user):
                pass
        except LoginError:
            return
        time.sleep(0.1)
    raise AssertionError("Dovecot still accepts the old password")


# ---------------------------------------------------------------- SMTP

NOTE = RenderedEmail(subject="Reminder", text="A client is waiting.", html="<p>waiting</p>")


def mailer(port: int, timeout: float = 5.0) -> Mailer:
    return Mailer(
        SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="none",
            sender="mailwatch <mailwatch@agency.test>",
            timeout=timeout,
        ),
        is_staff=lambda address: address.endswith("@agency.test"),
    )


def test_a_connection_dropped_after_the_data_command_is_temporary_and_nothing_arrived(
    smtp_server,
):
    with FaultProxy(smtp_server.port) as proxy:
        proxy.cut = Cut(b"data\r\n", forward=False)
        with pytest.raises(TransportError) as caught:
            mailer(proxy.port).send(["alice@agency.test"], NOTE)
        retried = mailer(proxy.port).send(["alice@agency.test"], NOTE)

    assert not caught.value.permanent
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [retried]


def test_a_connection_dropped_after_the_message_went_out_is_not_retried(smtp_server):
    with FaultProxy(smtp_server.port) as proxy:
        proxy.cut = Cut(b"\r\n.\r\n", reply_bytes=0)  # the server's 250 never reaches us
        with pytest.raises(TransportError) as caught:
            mailer(proxy.port).send(["alice@agency.test"], NOTE)

    assert caught.value.permanent
    assert "may have been delivered, so it is not sent again" in str(caught.value)
    assert len(smtp_server.messages) == 1


def test_a_slow_smtp_server_times_out_within_the_timeout(smtp_server):
    with FaultProxy(smtp_server.port, delay=3.0, delay_after=2) as slow:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            mailer(slow.port, timeout=0.5).send(["alice@agency.test"], NOTE)
        elapsed = time.monotonic() - started

    assert not caught.value.permanent
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "cut",
    [Cut(b"data\r\n", forward=False), Cut(b"\r\n.\r\n", reply_bytes=0)],
    ids=["before-the-message", "after-the-message"],
)
def test_a_nudge_run_cut_off_mid_send_then_run_again_reaches_each_manager_exactly_once(
    smtp_server, tmp_path, capsys, cut
):
    with FaultProxy(smtp_server.port) as proxy:
        config = nudge_agency(tmp_path / "agency", proxy.port)
        proxy.cut = cut
        first = main(["--config", str(config), "nudge", "--now", NUDGE_NOW])
        second = main(["--config", str(config), "nudge", "--now", NUDGE_NOW])
    out = capsys.readouterr().out

    recipients = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert (first, second) == (1, 0)
    assert "FAILED to send to" in out
    assert recipients == sorted(f"m{n}@agency.test" for n in range(NUDGE_ACCOUNTS))
