"""The requests a digest run reads: the period's own and those received since, in full;
those of the earlier periods it compares with (trends, revisions) as light outcomes, the
few columns their figures need.  Read whole, the six months behind a monthly digest cost
most of its time at a million messages (docs/benchmarks.md).

An earlier request is still read in full when a digest shows more of it than its figures:
unanswered (its status as of now needs its clock), waived in the period (waivers to
check), a nudge about it skipped in the period, a lesson recorded on it, or a status that
differs from what the sent digest of its period reported (why a figure was revised).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailwatch.core.clock import status_as_of
from mailwatch.core.lessons import Lesson
from mailwatch.core.model import Request, Status
from mailwatch.core.periods import Period
from mailwatch.core.stats import Outcome, outcome_of
from mailwatch.evaluation import refresh_requests
from mailwatch.requests_as_of import is_historical, requests_as_of
from mailwatch.revisions import first_agency_report

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.evaluation import StoredOutcome
    from mailwatch.store.figures import ReportedFigures
    from mailwatch.store.repository import Store


@dataclass(frozen=True)
class DigestRequests:
    requests: list[Request]  # in full, as of now: the period's and later, and those picked
    earlier: list[list[Outcome]]  # as of now: those received in each earlier period
    references: list[ReportedFigures | None]  # the first agency report of each earlier period


def digest_requests(
    settings: Settings,
    store: Store,
    now: datetime,
    period: Period,
    earlier: Sequence[Period],
    skipped_openers: Collection[str],
    lessons: Mapping[str, Lesson],
) -> DigestRequests:
    """`earlier`: the periods before `period` its digests compare with, oldest first;
    `skipped_openers`: the requests whose nudges were skipped in the period."""
    reported = [first_agency_report(store, p.key) for p in earlier]
    if is_historical(store, now):
        found = requests_as_of(settings, store, now, since=earlier[0].start)
        return DigestRequests(found, _by_period(found, earlier), reported)
    refresh_requests(settings, store, now)
    statuses = {index: r.statuses for index, r in enumerate(reported) if r is not None}

    def in_full(stored: StoredOutcome) -> bool:
        """Cheapest test first: it runs on every earlier request."""
        outcome, seen = stored.outcome, stored.waiver_seen_at
        return (
            not stored.final
            or outcome.opened_by in skipped_openers
            or (seen is not None and period.start <= seen < period.end)
            or (
                stored.period in statuses
                and statuses[stored.period].get(outcome.opened_by) != outcome.status.value
            )
            or (bool(lessons) and not lessons.keys().isdisjoint(stored.messages))
        )

    stored, picked, later = store.requests_in_full_from(earlier, in_full)
    picked = [status_as_of(r, settings.policy, now) for r in picked]
    later = [status_as_of(r, settings.policy, now) for r in later]
    outcomes = [[s.outcome for s in found if s.final] for found in stored]
    as_of_now = _by_period([r for r in picked if not _final(r)], earlier)
    for index, measured in enumerate(as_of_now):
        outcomes[index] += measured
    return DigestRequests(picked + later, outcomes, reported)


def _by_period(requests: Sequence[Request], periods: Sequence[Period]) -> list[list[Outcome]]:
    return [
        [outcome_of(r) for r in requests if period.start <= r.received_at < period.end]
        for period in periods
    ]


def _final(request: Request) -> bool:
    """As `status_as_of` has it: time passing changes nothing."""
    return request.answered_at is not None or request.status is Status.WAIVED
