"""Whether mailwatch is healthy (`mailwatch health`, and the ping after a healthy nudge
pass), and `mailwatch backup` (SQLite online backup)."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from mailwatch.claims import PROMISED_MAIL
from mailwatch.config import Settings
from mailwatch.core.durations import human_duration
from mailwatch.evaluation import attention, evaluation_failure
from mailwatch.jobs import KEEPS_FAILING, failing_jobs
from mailwatch.store.repository import Claim, Store, SyncState

log = logging.getLogger(__name__)

# One failed poll is weather; this many in a row is a problem worth paging for.
HEALTH_FAILURES = KEEPS_FAILING
PING_TIMEOUT = 10.0


def health_problems(settings: Settings, store: Store, now: datetime) -> list[str]:
    """Why mailwatch is not healthy now; empty when it is."""
    return (
        sync_problems(settings, store.sync_states(), now)
        + send_problems(store)
        + job_problems(store)
        + evaluation_problems(store)
    )


def stale_after(settings: Settings, mailbox_name: str) -> timedelta:
    """How long a mailbox may go without a sync: `[health] stale_after`, but never less
    than two of its polls (a mailbox polled every 45 minutes is not late at 31)."""
    polls = [m.poll_interval for m in settings.mailboxes if m.name == mailbox_name]
    return max([settings.health.stale_after, *(2 * interval for interval in polls)])


def sync_problems(settings: Settings, states: list[SyncState], now: datetime) -> list[str]:
    problems = []
    whole = {s.mailbox: s for s in states if s.folder is None}
    for mailbox in settings.mailboxes:
        state = whole.get(mailbox.name)
        limit_after = stale_after(settings, mailbox.name)
        if state is None or state.last_ok_at is None:
            problems.append(f"mailbox {mailbox.name}: has never synced")
        elif now - state.last_ok_at > limit_after:
            since = human_duration((now - state.last_ok_at).total_seconds())
            limit = human_duration(limit_after.total_seconds())
            problems.append(f"mailbox {mailbox.name}: last synced {since} ago (limit {limit})")
        for s in states:
            if s.mailbox == mailbox.name and s.failures >= HEALTH_FAILURES:
                where = mailbox.name if s.folder is None else f"{mailbox.name}/{s.folder}"
                problems.append(f"mailbox {where}: {s.failures} failures in a row: {s.last_error}")
    return problems


@dataclass(frozen=True)
class MailboxSync:
    """How a mailbox (folder None) or one of its folders syncs, for status and alerts."""

    mailbox: str
    folder: str | None
    condition: str  # "never_synced", "stale", "failing" or "ok"
    problem: str | None  # one line for people; None when ok
    state: SyncState | None  # None: no poll has even tried it


CONDITIONS = ("never_synced", "stale", "failing", "ok")  # worst first


def mailbox_syncs(settings: Settings, states: list[SyncState], now: datetime) -> list[MailboxSync]:
    """Every configured mailbox and every folder ever synced, the worst off first."""
    tried = {s.mailbox for s in states if s.folder is None}
    untried = [
        MailboxSync(m.name, None, "never_synced", f"mailbox {m.name}: has never synced", None)
        for m in settings.mailboxes
        if m.name not in tried
    ]
    syncs = untried + [_mailbox_sync(state, settings, now) for state in states]
    return sorted(syncs, key=lambda s: CONDITIONS.index(s.condition))


def none_synced(settings: Settings, syncs: list[MailboxSync]) -> bool:
    """Mailboxes are configured and not one has synced yet: nothing can be said of their mail."""
    configured = {mailbox.name for mailbox in settings.mailboxes}
    return bool(configured) and all(
        s.condition == "never_synced" for s in syncs if s.folder is None and s.mailbox in configured
    )


def _mailbox_sync(state: SyncState, settings: Settings, now: datetime) -> MailboxSync:
    where = state.mailbox if state.folder is None else f"{state.mailbox}/{state.folder}"
    # errors name their mailbox already ("alice: 127.0.0.1: connection refused")
    last_error = (state.last_error or "").removeprefix(f"{state.mailbox}: ")
    error = f": {last_error}" if state.failures and last_error else ""
    limit_after = stale_after(settings, state.mailbox)
    if state.last_ok_at is None:
        condition, text = "never_synced", "has never synced"
    elif state.folder is None and now - state.last_ok_at > limit_after:
        since = human_duration((now - state.last_ok_at).total_seconds())
        limit = human_duration(limit_after.total_seconds())
        condition, text = "stale", f"last synced {since} ago (limit {limit})"
    elif state.failures:
        condition, text = "failing", f"{state.failures} failure(s) in a row"
    else:
        return MailboxSync(state.mailbox, state.folder, "ok", None, state)
    return MailboxSync(
        state.mailbox, state.folder, condition, f"mailbox {where}: {text}{error}", state
    )


def send_problems(store: Store) -> list[str]:
    """The last nudge, digest or client report sent, if it failed."""
    problems = []
    for kind in PROMISED_MAIL:
        claims = store.claims(kind)
        if not claims:
            continue
        last = max(claims, key=latest_event)
        if last.sent_at is None and last.error:
            problems.append(f"the last {kind} to {last.recipient} failed: {last.error}")
    return problems


def job_problems(store: Store) -> list[str]:
    return [
        f"{failure.job}: {failure.failures} failures in a row: {failure.error}"
        for failure in failing_jobs(store)
        if failure.failures >= KEEPS_FAILING
    ]


def evaluation_problems(store: Store) -> list[str]:
    """The last evaluation failed, or set threads aside (they keep their old requests)."""
    problems = [f"not evaluated, set aside: {line}" for line in attention(store).set_aside]
    if failure := evaluation_failure(store):
        problems.insert(0, f"the last evaluation of requests failed {failure}")
    return problems


def latest_event(claim: Claim) -> datetime:
    return max(t for t in (claim.claimed_at, claim.sent_at, claim.failed_at) if t is not None)


def ping_if_healthy(settings: Settings, store: Store, now: datetime) -> None:
    url = settings.health.ping_url
    if not url:
        return
    problems = health_problems(settings, store, now)
    if problems:
        log.warning("not pinging the health URL: %s", "; ".join(problems))
        return
    ping(url)


def ping(url: str) -> None:
    """Tell the outside dead-man's switch we are alive; its failures are only logged."""
    try:
        with urllib.request.urlopen(url, timeout=PING_TIMEOUT) as response:
            response.read(1024)
    except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
        log.warning("health ping failed: %s", error)


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
        copy_database(store.url.database, temporary)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def copy_database(database: str, copy: str) -> None:
    source = sqlite3.connect(database)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
