"""A period's figures against the period before and the average of the periods before it
(a digest's trend: compliance, volume and median reply time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailwatch.core.stats import Summary

TREND_FIGURES = ("compliance", "requests", "median_response_seconds")


@dataclass(frozen=True)
class Trend:
    figure: str  # a Summary field: one of TREND_FIGURES
    current: float | None
    previous: float | None
    average: float | None  # over the earlier periods that received requests

    @property
    def change_from_previous(self) -> float | None:
        return _change(self.current, self.previous)

    @property
    def change_from_average(self) -> float | None:
        return _change(self.current, self.average)

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "previous": self.previous,
            "average": self.average,
            "change_from_previous": self.change_from_previous,
            "change_from_average": self.change_from_average,
        }


def trends(current: Summary, earlier: Sequence[Summary]) -> dict[str, Trend]:
    """Each of TREND_FIGURES; `earlier` oldest first, ending with the period before.

    A period that received no request is left out of the average: most likely mailwatch
    was not running yet, rather than no client wrote."""
    with_data = [summary for summary in earlier if summary.requests]
    previous = earlier[-1] if earlier else None
    found = {}
    for figure in TREND_FIGURES:
        values = [_value(summary, figure) for summary in with_data]
        known = [value for value in values if value is not None]
        found[figure] = Trend(
            figure=figure,
            current=_value(current, figure),
            previous=_value(previous, figure) if previous else None,
            average=sum(known) / len(known) if known else None,
        )
    return found


def periods_with_data(earlier: Sequence[Summary]) -> int:
    """How many of the earlier periods the average is over."""
    return sum(1 for summary in earlier if summary.requests)


def _value(summary: Summary, figure: str) -> float | None:
    value: float | None = getattr(summary, figure)
    return value


def _change(current: float | None, other: float | None) -> float | None:
    if current is None or other is None:
        return None
    return current - other
