"""Durations as people read them in nudges and reports: "1h 40m", "2d 3h", "overdue by 45m"."""

from __future__ import annotations

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
# Below two days, hours read better than days: "waited 26h" beats "waited 1d 2h".
_DAYS_FROM = 2 * _DAY


def human_duration(seconds: float) -> str:
    """A duration in its two largest units, minutes rounded down; negative means overdue."""
    if seconds < 0:
        return f"overdue by {human_duration(-seconds)}"
    whole = int(seconds)
    if whole < _MINUTE:
        return "<1m"
    if whole >= _DAYS_FROM:
        return _two_units(whole // _DAY, "d", whole % _DAY // _HOUR, "h")
    if whole >= _HOUR:
        return _two_units(whole // _HOUR, "h", whole % _HOUR // _MINUTE, "m")
    return f"{whole // _MINUTE}m"


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit} {small}{small_unit}" if small else f"{big}{big_unit}"
