"""The lessons-learnt log's use cases: `annotate` records, `lessons` lists."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailwatch.core.lessons import Lesson

if TYPE_CHECKING:
    from mailwatch.store.repository import Store


def lessons_as_of(store: Store, now: datetime) -> dict[str, Lesson]:
    """Each client message's lesson as known at `now`, by message key."""
    return {}
