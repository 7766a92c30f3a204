"""The lessons-learnt log's use cases: `annotate` records, `lessons` lists (interface.md).

Every recording is kept (`store/lessons.py`); a lesson as of an instant is what the
recordings made by then leave (`core/lessons.py`), so a command with `--now T` sees the
reasons, actions and resolutions made by T.  A lesson does not change the measurement.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailwatch.core.addresses import Directory, normalise_address
from mailwatch.core.lessons import Lesson, LessonRecord, lesson_of, lessons_from
from mailwatch.core.model import Request, Role, Status
from mailwatch.evaluation import closure
from mailwatch.requests_as_of import evaluation_as_of, requests_as_of
from mailwatch.services import UnknownMessage, client_message_key

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

# What a lesson is learnt from; a lesson already recorded stays in the log whatever its
# request becomes (an answer recorded later, a waiver taken back).
LESSON_STATUSES = (Status.BREACHED, Status.OVERDUE, Status.WAIVED)
LOGGED_STATUSES = (Status.BREACHED, Status.OVERDUE)


class InvalidLesson(Exception):
    """An argument `annotate` cannot take (a category not configured, an owner who is not
    staff): one line, exit status 2."""


class LessonRefused(Exception):
    """An annotation that does not apply to this request (nothing to learn yet, no lesson
    to give an action to): one line, exit status 1."""


def lessons_as_of(store: Store, now: datetime) -> dict[str, Lesson]:
    """Each client message's lesson as known at `now`, by message key."""
    return lessons_from(store.lesson_records(now))


@dataclass(frozen=True)
class Annotation:
    """What one `annotate` gives: a reason (and category), an action, an owner, or the
    lesson resolved (with a note)."""

    reason: str | None = None
    category: str | None = None
    action: str | None = None
    owner: str | None = None
    resolved: bool = False
    note: str | None = None


@dataclass(frozen=True)
class Annotated:
    request: Request
    lesson: Lesson


def annotate(
    settings: Settings,
    store: Store,
    message_id: str,
    now: datetime,
    annotation: Annotation,
    by: str | None = None,
) -> Annotated:
    """Record `annotation` on the lesson of the request this client message belongs to,
    as made at `now` by `by` (else the login name); the lesson as it now stands."""
    key = client_message_key(settings, store, message_id)
    request = _request_of(settings, store, key, now)
    standing = lesson_of(request, lessons_as_of(store, now))
    _check_applies(request, standing, annotation, key)
    record = LessonRecord(
        # on the lesson's own message, whichever message of the request is named
        message_key=standing.message_key if standing else key,
        made_by=by or getpass.getuser(),
        made_at=now,
        reason=annotation.reason,
        category=_category(settings, annotation, standing),
        action=annotation.action,
        owner=_owner(settings, annotation.owner),
        resolved=annotation.resolved,
        note=annotation.note,
    )
    store.record_lesson(record)
    lesson = lessons_as_of(store, now)[record.message_key]
    return Annotated(request, lesson)


def _request_of(settings: Settings, store: Store, key: str, now: datetime) -> Request:
    evaluation = evaluation_as_of(settings, store, closure(store, {key}, settings.policy), now)
    request = next((r for r in evaluation.requests if key in r.messages), None)
    if request is None:
        raise UnknownMessage(f"{key} belongs to no request as of {now:%Y-%m-%d %H:%M}Z")
    return request


def _check_applies(
    request: Request,
    standing: Lesson | None,
    annotation: Annotation,
    key: str,
) -> None:
    if annotation.reason is not None and not annotation.reason.strip():
        raise InvalidLesson("--reason: say why the request was late")
    if standing is None and annotation.reason is None:
        raise LessonRefused(f"no lesson is recorded on the request of {key}: give --reason first")
    if standing is None and request.status not in LESSON_STATUSES:
        raise LessonRefused(
            f"the request of {key} is {request.status.value}: a lesson is recorded on a "
            "breached, overdue or waived request"
        )
    if annotation.resolved and standing is not None and standing.resolved_at is not None:
        raise LessonRefused(
            f"the lesson of the request of {key} was already resolved by "
            f"{standing.resolved_by} at {standing.resolved_at:%Y-%m-%d %H:%M}Z"
        )


def _category(settings: Settings, annotation: Annotation, standing: Lesson | None) -> str | None:
    """The configured spelling of `--category`; without one, a new reason keeps the
    lesson's category, and a first one takes the last configured (by default "other")."""
    categories = settings.lessons.categories
    if annotation.category is None:
        if annotation.reason is None:
            return None
        return standing.category if standing else categories[-1]
    wanted = annotation.category.casefold().strip()
    for category in categories:
        if category.casefold() == wanted:
            return category
    raise InvalidLesson(
        f"--category {annotation.category!r}: not a category; one of: "
        f"{', '.join(categories)} ([lessons] categories)"
    )


def _owner(settings: Settings, owner: str | None) -> str | None:
    if owner is None:
        return None
    directory = Directory(settings.policy)
    if directory.role(owner) is not Role.STAFF:
        raise InvalidLesson(f"--owner {owner}: not a staff address (an agency domain or [[staff]])")
    return directory.staff_main_address(normalise_address(owner))


@dataclass(frozen=True)
class LogEntry:
    """A line of the log: a request that breached or is overdue (or has a lesson), with
    its lesson as known then, if any."""

    request: Request
    lesson: Lesson | None

    @property
    def status(self) -> str:
        if self.lesson is None:
            return "no reason"
        return "open" if self.lesson.is_open else "resolved"


def lessons_log(
    settings: Settings,
    store: Store,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    open_only: bool = False,
) -> Sequence[LogEntry]:
    """Every request received in [since, until) that breached or is overdue as of `now`,
    and every other with a lesson, oldest first; `open_only`: those not resolved."""
    lessons = lessons_as_of(store, now)
    entries = [
        LogEntry(request, lesson_of(request, lessons))
        for request in requests_as_of(settings, store, now, since, until)
    ]
    logged = [e for e in entries if e.lesson is not None or e.request.status in LOGGED_STATUSES]
    if open_only:
        logged = [e for e in logged if e.status != "resolved"]
    return sorted(logged, key=lambda e: (e.request.received_at, e.request.opened_by))
