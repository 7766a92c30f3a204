"""`mailwatch run`: the scheduler shell around the poll, nudge and digest passes.

Each job reads the clock once, does one bounded pass, and catches and logs
its own exceptions: one bad pass never stops the daemon.  How each pass went is
recorded (`jobs.py`): a job that keeps failing is a health problem and an alert.
After each nudge pass the alert check (`alerts.py`) tells `[alerts] to` what
started or stopped going wrong.  Jobs live in
APScheduler's memory store and are rebuilt from the configuration at start
and on SIGHUP; what must survive a restart (claims, checkpoints) is in the
database.

Several workers may share a PostgreSQL database: each mailbox is polled only
by the worker holding its lease (`workers.py`).  Nudges and digests are claimed
before they are sent, so every worker runs those passes and none is sent twice.

IMAP IDLE: for each mailbox with `idle = true` that this worker polls (on
PostgreSQL: whose lease it holds), an `idle.IdleWatcher` thread waits on INBOX
with IDLE on a connection of its own and polls the mailbox as soon as mail
arrives; a poll it asks for waits for a scheduled poll of the same mailbox in
progress, never runs beside it. The poll_interval polls go on regardless (they
cover the other folders, and servers without IDLE). Watchers stop on SIGTERM,
on SIGHUP (the polls that follow a reload start them again with the new
settings) and when the mailbox's lease goes to another worker.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from types import FrameType
from typing import TypeVar
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailwatch.alerts import AlertRun, check_alerts
from mailwatch.bootstrap import make_mailer, make_renderer, utc_now
from mailwatch.client_reports import ClientReportRun, send_client_reports
from mailwatch.config import ConfigError, MailboxSettings, Settings, load_settings
from mailwatch.core.durations import human_duration
from mailwatch.core.periods import last_complete
from mailwatch.digests import DigestRun, send_digests
from mailwatch.evaluation import refresh_requests
from mailwatch.health import ping_if_healthy
from mailwatch.idle import IdleWatchers
from mailwatch.jobs import forget_jobs_except, record_job
from mailwatch.nudging import NudgeRun, send_due_nudges
from mailwatch.privacy import apply_retention
from mailwatch.progress import log_progress
from mailwatch.store.repository import Store
from mailwatch.sync import SyncHistory, poll_all
from mailwatch.systemd import notify, watchdog_interval
from mailwatch.workers import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

# A job that starts late (the machine slept, a long poll ran over) still runs
# if it is at most this late; coalesce folds the missed runs into one.
MISFIRE_GRACE = 15 * 60
# After a restart, a digest whose scheduled time passed less than this long ago
# is sent at once (claims make that safe if it was in fact sent).
DIGEST_CATCH_UP = timedelta(hours=24)
# Retention runs once a day, the first time shortly after start.
RETENTION_INTERVAL = timedelta(days=1)
RETENTION_DELAY = timedelta(minutes=5)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def attempt(what: str, call: Callable[[], T]) -> T | None:
    """One pass of a job: its failure is logged, and None returned, never raised."""
    try:
        return call()
    except Exception:
        log.exception("%s failed", what)
        return None


def poll_job_name(mailbox: str) -> str:
    return f"poll of mailbox {mailbox}"


def _one_line(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        worker_id: str | None = None,
    ):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.renderer = make_renderer()
        # Backoff and refused logins, kept across polls; refused logins also across runs.
        # Set by SIGTERM or SIGINT, at any moment: before run() or while it starts too.
        # A poll stops at its next batch then (a first sync of years must not hold the stop).
        self.stop_requested = threading.Event()
        self.history = SyncHistory(
            refusals=store, progress=log_progress(log), stopping=self.stop_requested
        )
        self.worker = Worker(store, self.history, worker_id)
        self.idle = IdleWatchers(self.history, clock)
        self.scheduler: BlockingScheduler | None = None
        self.poll_locks: dict[str, threading.Lock] = {}  # one poll of a mailbox at a time
        # Set while run() runs: one-off calls of the jobs never start IDLE threads.
        self.running = threading.Event()

    @property
    def shares_mailboxes(self) -> bool:
        """SQLite has one writer process; workers share mailboxes on PostgreSQL only."""
        return self.store.dialect == "postgresql"

    # ------------------------------------------------------------ jobs

    def attempt_job(self, what: str, call: Callable[[], T], now: datetime) -> T | None:
        """`attempt` one pass of a job, and record how it went."""
        try:
            result = call()
        except Exception as error:
            log.exception("%s failed", what)
            self.record_job(what, _one_line(error), now)
            return None
        self.record_job(what, None, now)
        return result

    def record_job(self, what: str, error: str | None, now: datetime) -> None:
        # The database may be what fails: then this is logged too, and the daemon goes on.
        attempt(f"recording the {what}", lambda: record_job(self.store, what, error, now))

    def poll_job(self, name: str) -> None:
        """Scheduled, or asked for by the mailbox's IDLE watcher."""
        with self.poll_locks.setdefault(name, threading.Lock()):
            now = self.clock()
            try:
                self.attempt_job(poll_job_name(name), lambda: self.poll(name, now), now)
            finally:
                self.worker.done(name)
                if not self.running.is_set() or name not in self.mailbox_names():
                    # stopped or removed while this poll ran: it kept the session after
                    # disconnect() or the reload had closed the others
                    self.history.close_sessions([name])

    def poll(self, name: str, now: datetime) -> None:
        mailbox = next((m for m in self.settings.mailboxes if m.name == name), None)
        if mailbox is None:
            return  # removed by a reload; its job goes with the next schedule
        if self.shares_mailboxes and not self.worker.take_turn(self.settings, mailbox, now):
            self.idle.stop([name])  # the worker holding the lease watches it
            self.history.close_sessions([name])
            return
        one = replace(self.settings, mailboxes=(mailbox,))
        (result,) = poll_all(one, self.store, now, self.history)
        self.watch(mailbox)  # after the poll: a login it had refused, IDLE does not retry
        if result.new_messages and not self.stop_requested.is_set():
            refresh_requests(self.settings, self.store, now)  # else the next evaluation does
        counts = (result.fetched, result.new_messages)
        log.info("%s: fetched %d, %d new", name, *counts, extra={"mailbox": name})

    def mailbox_names(self) -> set[str]:
        return {mailbox.name for mailbox in self.settings.mailboxes}

    def watch(self, mailbox: MailboxSettings) -> None:
        """While the daemon runs, keep an IDLE watcher on a mailbox it polls (idle = true)."""
        if self.running.is_set() and mailbox.idle:
            self.idle.watch(mailbox, lambda: self.poll_job(mailbox.name))

    def disconnect(self) -> None:
        """Stop every IDLE watcher and log out of the connections kept between polls."""
        self.idle.stop()
        self.history.close_sessions()

    def nudge_job(self) -> None:
        now = self.clock()
        run = self.attempt_job("nudge pass", lambda: self.send_nudges(now), now)
        self.attempt_job("alert check", lambda: self.check_alerts(now), now)
        if run is None:
            return
        if run.sent or run.failed:
            sent, failed = len(run.sent), len(run.failed)
            log.info("nudges: %d sent in %d email(s), %d failed", sent, run.emails, failed)
        ping_if_healthy(self.settings, self.store, now)

    def send_nudges(self, now: datetime) -> NudgeRun:
        mailer = make_mailer(self.settings)
        return send_due_nudges(
            self.settings, self.store, now, mailer=mailer, renderer=self.renderer
        )

    def check_alerts(self, now: datetime) -> AlertRun:
        mailer = make_mailer(self.settings)
        return check_alerts(self.settings, self.store, now, mailer=mailer, renderer=self.renderer)

    def digest_job(self, period: str) -> None:
        now = self.clock()
        run = self.attempt_job(f"{period} digest", lambda: self.send_digests(now, period), now)
        if run is None:
            return
        for line in run.lines:
            log.info("digest %s: %s", run.period.key, line)

    def send_digests(self, now: datetime, period: str) -> DigestRun:
        mailer = make_mailer(self.settings)
        return send_digests(
            self.settings, self.store, now, period, mailer=mailer, renderer=self.renderer
        )

    def client_report_job(self) -> None:
        now = self.clock()
        run = self.attempt_job("client reports", lambda: self.send_client_reports(now), now)
        for line in run.lines if run is not None else ():
            log.info("client report: %s", line)

    def send_client_reports(self, now: datetime) -> ClientReportRun:
        mailer = make_mailer(self.settings)
        return send_client_reports(
            self.settings, self.store, now, mailer=mailer, renderer=self.renderer
        )

    def retention_job(self) -> None:
        now = self.clock()
        done = self.attempt_job(
            "retention pass", lambda: apply_retention(self.settings, self.store, now), now
        )
        if done is not None and done.deleted:
            cutoff = done.cutoff.isoformat()
            log.info(
                "retention: deleted %d message(s) that arrived before %s", done.deleted, cutoff
            )

    def heartbeat_job(self) -> None:
        self.worker.heartbeat(self.settings, self.clock())

    def watchdog_job(self) -> None:
        """Runs in the scheduler's thread pool: it stops when the scheduler stops running
        jobs, and then systemd restarts the service."""
        notify("WATCHDOG=1")

    # ------------------------------------------------------------ running

    def schedule(self, scheduler: BlockingScheduler) -> None:
        """(Re)build every job from the current settings."""
        settings = self.settings
        zone = ZoneInfo(settings.policy.timezone)
        now = self.clock()
        scheduler.remove_all_jobs()
        for mailbox in settings.mailboxes:
            every = IntervalTrigger(seconds=mailbox.poll_interval.total_seconds(), timezone=zone)
            poll_id = f"poll:{mailbox.name}"
            scheduler.add_job(self.poll_job, every, [mailbox.name], id=poll_id, next_run_time=now)
        # Shortly after start, so the first polls have landed.
        first_nudges = now + min(settings.daemon.nudge_interval, timedelta(minutes=1))
        nudges = IntervalTrigger(
            seconds=settings.daemon.nudge_interval.total_seconds(), timezone=zone
        )
        scheduler.add_job(self.nudge_job, nudges, id="nudge", next_run_time=first_nudges)
        if self.shares_mailboxes:
            beats = IntervalTrigger(seconds=settings.daemon.lease_ttl.total_seconds() / 3)
            scheduler.add_job(self.heartbeat_job, beats, id="heartbeat", next_run_time=now)
        daily = IntervalTrigger(seconds=RETENTION_INTERVAL.total_seconds(), timezone=zone)
        first_retention = now + RETENTION_DELAY
        scheduler.add_job(self.retention_job, daily, id="retention", next_run_time=first_retention)
        if (beat := watchdog_interval()) is not None:
            watchdog = IntervalTrigger(seconds=beat.total_seconds())
            scheduler.add_job(self.watchdog_job, watchdog, id="watchdog", next_run_time=now)
        for period, trigger in digest_triggers(settings).items():
            # A digest missed by a restart goes out with the first nudges.
            catch_up = (
                {"next_run_time": first_nudges} if missed_digest(settings, period, now) else {}
            )
            scheduler.add_job(self.digest_job, trigger, [period], id=f"digest:{period}", **catch_up)
        attempt(
            "forgetting the failures of jobs no longer scheduled",
            lambda: forget_jobs_except(self.store, self.job_names()),
        )
        if settings.client_reports.periods:
            # Daily from the configured day to the month's end, and at start: a report a
            # stopped daemon missed goes out late rather than never (claims: once).
            at = settings.digests.at
            daily_at = CronTrigger(hour=at.hour, minute=at.minute, timezone=zone)
            scheduler.add_job(
                self.client_report_job, daily_at, id="client-reports", next_run_time=first_nudges
            )

    def job_names(self) -> set[str]:
        """The names the jobs of the current settings record their passes under."""
        names = {poll_job_name(mailbox.name) for mailbox in self.settings.mailboxes}
        names |= {"nudge pass", "alert check", "retention pass"}
        names |= {f"{period} digest" for period in digest_triggers(self.settings)}
        if self.settings.client_reports.periods:
            names.add("client reports")
        return names

    def reload(self) -> None:
        """SIGHUP: read the file again; a bad file is refused and the old settings kept."""
        try:
            fresh = load_settings(self.settings.source)
        except ConfigError as error:
            log.error("configuration reload refused, keeping the running one: %s", error)
            return
        if fresh.database_url != self.settings.database_url:
            log.warning("database.url changed: that takes a restart; the old database stays")
            fresh = replace(fresh, database_url=self.settings.database_url)
        self.settings = fresh
        self.idle.stop()  # the polls that schedule() starts at once restart them
        self.history.close_sessions(set(self.history.sessions) - self.mailbox_names())
        if self.scheduler is not None:
            self.schedule(self.scheduler)
        log.info("configuration reloaded from %s", fresh.source)

    def request_stop(self) -> None:
        """Stop the scheduler, or keep it from starting: run() then cleans up and returns."""
        self.stop_requested.set()
        if self.scheduler is not None and self.scheduler.running:
            shut_down(self.scheduler)

    def run(self) -> int:
        try:
            with one_daemon_per_sqlite_file(self.store):
                return self.run_scheduler()
        except AlreadyRunning as error:
            print(f"mailwatch: {error}", file=sys.stderr)
            # 2: the unit is not restarted (RestartPreventExitStatus=2); a restart cannot
            # help while the other daemon runs, and it would log this every 30 seconds
            return 2

    def run_scheduler(self) -> int:
        zone = ZoneInfo(self.settings.policy.timezone)
        scheduler = BlockingScheduler(
            timezone=zone,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE,
            },
        )
        self.scheduler = scheduler
        self.schedule(scheduler)
        scheduler.add_listener(lambda _event: self.started(), EVENT_SCHEDULER_STARTED)
        self.handle_signals()
        self.running.set()
        if not self.stop_requested.is_set():
            scheduler.start()  # returns after shutdown()
        self.running.clear()
        self.disconnect()
        if self.shares_mailboxes:
            self.worker.release(self.settings)
        log.info("stopped")
        return 0

    def started(self) -> None:
        if self.stop_requested.is_set():  # asked for while the scheduler was starting
            self.request_stop()
            return
        log.info(
            "mailwatch running as %s: %d mailbox(es), nudges every %s",
            self.worker.id,
            len(self.settings.mailboxes),
            human_duration(self.settings.daemon.nudge_interval.total_seconds()),
        )
        notify("READY=1")

    def handle_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            notify("STOPPING=1")
            self.request_stop()

        def hang_up(_signum: int, _frame: FrameType | None) -> None:
            # Not in the handler itself: it may interrupt the scheduler holding its lock.
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hang_up)


def shut_down(scheduler: BlockingScheduler) -> None:
    try:
        scheduler.shutdown(wait=False)
    except SchedulerNotRunningError:
        pass  # a signal and the start listener both asked for it


def digest_triggers(settings: Settings) -> dict[str, CronTrigger]:
    digests = settings.digests
    zone = ZoneInfo(settings.policy.timezone)
    at = {"hour": digests.at.hour, "minute": digests.at.minute, "timezone": zone}
    triggers = {}
    if digests.weekly:
        triggers["week"] = CronTrigger(day_of_week=WEEKDAYS[digests.weekday], **at)
    if digests.monthly:
        triggers["month"] = CronTrigger(day=1, **at)
    if digests.quarterly:
        triggers["quarter"] = CronTrigger(month="1,4,7,10", day=1, **at)
    return triggers


def missed_digest(settings: Settings, period: str, now: datetime) -> bool:
    """Whether this period's digest was due to go out in the last DIGEST_CATCH_UP."""
    zone = ZoneInfo(settings.policy.timezone)
    current_start = last_complete(period, now, settings.policy.timezone).end
    day = current_start.astimezone(zone).date()
    if period == "week":
        day += timedelta(days=settings.digests.weekday)
    scheduled = datetime.combine(day, settings.digests.at, zone)
    # A late weekday (Sunday) falls after the start of the next week: look a week back too.
    candidates = [scheduled, scheduled - timedelta(days=7)] if period == "week" else [scheduled]
    return any(timedelta(0) <= now - moment < DIGEST_CATCH_UP for moment in candidates)


class AlreadyRunning(Exception):
    pass


@contextmanager
def one_daemon_per_sqlite_file(store: Store) -> Iterator[None]:
    """On SQLite, the only daemon on the database: two would both poll every mailbox
    (workers share mailboxes on PostgreSQL only). The lock is a file beside the database,
    released by the kernel however the process ends."""
    database = store.url.database
    if store.dialect != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = f"{database}.daemon-lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another `mailwatch run` is using {database} (it holds {path}); "
                "stop it first (several workers need PostgreSQL)"
            ) from None
        yield
    finally:
        os.close(descriptor)
