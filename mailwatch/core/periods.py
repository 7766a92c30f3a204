"""Calendar periods for digests: weeks from Monday 00:00, months, quarters, in one timezone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("week", "month", "quarter")


@dataclass(frozen=True)
class Period:
    kind: str  # "week", "month" or "quarter"
    key: str  # "week:2026-W47", "month:2026-11", "quarter:2026-Q4"
    label: str  # "week 47 of 2026 (16–22 Nov)", "November 2026", "Q4 2026"
    start: datetime  # UTC, included
    end: datetime  # UTC, excluded

    @property
    def slug(self) -> str:
        """The key as a file-name part: "week-2026-W47"."""
        return self.key.replace(":", "-")


def period_starting(kind: str, first_day: date, timezone: str) -> Period:
    zone = ZoneInfo(timezone)
    if kind == "week":
        next_day = first_day + timedelta(days=7)
        year, week, _ = first_day.isocalendar()
        last = next_day - timedelta(days=1)
        key, label = f"week:{year}-W{week:02d}", f"week {week} of {year} ({_span(first_day, last)})"
    elif kind == "month":
        next_day = _add_months(first_day, 1)
        key, label = f"month:{first_day:%Y-%m}", f"{first_day:%B %Y}"
    elif kind == "quarter":
        next_day = _add_months(first_day, 3)
        quarter = (first_day.month - 1) // 3 + 1
        key, label = f"quarter:{first_day.year}-Q{quarter}", f"Q{quarter} {first_day.year}"
    else:
        raise ValueError(f"unknown period {kind!r}: expected one of {', '.join(PERIODS)}")
    return Period(kind, key, label, _utc(first_day, zone), _utc(next_day, zone))


def last_complete(kind: str, now: datetime, timezone: str) -> Period:
    """The last period of this kind that ended at or before `now` (agency timezone)."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    if kind == "week":
        current = today - timedelta(days=today.weekday())
        return period_starting(kind, current - timedelta(days=7), timezone)
    if kind == "month":
        return period_starting(kind, _add_months(today.replace(day=1), -1), timezone)
    if kind == "quarter":
        current = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
        return period_starting(kind, _add_months(current, -3), timezone)
    raise ValueError(f"unknown period {kind!r}: expected one of {', '.join(PERIODS)}")


def previous(period: Period, timezone: str) -> Period:
    return last_complete(period.kind, period.start, timezone)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)


def _utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def _span(first: date, last: date) -> str:
    if first.month == last.month:
        return f"{first.day}–{last.day} {last:%b}"
    return f"{first.day} {first:%b} – {last.day} {last:%b}"
