"""Busiest hours: client requests, and the breaches among them, by the hour of the week they
were received in the agency's timezone (issue 14), so staffing can follow the mail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from mailwatch.core.model import Request, Status

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HOURS = 24
BREACHES = (Status.BREACHED, Status.OVERDUE)


@dataclass(frozen=True)
class HourOfWeek:
    """Counts by [weekday][hour], Monday and midnight first."""

    timezone: str
    requests: tuple[tuple[int, ...], ...]
    breaches: tuple[tuple[int, ...], ...]

    def busiest(self, limit: int) -> list[tuple[int, int]]:
        """The (day, hour) cells with the most requests, most first; ties in week order."""
        cells = [(d, h) for d in range(len(DAYS)) for h in range(HOURS) if self.requests[d][h]]
        return sorted(cells, key=lambda cell: -self.requests[cell[0]][cell[1]])[:limit]

    def breach_cells(self) -> list[tuple[int, int]]:
        """The (day, hour) cells where breaches started, most first; ties in week order."""
        cells = [(d, h) for d in range(len(DAYS)) for h in range(HOURS) if self.breaches[d][h]]
        return sorted(cells, key=lambda cell: -self.breaches[cell[0]][cell[1]])


def hour_of_week(requests: Iterable[Request], timezone: str) -> HourOfWeek:
    """Requests by the local hour they were received; a breach is one that breached or is
    overdue, counted at the hour its request was received."""
    zone = ZoneInfo(timezone)
    received = [[0] * HOURS for _ in DAYS]
    breached = [[0] * HOURS for _ in DAYS]
    for request in requests:
        day, hour = _cell(request.received_at, zone)
        received[day][hour] += 1
        if request.status in BREACHES:
            breached[day][hour] += 1
    return HourOfWeek(
        timezone,
        tuple(tuple(row) for row in received),
        tuple(tuple(row) for row in breached),
    )


def _cell(instant: datetime, zone: ZoneInfo) -> tuple[int, int]:
    local = instant.astimezone(zone)
    return local.weekday(), local.hour
