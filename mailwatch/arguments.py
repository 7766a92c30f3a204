"""What the command modules (`cli.py`, `cli_answers.py`) share: the error of a bad argument
(exit status 2) and the reading of a `DATE` argument."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo


class UsageError(Exception):
    pass


def parse_instant(text: str, timezone: str) -> datetime:
    """`YYYY-MM-DD` is midnight in the agency's timezone; an ISO instant without zone is too."""
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            return datetime.combine(day, time(0), ZoneInfo(timezone)).astimezone(UTC)
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 instant (2026-11-27T09:00Z)"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=ZoneInfo(timezone))
    return instant.astimezone(UTC)
