"""The lessons-learnt log's entries as plain values (interface.md: `annotate`, `lessons`).

A lesson is recorded on a client message and belongs to the request that message is part
of: why the request breached (or was waived), what is done about it, by whom, and when it
was resolved.  The store keeps every recording; these are the entries as known at an
instant (`mailwatch.lessons.lessons_as_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mailwatch.core.model import Request


@dataclass(frozen=True, slots=True)
class Lesson:
    message_key: str  # the client message it was recorded on
    reason: str
    category: str
    recorded_by: str
    recorded_at: datetime
    action: str | None = None
    owner: str | None = None  # a staff address
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


def lesson_of(request: Request, lessons: Mapping[str, Lesson]) -> Lesson | None:
    """The lesson of a request: the latest recorded on any of its client messages."""
    found = [lessons[key] for key in request.messages if key in lessons]
    return max(found, key=lambda lesson: lesson.recorded_at, default=None)
