"""Progress of long work, and stopping it midway: a first sync against the real Dovecot, an
import from files. What was stored before a stop stays stored, and is not stored again."""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mailwatch.daemon import Daemon
from mailwatch.progress import Progress, log_progress, terminal_progress
from mailwatch.services import import_paths
from mailwatch.store.repository import Store
from mailwatch.sync import SyncHistory, poll_mailbox
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings
from tests.test_daemon import settings_for


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def recording(clock: Clock | None = None, shown_from: int = 10) -> tuple[Progress, list[str]]:
    lines: list[str] = []
    progress = Progress(lambda line, _final: lines.append(line), 0.0, shown_from=shown_from)
    return (replace(progress, clock=clock) if clock else progress), lines


def copies_per_message(store: Store) -> list[int]:
    return [len(message.copies) for message in store.load_messages()]


# ---------------------------------------------------------------- the lines


def test_a_task_shows_messages_done_rate_and_time_left_once_the_work_is_large():
    clock = Clock()
    progress, lines = recording(clock, shown_from=2000)
    small = progress.task("alice/Sent", 1500)
    small.update(1500)
    small.finish()
    task = progress.task("alice/INBOX", 10_000)
    clock.now += 2.0
    task.update(2000)
    clock.now += 8.0
    task.update(10_000)
    task.finish()
    assert lines == [
        "alice/INBOX: 2,000 of 10,000 messages (20%), 1,000/s, about 8s left",
        "alice/INBOX: 10,000 of 10,000 messages (100%), 1,000/s",
        "alice/INBOX: 10,000 messages in 10s, 1,000/s",
    ]


def test_work_of_unknown_size_shows_its_share_from_the_fraction_given():
    clock = Clock()
    progress, lines = recording(clock)
    task = progress.task("import")
    clock.now += 90.0
    task.update(3000, 0.25)
    assert lines == ["import: 3,000 messages (25%), 33/s, about 4m 30s left"]


def test_on_a_terminal_the_line_is_rewritten_in_place_and_ended_when_done():
    terminal = Terminal()
    progress = replace(terminal_progress(terminal), shown_from=10, clock=Clock())
    task = progress.task("alice/INBOX", 20)
    task.update(10)
    task.update(20)  # within the interval: not written
    task.finish()
    assert terminal.getvalue() == (
        "\ralice/INBOX: 10 of 20 messages (50%)\x1b[K\ralice/INBOX: 20 messages in 0s\x1b[K\n"
    )


def test_in_a_file_or_pipe_progress_is_plain_lines_at_most_every_thirty_seconds():
    clock = Clock()
    piped = io.StringIO()
    progress = replace(terminal_progress(piped), shown_from=10, clock=clock)
    task = progress.task("alice/INBOX", 40)
    for done in (10, 20, 30):
        task.update(done)
        clock.now += 20.0
    assert piped.getvalue().splitlines() == [
        "alice/INBOX: 10 of 40 messages (25%)",
        "alice/INBOX: 30 of 40 messages (75%), 1/s, about 13s left",
    ]


def test_the_daemons_log_gets_one_progress_line_a_minute(caplog):
    clock = Clock()
    progress = replace(log_progress(logging.getLogger("mailwatch.test")), clock=clock)
    task = progress.task("alice/INBOX", 10_000)
    caplog.set_level(logging.INFO, logger="mailwatch.test")
    for done in range(2000, 10_001, 1000):
        task.update(done)
        clock.now += 15.0
    assert [record.getMessage() for record in caplog.records] == [
        "alice/INBOX: 2,000 of 10,000 messages (20%)",
        "alice/INBOX: 6,000 of 10,000 messages (60%), 100/s, about 40s left",
        "alice/INBOX: 10,000 of 10,000 messages (100%), 83/s",
    ]


# ---------------------------------------------------------------- a first sync


def fill_inbox(dovecot, count: int):
    user = dovecot.new_user("alice")
    for number in range(count):
        dovecot.append(user, "INBOX", mail(f"<m{number}@acme.example>"), hours_ago(count - number))
    return user


@pytest.mark.dovecot
def test_a_first_sync_reports_its_progress_batch_by_batch(dovecot, store, tmp_path):
    user = fill_inbox(dovecot, 30)
    progress, lines = recording(Clock())
    history = SyncHistory(keeps_sessions=False, progress=progress)
    settings = mailbox_settings(dovecot, user, tmp_path)

    poll_mailbox(settings, sync_settings(batch_size=10), store, NOW, history)

    assert lines == [
        "alice/INBOX: 10 of 30 messages (33%)",
        "alice/INBOX: 20 of 30 messages (67%)",
        "alice/INBOX: 30 of 30 messages (100%)",
        "alice/INBOX: 30 messages in 0s",
    ]


@pytest.mark.dovecot
def test_a_sync_stopped_midway_keeps_its_batches_and_the_next_poll_goes_on_from_there(
    dovecot, store, tmp_path
):
    user = fill_inbox(dovecot, 30)
    stopping = threading.Event()

    def stop_after_first_batch(_line: str, _final: bool) -> None:
        stopping.set()  # as SIGTERM does in the daemon, while a batch is being stored

    history = SyncHistory(
        keeps_sessions=False, progress=Progress(stop_after_first_batch, 0.0, shown_from=1)
    )
    history.stopping = stopping
    settings = mailbox_settings(dovecot, user, tmp_path)

    stopped = poll_mailbox(settings, sync_settings(batch_size=10), store, NOW, history)
    after_stop = len(store.load_messages())
    resumed = poll_mailbox(settings, sync_settings(batch_size=10), store, NOW)

    assert [(f.folder, f.fetched, f.finished) for f in stopped.folders if f.fetched] == [
        ("INBOX", 10, False)
    ]
    assert (after_stop, resumed.fetched, resumed.new_messages) == (10, 20, 20)
    assert copies_per_message(store) == [1] * 30


@pytest.mark.dovecot
def test_a_sync_interrupted_by_ctrl_c_resumes_where_it_stopped_and_stores_nothing_twice(
    dovecot, store, tmp_path
):
    user = fill_inbox(dovecot, 30)
    written: list[str] = []

    def ctrl_c_after_two_batches(line: str, _final: bool) -> None:
        written.append(line)
        if len(written) == 2:
            raise KeyboardInterrupt

    history = SyncHistory(
        keeps_sessions=False, progress=Progress(ctrl_c_after_two_batches, 0.0, shown_from=1)
    )
    settings = mailbox_settings(dovecot, user, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        poll_mailbox(settings, sync_settings(batch_size=10), store, NOW, history)

    resumed = poll_mailbox(settings, sync_settings(batch_size=10), store, NOW)

    assert (resumed.fetched, resumed.new_messages) == (10, 10)
    assert copies_per_message(store) == [1] * 30
    assert dovecot.commands_sent(user).count("LOGOUT") >= 2  # the interrupted session too


@pytest.mark.dovecot
def test_the_daemon_stops_a_first_sync_at_the_next_batch_and_leaves_the_evaluation_for_later(
    dovecot, store, tmp_path, caplog
):
    user = fill_inbox(dovecot, 30)
    mailbox = mailbox_settings(dovecot, user, tmp_path, idle=False)
    daemon = Daemon(
        settings_for(None, mailboxes=(mailbox,), sync=sync_settings(batch_size=10)), store
    )
    daemon.history.progress = Progress(lambda *_: daemon.request_stop(), 0.0, shown_from=1)
    caplog.set_level(logging.INFO, logger="mailwatch")

    daemon.poll("alice", NOW)

    assert len(store.load_messages()) == 10
    assert store.requests() == []  # evaluated by the next run, not while stopping
    assert "alice/INBOX: stopping after 10 of 30 messages" in caplog.text
    daemon.disconnect()


# ---------------------------------------------------------------- an import


def test_an_import_interrupted_by_ctrl_c_is_run_again_and_stores_nothing_twice(store, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    for number in range(1200):
        (folder / f"{number}.eml").write_bytes(mail(f"<m{number}@acme.example>"))
    settings = settings_for(None)

    def ctrl_c(_line: str, _final: bool) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_paths(settings, store, [folder], NOW, progress=Progress(ctrl_c, 0.0, shown_from=1))
    stored_before = len(store.load_messages())
    again = import_paths(settings, store, [Path(folder)], NOW)

    assert stored_before == 500  # the first batch, committed before the interruption
    assert (again.read, again.new) == (1200, 700)
    assert copies_per_message(store) == [1] * 1200


def test_an_import_shows_how_much_of_its_files_it_has_read(store, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    for number in range(1000):
        (folder / f"{number}.eml").write_bytes(mail(f"<m{number}@acme.example>"))
    progress, lines = recording(Clock())

    import_paths(settings_for(None), store, [folder], NOW, progress=progress)

    assert lines == [
        "import: 500 messages (50%)",
        "import: 1,000 messages (100%)",
        "import: 1,000 messages in 0s",
    ]
