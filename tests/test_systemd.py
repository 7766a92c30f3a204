"""sd_notify over a real unix datagram socket: READY=1 at start, WATCHDOG=1 from a job."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.schedulers.blocking import BlockingScheduler

from mailwatch.daemon import Daemon
from mailwatch.systemd import notify, watchdog_interval
from tests.core.factory import at
from tests.test_daemon import clock, settings_for, start_daemon, write_config


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on: a datagram socket named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield listener


def received(listener: socket.socket, wanted: str) -> list[str]:
    """Datagrams until `wanted` arrives (the socket's timeout fails the test otherwise)."""
    seen: list[str] = []
    while wanted not in seen:
        seen.append(listener.recv(4096).decode())
    return seen


def test_notify_sends_the_state_as_one_datagram(notify_socket):
    assert notify("READY=1")
    assert notify_socket.recv(4096) == b"READY=1"


def test_without_notify_socket_notify_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")


def test_a_vanished_notify_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not notify("WATCHDOG=1")
    assert "could not notify systemd" in caplog.text


def test_the_watchdog_beats_at_half_the_timeout_and_only_for_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval().total_seconds() == 15
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_the_daemon_schedules_a_watchdog_job_that_sends_watchdog(notify_socket, monkeypatch, store):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    scheduler = BlockingScheduler()
    daemon = Daemon(settings_for(None), store, clock=clock(at(2, 10)))
    daemon.schedule(scheduler)
    job = scheduler.get_job("watchdog")
    assert job.trigger.interval.total_seconds() == 2
    job.func()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_mailwatch_run_says_ready_then_keeps_the_watchdog_fed(notify_socket, tmp_path, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a beat every half second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    process = start_daemon(config)
    try:
        seen = received(notify_socket, "READY=1")
        assert received(notify_socket, "WATCHDOG=1").count("WATCHDOG=1") == 1
        assert received(notify_socket, "WATCHDOG=1")  # and again
        assert "STOPPING=1" not in seen
        process.terminate()
        assert process.wait(timeout=15) == 0
        assert "STOPPING=1" in received(notify_socket, "STOPPING=1")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
