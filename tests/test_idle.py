"""IMAP IDLE against the real Dovecot (mailbox_idle_check_interval = 1 s), in real time:
the adapter's wait, the watcher thread, and the daemon polling as soon as mail arrives."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from mailwatch.adapters.imap import Folder, IdleUnsupported, open_mailbox
from mailwatch.bootstrap import utc_now
from mailwatch.daemon import Daemon
from mailwatch.devserver import DovecotServer
from mailwatch.idle import IdleWatcher
from mailwatch.sync import SyncHistory
from tests.fixtures.dovecot import COMMAND_LINE, running_dovecot
from tests.imap_helpers import hours_ago, mail, mailbox_settings
from tests.test_daemon import settings_for, start_daemon, write_config

# Dovecot looks for new mail every second while a client idles: a wake-up takes ~1 s.
WAKE_UP = 5.0
# Never reached in these tests: only IDLE can make a poll happen in time.
POLL_INTERVAL = timedelta(minutes=10)
# The capabilities Dovecot offers, minus IDLE.
WITHOUT_IDLE = "imap_capability = IMAP4rev1 LITERAL+ SASL-IR ID ENABLE UNSELECT CONDSTORE\n"


def eventually(condition: Callable[[], object], seconds: float = WAKE_UP) -> float:
    """Seconds until `condition()` held; fails when it does not within `seconds`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - start


def later(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


@pytest.fixture(scope="module")
def dovecot_without_idle() -> Iterator[DovecotServer]:
    with running_dovecot("noidle", lambda root: DovecotServer(root, "\n" + WITHOUT_IDLE)) as server:
        yield server


# ---------------------------------------------------------------- the adapter's wait


def test_mail_appended_by_another_connection_ends_the_wait_within_seconds_changing_no_flag(
    dovecot, tmp_path
):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", mail("<old@acme.example>"), hours_ago(2))
    flags_before = dovecot.folder_flags(user, "INBOX")
    new = mail("<new@acme.example>")
    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as connection:
        with connection.examine(Folder("INBOX")) as inbox:
            later(0.3, lambda: dovecot.append(user, "INBOX", new, hours_ago(0)))
            start = time.monotonic()
            arrived = inbox.wait_for_new_mail(threading.Event(), timeout=30)
            waited = time.monotonic() - start

    assert arrived and waited < WAKE_UP
    flags_after = dovecot.folder_flags(user, "INBOX")
    assert flags_after[1] == flags_before[1]  # the old message: still unread
    assert b"\\Seen" not in flags_after[2]
    commands = dovecot.commands_sent(user)
    assert 'EXAMINE "INBOX"' in commands and "IDLE" in commands
    assert not [c for c in commands if c.startswith(("SELECT", "STORE", "UID STORE"))]


def test_mail_that_arrived_between_two_waits_ends_the_next_one_at_once(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as connection:
        with connection.examine(Folder("INBOX")) as inbox:
            quiet = inbox.wait_for_new_mail(threading.Event(), timeout=0.2)
            dovecot.append(user, "INBOX", mail("<between@acme.example>"), hours_ago(0))
            start = time.monotonic()
            arrived = inbox.wait_for_new_mail(threading.Event(), timeout=30)

    assert (quiet, arrived) == (False, True)
    assert time.monotonic() - start < 1.0


def test_a_set_stop_event_ends_the_wait_promptly(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    stop = threading.Event()
    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as connection:
        with connection.examine(Folder("INBOX")) as inbox:
            later(0.3, stop.set)
            start = time.monotonic()
            arrived = inbox.wait_for_new_mail(stop, timeout=60)
            waited = time.monotonic() - start
            # IDLE ended cleanly: the connection still answers.
            assert inbox.wait_for_new_mail(threading.Event(), timeout=0.1) is False

    assert arrived is False and waited < 1.5


def test_a_server_without_idle_is_named_at_once(dovecot_without_idle, tmp_path):
    user = dovecot_without_idle.add_user("alice@agency.test", "pw-alice")
    settings = mailbox_settings(dovecot_without_idle, user, tmp_path)
    with open_mailbox(settings) as connection, connection.examine(Folder("INBOX")) as inbox:
        start = time.monotonic()
        with pytest.raises(IdleUnsupported, match="does not offer IDLE"):
            inbox.wait_for_new_mail(threading.Event(), timeout=30)
    assert time.monotonic() - start < 0.5


# ---------------------------------------------------------------- the watcher thread


class Watching:
    """An IdleWatcher on a test mailbox, counting the polls it asks for."""

    def __init__(self, settings, history: SyncHistory | None = None) -> None:
        self.polls = 0
        self.history = history or SyncHistory()
        self.watcher = IdleWatcher(settings, self.history, self.count, utc_now)

    def count(self) -> None:
        self.polls += 1

    def __enter__(self) -> Watching:
        self.watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()


def idles(dovecot, user) -> int:
    return dovecot.commands_sent(user).count("IDLE")


def test_the_watcher_reconnects_after_the_server_went_away_and_polls_what_arrived(
    dovecot, tmp_path, caplog
):
    user = dovecot.new_user("alice")
    with Watching(mailbox_settings(dovecot, user, tmp_path)) as watching:
        eventually(lambda: idles(dovecot, user) == 1)
        assert watching.polls == 1  # once INBOX was open: mail may have come before
        try:
            dovecot.stop()  # every session dies with it, the IDLE connection too
        finally:
            dovecot.start()
        eventually(lambda: idles(dovecot, user) == 2)
        assert watching.polls == 2  # the poll after reconnecting
        dovecot.append(user, "INBOX", mail("<after@acme.example>"), hours_ago(0))
        eventually(lambda: watching.polls == 3)
    assert "IDLE reconnects in 1 s" in caplog.text
    assert not watching.watcher.is_alive()


def test_a_refused_login_is_recorded_for_the_polls_and_not_retried(dovecot, tmp_path, caplog):
    user = dovecot.new_user("alice")
    settings = replace(mailbox_settings(dovecot, user, tmp_path), username="nobody@agency.test")
    with Watching(settings) as watching:
        eventually(lambda: "alice" in watching.history.refused)
        refused_at = watching.history.refused["alice"][1]
        time.sleep(1.5)
        assert watching.history.refused["alice"][1] == refused_at  # no second attempt
        assert watching.watcher.is_alive() and watching.polls == 0
    assert "login refused" in caplog.text


class LockedOnce:
    """The store as SyncHistory reads refused logins from it, locked the first time."""

    def __init__(self, store) -> None:
        self.store = store
        self.locked = True

    def login_refusal(self, name: str):
        if self.locked:
            self.locked = False
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return self.store.login_refusal(name)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def test_a_database_fault_while_a_refusal_is_read_does_not_end_the_watcher(
    dovecot, store, tmp_path, caplog
):
    user = dovecot.new_user("alice")
    history = SyncHistory(refusals=LockedOnce(store))
    with caplog.at_level(logging.WARNING, "mailwatch.idle"):
        with Watching(mailbox_settings(dovecot, user, tmp_path), history) as watching:
            eventually(lambda: idles(dovecot, user) == 1)
            assert watching.watcher.is_alive() and watching.polls == 1
    assert "IDLE failed" in caplog.text and "database is locked" in caplog.text


def test_the_watcher_of_a_server_without_idle_says_so_and_ends(
    dovecot_without_idle, tmp_path, caplog
):
    user = dovecot_without_idle.add_user("bob@agency.test", "pw-bob")
    with caplog.at_level(logging.INFO, "mailwatch.idle"):
        with Watching(mailbox_settings(dovecot_without_idle, user, tmp_path)) as watching:
            eventually(lambda: not watching.watcher.is_alive())
    assert watching.polls == 0
    assert "bob: 127.0.0.1 does not offer IDLE: new mail is seen at each poll" in caplog.text


# ---------------------------------------------------------------- the daemon


def running_daemon(settings, store) -> Daemon:
    daemon = Daemon(settings, store)
    daemon.running.set()  # as in run(), without its scheduler and signal handlers
    return daemon


def stop(daemon: Daemon) -> None:
    """As run() ends: a poll still running then (one IDLE asked for) starts no new watcher."""
    daemon.running.clear()
    daemon.disconnect()


def test_new_inbox_mail_is_polled_within_seconds_not_at_the_poll_interval(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path, poll_interval=POLL_INTERVAL)
    daemon = running_daemon(settings_for(None, mailboxes=(settings,)), store)
    try:
        daemon.poll_job("alice")  # the first scheduled poll starts the watcher
        eventually(lambda: "IDLE" in dovecot.commands_sent(user))
        dovecot.append(user, "INBOX", mail("<fresh@acme.example>"), hours_ago(0))
        waited = eventually(lambda: store.load_messages())
    finally:
        stop(daemon)
    assert waited < WAKE_UP
    assert [m.key for m in store.load_messages()] == ["<fresh@acme.example>"]
    assert b"\\Seen" not in dovecot.folder_flags(user, "INBOX")[1]
    assert daemon.idle.threads == {}


def test_a_mailbox_with_idle_off_or_a_server_without_idle_is_only_polled(
    dovecot, dovecot_without_idle, store, tmp_path
):
    alice = dovecot.new_user("alice")
    bob = dovecot_without_idle.add_user("bob@agency.test", "pw-bob")
    dovecot_without_idle.append(bob, "INBOX", mail("<for-bob@acme.example>"), hours_ago(1))
    mailboxes = (
        mailbox_settings(dovecot, alice, tmp_path, idle=False),
        mailbox_settings(dovecot_without_idle, bob, tmp_path, name="bob"),
    )
    daemon = running_daemon(settings_for(None, mailboxes=mailboxes), store)
    try:
        daemon.poll_job("alice")
        daemon.poll_job("bob")
        ended = daemon.idle.threads["bob"]
        eventually(lambda: not ended.is_alive())
        daemon.poll_job("bob")  # the next poll does not start it again
        assert daemon.idle.threads["bob"] is ended
    finally:
        stop(daemon)
    assert "alice" not in daemon.idle.threads and "IDLE" not in dovecot.commands_sent(alice)
    assert [m.key for m in store.load_messages()] == ["<for-bob@acme.example>"]


class DaemonLog:
    """The lines a `mailwatch run` process logs, read as they come by a thread (select on a
    buffered pipe would miss lines already read into the buffer)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def wait_for(self, needle: str, times: int = 1, seconds: float = 20) -> None:
        start = time.monotonic()
        while self.count(needle) < times:
            assert time.monotonic() - start < seconds, f"no {needle!r} in: {''.join(self.lines)}"
            time.sleep(0.05)


def test_mailwatch_run_polls_inbox_mail_at_once_restarts_idle_on_sighup_and_stops_on_sigterm(
    dovecot, tmp_path
):
    user = dovecot.new_user("alice")
    (tmp_path / "alice.password").write_text(user.password)
    mailbox = f"""
[[mailboxes]]
name = "alice"
host = "127.0.0.1"
port = {dovecot.port}
security = "none"
username = "{user.username}"
password_file = "alice.password"
poll_interval = "10m"
"""
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite", mailbox)
    process = start_daemon(config)
    log = DaemonLog(process)
    try:
        log.wait_for("waiting for new INBOX mail with IDLE")
        process.send_signal(signal.SIGHUP)
        log.wait_for("waiting for new INBOX mail with IDLE", times=2)  # restarted by the reload
        dovecot.append(user, "INBOX", mail("<fresh@acme.example>"), hours_ago(0))
        log.wait_for("alice: fetched 1, 1 new", seconds=WAKE_UP)
        # IDLE again after the new mail: on two busy cores it may come after the poll's log
        eventually(lambda: idles(dovecot, user) == 3)
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - start < 3.0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        log.thread.join(5)
        process.stderr.close()
    assert log.count("configuration reloaded") == 1 and log.count("stopped") == 1
    # IDLE by the first watcher, by the one the reload started, and again after the new mail.
    assert dovecot.commands_sent(user).count("IDLE") == 3
    # Every connection, the watchers' stopped by SIGHUP and SIGTERM too, ended with LOGOUT.
    assert set(last_commands(dovecot, user)) == {"LOGOUT"}


def last_commands(dovecot, user) -> list[str]:
    """The last command of each IMAP session of the user, from Dovecot's rawlog."""
    sessions = sorted((dovecot.home(user.username) / "rawlog").glob("*.in"))
    return [
        [
            found.group(1)
            for line in path.read_text().splitlines()
            if (found := COMMAND_LINE.match(line))
        ][-1]
        for path in sessions
    ]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_on_postgresql_only_the_worker_holding_the_lease_idles_on_the_mailbox(
    dovecot, store, tmp_path
):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path, poll_interval=POLL_INTERVAL)
    daemon = running_daemon(settings_for(None, mailboxes=(settings,)), store)
    try:
        store.acquire_lease("mailbox:alice", "other-worker", datetime.now(UTC), timedelta(hours=1))
        daemon.poll_job("alice")
        assert daemon.idle.threads == {}
        store.release_lease("mailbox:alice", "other-worker")
        daemon.poll_job("alice")
        eventually(lambda: "IDLE" in dovecot.commands_sent(user))
        watcher = daemon.idle.threads["alice"]
        # The lease moves on (it expired and another worker took it): the watcher stops.
        store.release_lease("mailbox:alice", daemon.worker.id)
        store.acquire_lease("mailbox:alice", "other-worker", datetime.now(UTC), timedelta(hours=1))
        daemon.poll_job("alice")
        assert daemon.idle.threads == {} and not watcher.is_alive()
    finally:
        stop(daemon)


def test_a_poll_that_ends_after_the_daemon_stopped_keeps_no_session(dovecot, store, tmp_path):
    user = dovecot.new_user("alice")
    settings = mailbox_settings(dovecot, user, tmp_path, idle=False)
    daemon = running_daemon(settings_for(None, mailboxes=(settings,)), store)
    try:
        daemon.poll_job("alice")
        kept = set(daemon.history.sessions)
        daemon.running.clear()  # as when run() returns while a poll is still going
        daemon.poll_job("alice")
        assert (kept, daemon.history.sessions) == ({"alice"}, {})
        assert dovecot.commands_sent(user).count("LOGOUT") == 2  # the folder lister's too
    finally:
        stop(daemon)
