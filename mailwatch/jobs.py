"""How the daemon's jobs have fared: the failures in a row of each, kept in the database.

A job that raises is logged and the daemon carries on (`daemon.attempt`); this
record is what turns "keeps failing" into a health problem and an alert that
survive a restart, and that `mailwatch health` (another process) can read.
Only jobs that last failed are listed: a success removes the job's entry.

One state row holds every job, written only when a job's outcome changes; a
lock keeps the daemon's threads from losing each other's updates.  Workers
sharing a PostgreSQL database share the record: a job that fails on one and
succeeds on another counts as succeeding.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailwatch.store.repository import Store

JOBS_STATE = "jobs"
# One failed pass is weather; this many in a row is a problem (polls too: health.py).
KEEPS_FAILING = 3

_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobFailure:
    job: str  # "nudge pass", "poll of mailbox alice", "week digest"
    failures: int  # in a row, since the last success
    since: datetime  # the first failure of the run
    error: str  # the latest


def failing_jobs(store: Store) -> list[JobFailure]:
    """Every job whose last pass failed."""
    return [
        JobFailure(job, entry["failures"], datetime.fromisoformat(entry["since"]), entry["error"])
        for job, entry in sorted(_read(store).items())
    ]


def record_job(store: Store, job: str, error: str | None, now: datetime) -> None:
    """A pass of `job` ended: failed with `error`, or succeeded (None)."""
    with _LOCK:
        jobs = _read(store)
        if error is None:
            if jobs.pop(job, None) is None:
                return  # nothing changed: no write
        else:
            earlier = jobs.get(job)
            jobs[job] = {
                "failures": (earlier["failures"] if earlier else 0) + 1,
                "since": earlier["since"] if earlier else now.isoformat(),
                "error": error,
            }
        store.set_state(JOBS_STATE, json.dumps(jobs, sort_keys=True))


def forget_jobs_except(store: Store, scheduled: set[str]) -> None:
    """Drop the record of jobs no longer scheduled (a mailbox or digest removed from the
    configuration): their failures would otherwise keep health failing for good."""
    with _LOCK:
        jobs = _read(store)
        kept = {job: entry for job, entry in jobs.items() if job in scheduled}
        if kept != jobs:
            store.set_state(JOBS_STATE, json.dumps(kept, sort_keys=True))


def _read(store: Store) -> dict[str, dict[str, Any]]:
    text = store.state(JOBS_STATE)
    jobs: dict[str, dict[str, Any]] = json.loads(text) if text else {}
    return jobs
