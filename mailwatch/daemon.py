"""`mailwatch run`: the scheduler shell around the poll, nudge and digest passes.

Each job reads the clock once, does one bounded pass, and catches and logs
its own exceptions: one bad pass never stops the daemon.  Jobs live in
APScheduler's memory store and are rebuilt from the configuration at start
and on SIGHUP; what must survive a restart (claims, checkpoints) is in the
database.

Several workers may share a PostgreSQL database.  Each mailbox is polled only
by the worker holding its lease (renewed on every poll, and while a poll runs),
and a worker takes a free mailbox only while it holds fewer than its share
(mailboxes / live workers, rounded up) and hands one back while it holds
more, so the mailboxes split evenly.  A worker is live while its own lease,
renewed every lease_ttl / 3, has not expired.  A worker that dies stops
renewing: after lease_ttl its mailboxes are free and the next poll of each by
a survivor takes it over.  Nudges and digests are claimed before they are sent,
so every worker runs those passes and none is sent twice.

IMAP IDLE: for each mailbox with `idle = true` that this worker polls (on
PostgreSQL: whose lease it holds), an `idle.IdleWatcher` thread waits on INBOX
with IDLE on a connection of its own and polls the mailbox as soon as mail
arrives; a poll it asks for waits for a scheduled poll of the same mailbox in
progress, never runs beside it. The poll_interval polls go on regardless (they
cover the other folders, and servers without IDLE). Watchers stop on SIGTERM,
on SIGHUP (the polls that follow a reload start them again with the new
settings) and when the mailbox's lease goes to another worker.

Also here: `health_problems` (for `mailwatch health` and the ping after a
healthy cycle) and `backup` (SQLite online backup).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sqlite3
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailwatch.config import ConfigError, MailboxSettings, Settings, load_settings
from mailwatch.core.durations import human_duration
from mailwatch.core.periods import last_complete
from mailwatch.digests import DIGEST, send_digests
from mailwatch.evaluation import refresh_requests
from mailwatch.idle import IdleWatcher
from mailwatch.nudging import NUDGE, send_due_nudges
from mailwatch.privacy import apply_retention
from mailwatch.store.repository import Claim, Store
from mailwatch.sync import SyncHistory, poll_all
from mailwatch.systemd import notify, watchdog_interval

log = logging.getLogger(__name__)

# A job that starts late (the machine slept, a long poll ran over) still runs
# if it is at most this late; coalesce folds the missed runs into one.
MISFIRE_GRACE = 15 * 60
# A mailbox's lease outlives at least this many polls, so a live worker keeps it
# between polls however short lease_ttl is.
LEASE_POLLS = 2
MAILBOX_LEASE = "mailbox:"
WORKER_LEASE = "worker:"
# One failed poll is weather; this many in a row is a problem worth paging for.
HEALTH_FAILURES = 3
PING_TIMEOUT = 10.0
# After a restart, a digest whose scheduled time passed less than this long ago
# is sent at once (claims make that safe if it was in fact sent).
DIGEST_CATCH_UP = timedelta(hours=24)
# Retention runs once a day, the first time shortly after start.
RETENTION_INTERVAL = timedelta(days=1)
RETENTION_DELAY = timedelta(minutes=5)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def utc_now() -> datetime:
    return datetime.now(UTC)


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
        self.history = SyncHistory()  # backoff and refused logins, kept across polls
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scheduler: BlockingScheduler | None = None
        self._deciding = threading.Lock()  # one lease decision at a time in this process
        self._polling: set[str] = set()  # mailboxes being polled now: the heartbeat keeps them
        self._poll_locks: dict[str, threading.Lock] = {}  # one poll of a mailbox at a time
        self.running = False  # set by run(): one-off calls of the jobs never start IDLE threads
        self.watchers: dict[str, IdleWatcher] = {}
        self._watching = threading.Lock()

    @property
    def shares_mailboxes(self) -> bool:
        """SQLite has one writer process; workers share mailboxes on PostgreSQL only."""
        return self.store.dialect == "postgresql"

    # ------------------------------------------------------------ jobs

    def poll_job(self, name: str) -> None:
        """Scheduled, or asked for by the mailbox's IDLE watcher."""
        with self._poll_locks.setdefault(name, threading.Lock()):
            self.poll(name)

    def poll(self, name: str) -> None:
        now = self.clock()
        try:
            mailbox = next((m for m in self.settings.mailboxes if m.name == name), None)
            if mailbox is None:
                return  # removed by a reload; its job goes with the next schedule
            if self.shares_mailboxes and not self.take_turn(mailbox, now):
                self.stop_watching([name])  # the worker holding the lease watches it
                self.history.close_sessions([name])
                return
            self.watch(mailbox)
            one = replace(self.settings, mailboxes=(mailbox,))
            (result,) = poll_all(one, self.store, now, self.history)
            if result.new_messages:
                refresh_requests(self.settings, self.store, now)
            log.info("%s: fetched %d, %d new", name, result.fetched, result.new_messages)
        except Exception:
            log.exception("poll of mailbox %s failed", name)
        finally:
            self._polling.discard(name)
            if not self.running or name not in {m.name for m in self.settings.mailboxes}:
                # stopped or removed while this poll ran: it kept the session after
                # disconnect() or the reload had closed the others
                self.history.close_sessions([name])

    def take_turn(self, mailbox: MailboxSettings, now: datetime) -> bool:
        """Whether this worker polls `mailbox` now; takes or renews its lease if so."""
        lease = MAILBOX_LEASE + mailbox.name
        with self._deciding:
            self.heartbeat(now)
            leases = self.store.leases(now)
            holder = leases.get(lease)
            if holder not in (None, self.worker_id):
                log.debug("%s: worker %s holds this mailbox", mailbox.name, holder)
                return False
            share = self.fair_share(leases)
            mine = {MAILBOX_LEASE + m.name for m in self.settings.mailboxes}
            held = sum(1 for name in mine if leases.get(name) == self.worker_id)
            if holder is None and held >= share:
                return False  # a worker below its share will take it
            if holder is not None and held > share:
                self.history.close_sessions([mailbox.name])  # before the next holder logs in
                self.store.release_lease(lease, self.worker_id)
                log.info("%s: handed over to another worker (held %d, share %d)",
                         mailbox.name, held, share)  # fmt: skip
                return False
            ttl = max(self.settings.daemon.lease_ttl, mailbox.poll_interval * LEASE_POLLS)
            if not self.store.acquire_lease(lease, self.worker_id, now, ttl):
                return False  # another worker took it a moment ago
            if holder is None:
                log.info("%s: taken by worker %s", mailbox.name, self.worker_id)
            self._polling.add(mailbox.name)
            return True

    def fair_share(self, leases: dict[str, str]) -> int:
        workers = sum(1 for name in leases if name.startswith(WORKER_LEASE))
        return math.ceil(len(self.settings.mailboxes) / max(workers, 1))

    def heartbeat(self, now: datetime | None = None) -> None:
        """Say this worker is live, and keep the leases of the mailboxes it is polling now
        (a first sync can outlast lease_ttl)."""
        now = now or self.clock()
        ttl = self.settings.daemon.lease_ttl
        try:
            self.store.acquire_lease(WORKER_LEASE + self.worker_id, self.worker_id, now, ttl)
            for mailbox in self.settings.mailboxes:
                if mailbox.name in self._polling:
                    renewal = max(ttl, mailbox.poll_interval * LEASE_POLLS)
                    lease = MAILBOX_LEASE + mailbox.name
                    self.store.acquire_lease(lease, self.worker_id, now, renewal)
        except Exception:
            log.exception("lease heartbeat failed")

    def release_leases(self) -> None:
        """At a clean stop: the others need not wait for the leases to expire."""
        for mailbox in self.settings.mailboxes:
            self.store.release_lease(MAILBOX_LEASE + mailbox.name, self.worker_id)
        self.store.release_lease(WORKER_LEASE + self.worker_id, self.worker_id)

    def watch(self, mailbox: MailboxSettings) -> None:
        """While the daemon runs, keep an IDLE watcher on a mailbox it polls (idle = true)."""
        if not (self.running and mailbox.idle):
            return
        with self._watching:
            current = self.watchers.get(mailbox.name)
            if current is not None and current.mailbox == mailbox:
                return  # also one that ended because the server has no IDLE
            if current is not None:
                current.stop()
            watcher = IdleWatcher(mailbox, self.history, lambda: self.poll_job(mailbox.name))
            self.watchers[mailbox.name] = watcher
            watcher.start()

    def stop_watching(self, names: list[str] | None = None) -> None:
        """Stop the IDLE watchers of these mailboxes (None: all), together."""
        with self._watching:
            names = list(self.watchers) if names is None else names
            stopping = [self.watchers.pop(name) for name in names if name in self.watchers]
        for watcher in stopping:
            watcher.stopping.set()
        for watcher in stopping:
            watcher.stop()

    def disconnect(self) -> None:
        """Stop every IDLE watcher and log out of the connections kept between polls."""
        self.stop_watching()
        self.history.close_sessions()

    def nudge_job(self) -> None:
        now = self.clock()
        try:
            run = send_due_nudges(self.settings, self.store, now)
        except Exception:
            log.exception("nudge pass failed")
            return
        if run.sent or run.failed:
            log.info("nudges: %d sent in %d email(s), %d failed", len(run.sent), run.emails,
                     len(run.failed))  # fmt: skip
        self.ping_if_healthy(now)

    def digest_job(self, period: str) -> None:
        now = self.clock()
        try:
            run = send_digests(self.settings, self.store, now, period)
        except Exception:
            log.exception("%s digest failed", period)
            return
        for line in run.lines:
            log.info("digest %s: %s", run.period.key, line)

    def retention_job(self) -> None:
        now = self.clock()
        try:
            done = apply_retention(self.settings, self.store, now)
        except Exception:
            log.exception("retention pass failed")
            return
        if done.deleted:
            log.info("retention: deleted %d message(s) that arrived before %s", done.deleted,
                     done.cutoff.isoformat())  # fmt: skip

    def watchdog_job(self) -> None:
        """Runs in the scheduler's thread pool: it stops when the scheduler stops running
        jobs, and then systemd restarts the service."""
        notify("WATCHDOG=1")

    def ping_if_healthy(self, now: datetime) -> None:
        url = self.settings.health.ping_url
        if not url:
            return
        problems = health_problems(self.settings, self.store, now)
        if problems:
            log.warning("not pinging the health URL: %s", "; ".join(problems))
            return
        ping(url)

    # ------------------------------------------------------------ schedule

    def schedule(self, scheduler: BlockingScheduler) -> None:
        """(Re)build every job from the current settings."""
        settings = self.settings
        zone = ZoneInfo(settings.policy.timezone)
        now = self.clock()
        scheduler.remove_all_jobs()
        for mailbox in settings.mailboxes:
            scheduler.add_job(
                self.poll_job,
                IntervalTrigger(seconds=mailbox.poll_interval.total_seconds(), timezone=zone),
                args=[mailbox.name],
                id=f"poll:{mailbox.name}",
                next_run_time=now,
            )
        # Shortly after start, so the first polls have landed.
        first_nudges = now + min(settings.daemon.nudge_interval, timedelta(minutes=1))
        scheduler.add_job(
            self.nudge_job,
            IntervalTrigger(seconds=settings.daemon.nudge_interval.total_seconds(), timezone=zone),
            id="nudge",
            next_run_time=first_nudges,
        )
        if self.shares_mailboxes:
            scheduler.add_job(
                self.heartbeat,
                IntervalTrigger(seconds=settings.daemon.lease_ttl.total_seconds() / 3),
                id="heartbeat",
                next_run_time=now,
            )
        scheduler.add_job(
            self.retention_job,
            IntervalTrigger(seconds=RETENTION_INTERVAL.total_seconds(), timezone=zone),
            id="retention",
            next_run_time=now + RETENTION_DELAY,
        )
        if (beat := watchdog_interval()) is not None:
            scheduler.add_job(
                self.watchdog_job,
                IntervalTrigger(seconds=beat.total_seconds()),
                id="watchdog",
                next_run_time=now,
            )
        for period, trigger in digest_triggers(settings).items():
            missed = missed_digest(settings, period, now)
            scheduler.add_job(
                self.digest_job,
                trigger,
                args=[period],
                id=f"digest:{period}",
                **({"next_run_time": first_nudges} if missed else {}),
            )

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
        self.stop_watching()  # the polls that schedule() starts at once restart them
        self.history.close_sessions(
            set(self.history.sessions) - {mailbox.name for mailbox in fresh.mailboxes}
        )
        if self.scheduler is not None:
            self.schedule(self.scheduler)
        log.info("configuration reloaded from %s", fresh.source)

    def run(self) -> int:
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

        def started(_event: object) -> None:
            log.info(
                "mailwatch running as %s: %d mailbox(es), nudges every %s",
                self.worker_id,
                len(self.settings.mailboxes),
                human_duration(self.settings.daemon.nudge_interval.total_seconds()),
            )
            notify("READY=1")

        scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            notify("STOPPING=1")
            if scheduler.running:
                scheduler.shutdown(wait=False)
            else:  # a signal before the scheduler started: it must not start at all
                self.running = False

        def hang_up(_signum: int, _frame: FrameType | None) -> None:
            # Not in the handler itself: it may interrupt the scheduler holding its lock.
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hang_up)
        self.running = True
        if self.running:  # unless a signal came first
            scheduler.start()  # returns after shutdown()
        self.running = False
        self.disconnect()
        if self.shares_mailboxes:
            self.release_leases()
        log.info("stopped")
        return 0


def digest_triggers(settings: Settings) -> dict[str, CronTrigger]:
    digests = settings.digests
    zone = ZoneInfo(settings.policy.timezone)
    at = {"hour": digests.at.hour, "minute": digests.at.minute, "timezone": zone}
    triggers = {}
    if digests.weekly:
        triggers["week"] = CronTrigger(day_of_week=_WEEKDAYS[digests.weekday], **at)
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


def ping(url: str) -> None:
    """Tell the outside dead-man's switch we are alive; its failures are only logged."""
    try:
        with urllib.request.urlopen(url, timeout=PING_TIMEOUT) as response:
            response.read(1024)
    except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
        log.warning("health ping failed: %s", error)


# ---------------------------------------------------------------- health


def health_problems(settings: Settings, store: Store, now: datetime) -> list[str]:
    """Why mailwatch is not healthy now; empty when it is."""
    problems = []
    stale_after = settings.health.stale_after
    states = store.sync_states()
    whole = {s.mailbox: s for s in states if s.folder is None}
    for mailbox in settings.mailboxes:
        state = whole.get(mailbox.name)
        if state is None or state.last_ok_at is None:
            problems.append(f"mailbox {mailbox.name}: has never synced")
        elif now - state.last_ok_at > stale_after:
            since = human_duration((now - state.last_ok_at).total_seconds())
            limit = human_duration(stale_after.total_seconds())
            problems.append(f"mailbox {mailbox.name}: last synced {since} ago (limit {limit})")
        for s in states:
            if s.mailbox == mailbox.name and s.failures >= HEALTH_FAILURES:
                where = mailbox.name if s.folder is None else f"{mailbox.name}/{s.folder}"
                problems.append(f"mailbox {where}: {s.failures} failures in a row: {s.last_error}")
    for kind in (NUDGE, DIGEST):
        claims = store.claims(kind)
        if not claims:
            continue
        last = max(claims, key=_latest_event)
        if last.sent_at is None and last.error:
            problems.append(f"the last {kind} to {last.recipient} failed: {last.error}")
    return problems


def _latest_event(claim: Claim) -> datetime:
    return max(t for t in (claim.claimed_at, claim.sent_at, claim.failed_at) if t is not None)


# ---------------------------------------------------------------- backup


class BackupUnsupported(Exception):
    pass


def backup(store: Store, destination: Path) -> None:
    """A consistent copy of the SQLite database while the daemon runs (online backup API).

    Written to a temporary file beside the destination, then renamed over it,
    so a failed backup never leaves half a file where the last good one was.
    """
    if store.dialect != "sqlite" or not store.url.database:
        raise BackupUnsupported(
            "the database is PostgreSQL: back it up with pg_dump, e.g. "
            "`pg_dump --format=custom --file=mailwatch.dump DBNAME` (restore: pg_restore)"
        )
    destination = destination.resolve()
    descriptor, temporary = tempfile.mkstemp(prefix=".mailwatch-backup-", dir=destination.parent)
    os.close(descriptor)  # mkstemp made it 0600: the copy holds staff mail headers
    try:
        source = sqlite3.connect(store.url.database)
        target = sqlite3.connect(temporary)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
