"""The requests as of an instant, for every command that takes `--now`: the stored ones
with time let pass up to the present, or for an instant in the past (before the last
evaluation) the mail evaluated again as it stood then.  "As of" means as known then
(interface.md): mail that arrived later is not yet arrived, and a look at the past leaves
the stored requests as they were."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from mailwatch.config import Settings
from mailwatch.core.clock import Evaluation, evaluate, status_as_of
from mailwatch.core.model import Request, Status
from mailwatch.evaluation import EVALUATED_STATE, evaluate_subset, refresh_requests
from mailwatch.store.repository import Store


def is_historical(store: Store, now: datetime) -> bool:
    """Is `now` before the last evaluation? Then stored requests may know the future."""
    evaluated = store.state(EVALUATED_STATE)
    return evaluated is not None and now < datetime.fromisoformat(evaluated)


def requests_as_of(
    settings: Settings,
    store: Store,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Request]:
    """Every request received in [since, until), with its status as of `now`."""
    if is_historical(store, now):
        found = historical_requests(settings, store, now)
        return [r for r in found if _received_within(r, since, until)]
    return current_requests(settings, store, now, since, until)


def waiting_as_of(settings: Settings, store: Store, now: datetime) -> list[Request]:
    """Requests open or overdue at `now`, oldest first (not those closed by expiry)."""
    if is_historical(store, now):
        found = historical_requests(settings, store, now)
        waiting = (
            r for r in found if r.status in (Status.OPEN, Status.OVERDUE) and r.closed_at is None
        )
        return sorted(waiting, key=lambda r: r.received_at)
    return waiting_requests(settings, store, now)


def evaluation_as_of(settings: Settings, store: Store, keys: set[str], now: datetime) -> Evaluation:
    """The clock over these whole threads (`keys`, a closure) as of `now`."""
    if is_historical(store, now):
        return evaluate_store(settings, store, now)
    return evaluate_subset(settings, store, keys, now)


def _received_within(request: Request, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or request.received_at >= since) and (
        until is None or request.received_at < until
    )


def current_requests(
    settings: Settings,
    store: Store,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Request]:
    """The stored requests received in [since, until), their status as of `now`."""
    refresh_requests(settings, store, now)
    return [status_as_of(r, settings.policy, now) for r in store.requests(since, until)]


def waiting_requests(settings: Settings, store: Store, now: datetime) -> list[Request]:
    """Requests open or overdue at `now`, oldest first (not those closed by expiry)."""
    refresh_requests(settings, store, now)
    current = (status_as_of(r, settings.policy, now) for r in store.waiting_requests())
    return [r for r in current if r.closed_at is None and r.received_at <= now]


def historical_requests(settings: Settings, store: Store, now: datetime) -> list[Request]:
    """Every request as of an instant in the past: evaluated again from the mail that had
    arrived by then, plus the kept requests whose mail is gone (a forgotten address, mail
    past retention), as they were last evaluated."""
    found = list(evaluate_store(settings, store, now).requests)
    kept = store.orphaned_requests(received_by=now)
    as_known = (_as_known_at(request, now) for request in kept)
    return found + [status_as_of(request, settings.policy, now) for request in as_known]


def _as_known_at(request: Request, now: datetime) -> Request:
    """A stored request without what happened to it after `now` (an answer, a closing)."""
    if request.answered_at is not None and request.answered_at > now:
        request = replace(
            request,
            answered_at=None,
            answered_by=None,
            answered_via=None,
            responder=None,
            response_seconds=None,
            status=Status.OPEN,
        )
    if request.closed_at is not None and request.closed_at > now:
        request = replace(request, closed_at=None)
    return request


def evaluate_store(settings: Settings, store: Store, now: datetime) -> Evaluation:
    """The clock over all mail that had arrived at `now`, from scratch: the exact answer
    for an instant in the past (`--now` before the last evaluation)."""
    arrived = store.load_messages(arrived_before=now + timedelta(seconds=1))
    return evaluate(
        arrived, settings.policy, now, store.waivers(), recorded_answers=store.recorded_answers()
    )
