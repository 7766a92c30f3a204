"""Figures over requests: compliance, median and p90 response times.

Compliance = met / (met + breached + overdue); open and waived requests stay
out of the ratio.  The median and p90 are over answered requests; the median
of an even count is the mean of the middle two, p90 is the nearest rank.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from mailwatch.core.model import Request, Status


class Measured(Protocol):
    """What a summary reads of a request: a `Request`, or its `Outcome`."""

    @property
    def status(self) -> Status: ...

    @property
    def response_seconds(self) -> int | None: ...


class Outcome(NamedTuple):
    """A request as its period's figures see it (status as of now): read alone, the few
    columns cost a fraction of whole requests, for the periods a digest compares with.
    A tuple: built for every request of months, where a frozen dataclass cost more to
    build than reading the row."""

    opened_by: str
    account: str
    status: Status
    response_seconds: int | None


def outcome_of(request: Request) -> Outcome:
    return Outcome(request.opened_by, request.account, request.status, request.response_seconds)


@dataclass(frozen=True)
class Summary:
    requests: int
    met: int
    breached: int
    overdue: int
    open: int
    waived: int
    compliance: float | None
    median_response_seconds: float | int | None
    p90_response_seconds: int | None

    def as_dict(self) -> dict[str, Any]:
        # its fields are numbers: a copy of its attributes (in field order) is what
        # `dataclasses.asdict` gives, without its deep copy (hundreds per digest run)
        return dict(vars(self))


def median(values: list[int]) -> float | int | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    mean = (ordered[middle - 1] + ordered[middle]) / 2
    return int(mean) if mean.is_integer() else mean


def nearest_rank(values: list[int], percent: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class Tally:
    """What a summary reads of some requests, kept to be added up: how many of each status,
    and the response times of those answered, in order.  A digest run tallies each account
    once and sums the tallies of each digest's accounts: summarizing every digest's requests
    anew read each account's once per digest (13 digests, tens of thousands of requests)."""

    counts: Counter[Status]
    response_seconds: list[int]  # ascending


def tally(requests: Iterable[Measured]) -> Tally:
    requests = list(requests)
    counts = Counter(request.status for request in requests)
    answered = sorted(r.response_seconds for r in requests if r.response_seconds is not None)
    return Tally(counts, answered)


def summary_of(tallies: Iterable[Tally]) -> Summary:
    """The summary of the requests of all `tallies` together."""
    counts: Counter[Status] = Counter()
    answered: list[int] = []
    for part in tallies:
        counts.update(part.counts)
        answered += part.response_seconds
    measured = counts[Status.MET] + counts[Status.BREACHED] + counts[Status.OVERDUE]
    return Summary(
        requests=counts.total(),
        met=counts[Status.MET],
        breached=counts[Status.BREACHED],
        overdue=counts[Status.OVERDUE],
        open=counts[Status.OPEN],
        waived=counts[Status.WAIVED],
        compliance=counts[Status.MET] / measured if measured else None,
        median_response_seconds=median(answered),
        p90_response_seconds=nearest_rank(answered, 90),
    )


def summarize(requests: Iterable[Measured]) -> Summary:
    return summary_of([tally(requests)])


def wait_seconds(request: Request) -> int:
    """How long the client waited on the request's clock: to the answer, else so far."""
    if request.response_seconds is not None:
        return request.response_seconds
    return request.elapsed_seconds


def late_seconds(request: Request) -> int:
    """How far past its target the client waited (or has waited so far), on its clock;
    zero or less for a request still in time."""
    return wait_seconds(request) - request.target_seconds


def by_account(requests: Iterable[Request]) -> dict[str, Summary]:
    groups: dict[str, list[Request]] = {}
    for request in requests:
        groups.setdefault(request.account, []).append(request)
    return {name: summarize(group) for name, group in sorted(groups.items())}


def by_person(requests: Iterable[Request]) -> dict[str, Summary]:
    """Per responsible person as recorded when each request opened (shared: counted for each)."""
    return {person: summarize(group) for person, group in sorted(of_person(requests).items())}


def of_person(requests: Iterable[Request]) -> dict[str, list[Request]]:
    """The requests of each responsible person (shared: listed for each), in their order."""
    groups: dict[str, list[Request]] = {}
    for request in requests:
        for person in request.responsible:
            groups.setdefault(person, []).append(request)
    return groups
