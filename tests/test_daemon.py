"""The daemon's jobs called directly with a fixed clock, health, backup, and one real `run`."""

from __future__ import annotations

import http.server
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import text

from mailwatch.cli import main
from mailwatch.config import (
    DaemonSettings,
    HealthSettings,
    MailboxSettings,
    Secret,
    Settings,
    SmtpSettings,
    load_settings,
)
from mailwatch.daemon import Daemon, digest_triggers, missed_digest
from mailwatch.health import health_problems
from mailwatch.store.repository import Store, StoredMessage
from tests.core.factory import at, client, policy
from tests.fixtures.smtp import SmtpSink, free_port

REPO = Path(__file__).resolve().parents[1]
HEAD = "head@rouge.example"


class PingServer:
    """A real HTTP server on loopback that counts the health pings it receives."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        pings = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                pings.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/abc"
        # close() waits until the serving loop notices, which it checks once per poll interval
        # (half a second by default, paid again by every test that uses the server).
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ping_server() -> Iterator[PingServer]:
    server = PingServer()
    yield server
    server.close()


def mailbox(name: str, port: int = 1) -> MailboxSettings:
    return MailboxSettings(
        name=name,
        host="127.0.0.1",
        port=port,
        security="none",
        username=name,
        password=Secret("env MW_TEST_UNUSED"),
        timeout=2.0,
    )


def settings_for(sink: SmtpSink | None, store_url: str = "sqlite://", **changes) -> Settings:
    smtp = None
    if sink is not None:
        smtp = SmtpSettings(
            host=sink.host,
            port=sink.port,
            security="none",
            sender="Mailwatch <mailwatch@rouge.example>",
            timeout=5.0,
        )
    values = dict(
        source=Path("mailwatch.toml"),
        agency_name="Rouge",
        policy=policy(target=timedelta(hours=8)),
        database_url=store_url,
        smtp=smtp,
    )
    values.update(changes)
    return Settings(**values)


def clock(instant: datetime):
    return lambda: instant


def add_request(store: Store) -> None:
    message = client("banner@acme.example", at(0, 9), "Homepage banner")
    store.add_messages([StoredMessage(message, b"Subject: x\r\n\r\n", location="test:1")])


# ---------------------------------------------------------------- jobs, called directly


def test_the_nudge_job_sends_what_is_due_then_pings_when_healthy(smtp_server, ping_server, store):
    add_request(store)
    settings = settings_for(smtp_server, health=HealthSettings(ping_url=ping_server.url))
    Daemon(settings, store, clock=clock(at(0, 15))).nudge_job()
    assert [m.rcpt_tos for m in smtp_server.messages] == [("alice@rouge.example",)]
    assert ping_server.paths == ["/ping/abc"]


def test_no_ping_while_a_mailbox_has_never_synced(smtp_server, ping_server, store, caplog):
    settings = settings_for(
        smtp_server,
        mailboxes=(mailbox("alice"),),
        health=HealthSettings(ping_url=ping_server.url),
    )
    with caplog.at_level(logging.WARNING, "mailwatch.health"):
        Daemon(settings, store, clock=clock(at(0, 15))).nudge_job()
    assert ping_server.paths == []
    assert "mailbox alice: has never synced" in caplog.text


def test_a_ping_that_fails_is_only_logged(smtp_server, store, caplog):
    url = f"http://127.0.0.1:{free_port()}/ping"  # nothing listens there
    settings = settings_for(smtp_server, health=HealthSettings(ping_url=url))
    with caplog.at_level(logging.WARNING, "mailwatch.health"):
        Daemon(settings, store, clock=clock(at(0, 15))).nudge_job()
    assert "health ping failed" in caplog.text


def test_a_failing_nudge_pass_is_logged_and_does_not_escape(store, caplog):
    add_request(store)
    settings = settings_for(None)  # nudges are due but there is no [smtp]
    with caplog.at_level(logging.ERROR, "mailwatch.daemon"):
        Daemon(settings, store, clock=clock(at(0, 15))).nudge_job()
    assert "nudge pass failed" in caplog.text and "no [smtp]" in caplog.text


def test_the_digest_job_sends_the_weekly_digest_once(smtp_server, store):
    add_request(store)
    daemon = Daemon(settings_for(smtp_server), store, clock=clock(at(7, 8)))
    daemon.digest_job("week")
    daemon.digest_job("week")
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "alice@rouge.example",
        "bob@rouge.example",
        "carol@rouge.example",
        HEAD,
    ]


def test_a_poll_job_records_a_mailbox_it_cannot_reach_and_carries_on(store, caplog):
    daemon = Daemon(settings_for(None, mailboxes=(mailbox("alice"),)), store, clock=clock(at(0)))
    daemon.poll_job("alice")
    (state,) = store.sync_states()
    assert (state.mailbox, state.failures) == ("alice", 1)
    daemon.poll_job("removed-by-a-reload")  # nothing happens, nothing raises
    assert len(store.sync_states()) == 1


def test_on_postgresql_a_mailbox_leased_by_another_worker_is_left_to_it(store):
    daemon = Daemon(settings_for(None, mailboxes=(mailbox("alice"),)), store, clock=clock(at(0)))
    store.acquire_lease("mailbox:alice", "other-worker", at(0), timedelta(hours=1))
    daemon.poll_job("alice")
    polled = [s.mailbox for s in store.sync_states()]
    # SQLite has a single writer process: no leases there.
    assert polled == ([] if store.dialect == "postgresql" else ["alice"])


ON_POSTGRESQL = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
FOUR = tuple(mailbox(name) for name in ("alice", "bob", "carol", "dave"))


def held_by(store: Store, now: datetime) -> dict[str, list[str]]:
    """worker -> the mailboxes it holds at `now`."""
    holders: dict[str, list[str]] = {}
    for name, owner in sorted(store.leases(now).items()):
        if name.startswith("mailbox:"):
            holders.setdefault(owner, []).append(name.removeprefix("mailbox:"))
    return holders


def poll_every_mailbox(*workers: Daemon) -> None:
    for worker in workers:
        for box in worker.settings.mailboxes:
            worker.poll_job(box.name)


@ON_POSTGRESQL
def test_two_workers_split_the_mailboxes_even_when_one_started_first(store):
    settings = settings_for(None, mailboxes=FOUR)
    now = at(0)
    first = Daemon(settings, store, clock=lambda: now, worker_id="first")
    second = Daemon(settings, store, clock=lambda: now, worker_id="second")
    poll_every_mailbox(first)  # alone: it takes every mailbox
    poll_every_mailbox(second)
    assert held_by(store, now) == {"first": ["alice", "bob", "carol", "dave"]}
    now = at(0, 0, 2)  # the next polls: the first hands two over, the second takes them
    poll_every_mailbox(first, second)
    assert held_by(store, now) == {"first": ["carol", "dave"], "second": ["alice", "bob"]}
    now = at(0, 0, 4)  # and then it stays that way
    poll_every_mailbox(second, first)
    assert held_by(store, now) == {"first": ["carol", "dave"], "second": ["alice", "bob"]}


@ON_POSTGRESQL
def test_the_mailboxes_of_a_worker_that_stopped_renewing_are_taken_over_after_the_lease_ttl(
    store,
):
    settings = settings_for(None, mailboxes=FOUR)
    now = at(0)
    survivor = Daemon(settings, store, clock=lambda: now, worker_id="survivor")
    dead = Daemon(settings, store, clock=lambda: now, worker_id="dead")
    poll_every_mailbox(survivor, dead, survivor, dead)
    assert sorted(held_by(store, now)) == ["dead", "survivor"]
    now = at(0, 0, 4) + timedelta(seconds=59)  # the dead worker's leases (5 min) still hold
    poll_every_mailbox(survivor)
    assert len(held_by(store, now)["survivor"]) == 2
    now = at(0, 0, 5)
    poll_every_mailbox(survivor)
    assert held_by(store, now) == {"survivor": ["alice", "bob", "carol", "dave"]}


@ON_POSTGRESQL
def test_a_worker_renews_its_lease_on_every_poll_and_gives_them_back_when_it_stops(store):
    settings = settings_for(None, mailboxes=(mailbox("alice"),))
    now = at(0)
    worker = Daemon(settings, store, clock=lambda: now, worker_id="w")
    for minute in range(0, 30, 2):
        now = at(0, 0, minute)
        worker.poll_job("alice")
        assert store.leases(now + timedelta(minutes=4, seconds=59))["mailbox:alice"] == "w"
    worker.worker.release(settings)
    assert store.leases(now) == {}


@ON_POSTGRESQL
def test_a_mailbox_lease_outlives_two_polls_whatever_the_lease_ttl(store):
    settings = settings_for(
        None,
        mailboxes=(replace(mailbox("alice"), poll_interval=timedelta(minutes=10)),),
        daemon=DaemonSettings(lease_ttl=timedelta(minutes=1)),
    )
    Daemon(settings, store, clock=clock(at(0)), worker_id="w").poll_job("alice")
    assert store.leases(at(0, 0, 19))["mailbox:alice"] == "w"
    assert "mailbox:alice" not in store.leases(at(0, 0, 20))


def test_the_schedule_has_one_poll_job_per_mailbox_nudges_and_digests(store):
    settings = settings_for(None, mailboxes=(mailbox("alice"), mailbox("bob")))
    scheduler = BlockingScheduler(timezone=UTC)
    Daemon(settings, store, clock=clock(at(2, 10))).schedule(scheduler)
    leases = ["heartbeat"] if store.dialect == "postgresql" else []  # SQLite: one worker
    assert sorted(job.id for job in scheduler.get_jobs()) == [
        "digest:month",
        "digest:quarter",
        "digest:week",
        *leases,
        "nudge",
        "poll:alice",
        "poll:bob",
        "retention",
    ]


def test_digests_fire_on_the_configured_weekday_and_on_the_first_of_the_month_and_quarter():
    settings = settings_for(None)
    triggers = digest_triggers(replace(settings, policy=policy(timezone="Europe/London")))
    after = datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday
    fires = {name: t.get_next_fire_time(None, after) for name, t in triggers.items()}
    assert fires["week"].astimezone(UTC) == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert fires["month"].astimezone(UTC) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert fires["quarter"].astimezone(UTC) == datetime(2027, 1, 1, 8, tzinfo=UTC)


def test_a_digest_missed_by_a_restart_within_a_day_is_caught_up():
    settings = settings_for(None)
    assert missed_digest(settings, "week", at(7, 9))  # Monday 09:00: the 08:00 send was missed
    assert not missed_digest(settings, "week", at(7, 7))  # not yet due
    assert not missed_digest(settings, "week", at(9, 9))  # Wednesday: too late to send now
    assert missed_digest(settings, "month", datetime(2026, 12, 1, 12, tzinfo=UTC))


def write_config(path: Path, database: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
head_of_client_management = ["head@rouge.example"]

[database]
url = "sqlite:///{database}"

[daemon]
nudge_interval = "1m"
{extra}
"""
    )
    return path


def test_a_reload_with_a_bad_file_keeps_the_old_settings(tmp_path, caplog):
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    settings = load_settings(config)
    store = Store(settings.database_url)
    try:
        daemon = Daemon(settings, store)
        config.write_text(config.read_text() + "\n[bogus]\n")
        with caplog.at_level(logging.ERROR, "mailwatch.daemon"):
            daemon.reload()
        assert daemon.settings is settings
        assert "reload refused" in caplog.text and "bogus" in caplog.text

        write_config(config, tmp_path / "db.sqlite", '\n[health]\nstale_after = "2h"\n')
        daemon.reload()
        assert daemon.settings.health.stale_after == timedelta(hours=2)
    finally:
        store.close()


# ---------------------------------------------------------------- health and backup


def test_health_is_fine_when_every_mailbox_synced_recently_and_sends_succeeded(store):
    now = datetime.now(UTC)
    settings = settings_for(None, mailboxes=(mailbox("alice"),))
    store.record_sync("alice", None, True, None, now - timedelta(minutes=3))
    store.claim("nudge", "<x@acme.example>|reminder", "alice@rouge.example", now)
    store.mark_sent("nudge", "<x@acme.example>|reminder", "alice@rouge.example", now)
    assert health_problems(settings, store, now) == []


def test_health_names_a_stale_mailbox_repeated_failures_and_a_failed_send(store):
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    settings = settings_for(None, mailboxes=(mailbox("alice"), mailbox("bob")))
    store.record_sync("alice", None, True, None, now - timedelta(hours=2))
    store.record_sync("bob", None, True, None, now - timedelta(minutes=5))
    for minutes in (4, 3, 2):
        store.record_sync("bob", "INBOX", False, "FETCH failed", now - timedelta(minutes=minutes))
    store.claim("digest", "week:2026-W48", HEAD, now)
    store.mark_failed("digest", "week:2026-W48", HEAD, "550 5.1.1 no such user", True, now)
    assert health_problems(settings, store, now) == [
        "mailbox alice: last synced 2h ago (limit 30m)",
        "mailbox bob/INBOX: 3 failures in a row: FETCH failed",
        "the last digest to head@rouge.example failed: 550 5.1.1 no such user",
    ]


def test_mailwatch_health_exits_1_and_says_why(tmp_path, capsys):
    config = write_config(
        tmp_path / "mailwatch.toml",
        tmp_path / "db.sqlite",
        '\n[[mailboxes]]\nname = "alice"\nhost = "127.0.0.1"\nsecurity = "none"\n'
        'username = "alice"\npassword_env = "MW_UNUSED"\n',
    )
    assert main(["health", "--config", str(config)]) == 1
    assert "mailbox alice: has never synced" in capsys.readouterr().out

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.record_sync("alice", None, True, None, datetime.now(UTC))
    store.close()
    assert main(["health", "--config", str(config)]) == 0
    assert "healthy" in capsys.readouterr().out


def test_backup_writes_a_consistent_copy_of_sqlite_and_advises_pg_dump_for_postgresql(
    store_url, tmp_path, capsys
):
    database = store_url.removeprefix("sqlite:///") if store_url.startswith("sqlite") else ""
    config = write_config(tmp_path / "mailwatch.toml", Path(database or "unused"))
    if not database:
        config.write_text(config.read_text().replace('"sqlite:///unused"', f'"{store_url}"'))
    store = Store(store_url)
    store.upgrade()
    add_request(store)
    store.close()

    code = main(["backup", str(tmp_path / "copy.db"), "--config", str(config)])

    if database:
        assert code == 0
        with closing(sqlite3.connect(tmp_path / "copy.db")) as copy:
            keys = copy.execute("select key from message").fetchall()
        assert keys == [("<banner@acme.example>",)]
        assert (tmp_path / "copy.db").stat().st_mode & 0o077 == 0
    else:
        assert code == 1 and "pg_dump" in capsys.readouterr().err
        assert not (tmp_path / "copy.db").exists()


# ---------------------------------------------------------------- the real daemon


def start_daemon(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mailwatch", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(process: subprocess.Popen, needle: str, seconds: float = 20) -> str:
    """Read the daemon's log until `needle` appears; fail when it does not in time."""
    # Read the pipe's descriptor, not the text wrapper: a readline() leaves the rest of a
    # chunk in the wrapper's buffer, where select() cannot see it waiting.
    assert process.stderr is not None
    descriptor = process.stderr.fileno()
    seen = ""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and process.poll() is None, f"no {needle!r} in: {seen}"
        ready, _, _ = select.select([descriptor], [], [], left)
        if ready:
            seen += os.read(descriptor, 65536).decode(errors="replace")
    return seen


def test_run_starts_reloads_on_sighup_refuses_a_bad_file_and_stops_on_sigterm(tmp_path):
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    process = start_daemon(config)
    try:
        wait_for(process, "mailwatch running")
        config.write_text(config.read_text() + "\nnot toml at all [[\n")
        process.send_signal(signal.SIGHUP)
        wait_for(process, "reload refused")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


@pytest.fixture
def daemon_signals() -> Iterator[None]:
    """run() installs its handlers in this process: the test's own come back after."""
    kept = {
        number: signal.getsignal(number)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    yield
    for number, handler in kept.items():
        signal.signal(number, handler)


def run_until_stopped(daemon: Daemon) -> float:
    """Seconds run() took; a run that ignored the stop is ended by a SIGINT after 10 s."""
    started = time.monotonic()
    rescue = threading.Timer(10, os.kill, (os.getpid(), signal.SIGINT))
    rescue.start()
    try:
        assert daemon.run() == 0
    finally:
        rescue.cancel()
    return time.monotonic() - started


@pytest.mark.parametrize("when", ["before run", "while run starts"])
def test_a_stop_asked_for_before_the_scheduler_starts_is_honoured(
    store, daemon_signals, monkeypatch, caplog, when
):
    daemon = Daemon(settings_for(None), store, clock=clock(at(0)))
    if when == "before run":
        daemon.request_stop()
    else:  # SIGTERM between the handlers' installation and the scheduler's start
        handle_signals = daemon.handle_signals

        def then_sigterm() -> None:
            handle_signals()
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(daemon, "handle_signals", then_sigterm)
    with caplog.at_level(logging.INFO, "mailwatch.daemon"):
        assert run_until_stopped(daemon) < 5
    assert "mailwatch running" not in caplog.text and "stopped" in caplog.text
    assert not daemon.running.is_set()


def test_run_refuses_an_outdated_schema_and_names_the_fix(tmp_path, capsys):
    database = tmp_path / "db.sqlite"
    config = write_config(tmp_path / "mailwatch.toml", database)
    store = Store(f"sqlite:///{database}")
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    store.close()
    assert main(["run", "--config", str(config)]) == 1
    assert "mailwatch migrate" in capsys.readouterr().err


def test_a_second_run_on_the_same_sqlite_database_refuses_in_one_line_and_the_first_runs_on(
    tmp_path,
):
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    first = start_daemon(config)
    try:
        wait_for(first, "mailwatch running")
        second = subprocess.run(
            [sys.executable, "-m", "mailwatch", "run", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        still_running = first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()
        first.stderr.close()

    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    # the line before it: the start-up log (the schema check) every `run` writes
    assert second.stderr.splitlines()[-1:] == [
        f"mailwatch: another `mailwatch run` is using {tmp_path / 'db.sqlite'} (it holds "
        f"{tmp_path / 'db.sqlite'}.daemon-lock); stop it first (several workers need PostgreSQL)"
    ]
    assert still_running
