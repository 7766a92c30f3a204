"""Business time: only working hours on working days count.

Hours are wall-clock times in the hours' own timezone, so a DST change moves
the opening instant, not the length of a working day.  Holidays and closure
days are whole days in that timezone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from mailwatch.core.model import BusinessHours

# A calendar with no open day for this long is treated as closed for good
# rather than searched forever.
_MAX_DAYS = 3 * 366


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def is_open_day(hours: BusinessHours, day: date) -> bool:
    """A working day of these hours: one of its days, not a holiday or a closure."""
    return day.weekday() in hours.days and day not in hours.closed and day not in hours.holidays


def _window(hours: BusinessHours, day: date) -> tuple[datetime, datetime]:
    zone = _zone(hours.timezone)
    opens = datetime.combine(day, hours.start, zone).astimezone(UTC)
    closes = datetime.combine(day, hours.end, zone).astimezone(UTC)
    return opens, closes


def _windows_from(hours: BusinessHours, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Opening windows (UTC) that end after `instant`, in order."""
    day = instant.astimezone(_zone(hours.timezone)).date() - timedelta(days=1)
    for _ in range(_MAX_DAYS):
        if is_open_day(hours, day):
            opens, closes = _window(hours, day)
            if closes > instant:
                yield opens, closes
        day += timedelta(days=1)


def business_seconds(hours: BusinessHours, start: datetime, end: datetime) -> float:
    """Business time between two instants (0 when `end` is not after `start`)."""
    if end <= start:
        return 0.0
    total = 0.0
    for opens, closes in _windows_from(hours, start):
        if opens >= end:
            break
        total += (min(closes, end) - max(opens, start)).total_seconds()
    return total


def instant_after(hours: BusinessHours, start: datetime, seconds: float) -> datetime:
    """The instant at which `seconds` of business time have elapsed since `start`.

    The budget runs out *at* a closing instant rather than at the next
    opening: 8h30m from Monday 09:00 on 09:00-17:30 hours is Monday 17:30.
    A zero budget outside hours is the next opening.
    """
    remaining = seconds
    for opens, closes in _windows_from(hours, start):
        begin = max(opens, start)
        available = (closes - begin).total_seconds()
        if remaining <= available:
            return begin + timedelta(seconds=remaining)
        remaining -= available
    raise ValueError("business hours have no open day within three years")
