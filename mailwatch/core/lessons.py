"""The lessons-learnt log's entries as plain values (interface.md: `annotate`, `lessons`).

A lesson is recorded on a client message and belongs to the request that message is part
of: why the request breached (or was waived), what is done about it, by whom, and when it
was resolved.  The store keeps every recording (`LessonRecord`), the earlier ones too; a
lesson is what the recordings made by an instant leave (`lessons_from`, and
`mailwatch.lessons.lessons_as_of` over the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from mailwatch.core.model import Request

DEFAULT_CATEGORIES = (
    "staff absence",
    "misrouted",
    "waiting on a third party",
    "unclear request",
    "capacity",
    "tooling",
    "other",
)


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


@dataclass(frozen=True, slots=True)
class LessonRecord:
    """One `annotate` as it was made: a reason (with its category), an action, an owner,
    or the lesson resolved (with a note); by whom and when."""

    message_key: str
    made_by: str
    made_at: datetime
    reason: str | None = None
    category: str | None = None
    action: str | None = None
    owner: str | None = None
    resolved: bool = False
    note: str | None = None


def lesson_of(request: Request, lessons: Mapping[str, Lesson]) -> Lesson | None:
    """The lesson of a request: the latest recorded on any of its client messages."""
    found = [lessons[key] for key in request.messages if key in lessons]
    return max(found, key=lambda lesson: lesson.recorded_at, default=None)


def lessons_from(records: Iterable[LessonRecord]) -> dict[str, Lesson]:
    """Each message's lesson as these recordings leave it, applied in the order made
    (recordings made at the same instant keep their order)."""
    lessons: dict[str, Lesson] = {}
    for record in sorted(records, key=lambda r: r.made_at):
        lesson = applied(lessons.get(record.message_key), record)
        if lesson is not None:
            lessons[record.message_key] = lesson
    return lessons


def applied(lesson: Lesson | None, record: LessonRecord) -> Lesson | None:
    """`lesson` after `record`. A lesson starts with a reason (an action, an owner or a
    resolution without one has nothing to attach to); any change after it was resolved
    opens it again, since what was closed is no longer what stands."""
    if record.reason is not None:
        lesson = Lesson(
            message_key=record.message_key,
            reason=record.reason,
            category=record.category or (lesson.category if lesson else DEFAULT_CATEGORIES[-1]),
            recorded_by=record.made_by,
            recorded_at=record.made_at,
            action=lesson.action if lesson else None,
            owner=lesson.owner if lesson else None,
        )
    if lesson is None:
        return None
    if record.resolved:
        return replace(
            lesson,
            resolved_at=record.made_at,
            resolved_by=record.made_by,
            resolution_note=record.note,
        )
    return replace(
        lesson,
        action=record.action or lesson.action,
        owner=record.owner or lesson.owner,
        resolved_at=None,
        resolved_by=None,
        resolution_note=None,
    )


def lesson_history(request: Request, records: Iterable[LessonRecord]) -> tuple[LessonRecord, ...]:
    """Every recording made on the request's client messages, in the order made."""
    mine = set(request.messages)
    return tuple(sorted((r for r in records if r.message_key in mine), key=lambda r: r.made_at))
