"""Answers given outside email: `mailwatch answered` records one on a request (measured to
that instant like an email reply), `mailwatch unanswered` takes it back (interface.md)."""

from __future__ import annotations

import getpass
from datetime import datetime
from zoneinfo import ZoneInfo

from mailwatch.config import Settings
from mailwatch.core.addresses import Directory, normalise_address
from mailwatch.core.model import RecordedAnswer, Request, Role, Status
from mailwatch.services import UnknownMessage, client_message_key, reevaluated, request_holding
from mailwatch.store.repository import Store


class AnswerRefused(Exception):
    """An answer that cannot be recorded as asked (a bad `--at` or `--by`): one line."""


def record_answer(
    settings: Settings,
    store: Store,
    message_id: str,
    *,
    at: datetime,
    now: datetime,
    via: str,
    by: str | None = None,
    note: str = "",
) -> Request | None:
    """Record that the request of this client message was answered at `at`, outside email,
    by `by` (a staff address) when named; the request as measured now."""
    key = client_message_key(settings, store, message_id)
    responder = _staff_address(settings, by) if by else None
    if at > now:
        raise AnswerRefused(
            f"--at {_shown(at, settings)} is in the future (now: {_shown(now, settings)})"
        )
    request = _request_of(settings, store, key, now)
    if at < request.received_at:
        raise AnswerRefused(
            f"--at {_shown(at, settings)} is before the request's first message "
            f"({request.opened_by}, received {_shown(request.received_at, settings)})"
        )
    if request.status is Status.WAIVED:
        raise AnswerRefused(f"the request of {key} is waived (no reply needed): nothing to answer")
    if request.answered_via == "email" and request.answered_at and request.answered_at <= at:
        raise AnswerRefused(
            f"the request of {key} was answered by email before that, at "
            f"{_shown(request.answered_at, settings)} ({request.answered_by})"
        )
    made_by = responder or getpass.getuser()
    store.record_answer(RecordedAnswer(key, at, via, responder, made_by, now, note))
    return reevaluated(settings, store, key, now)


def take_back_answer(
    settings: Settings, store: Store, message_id: str, now: datetime, by: str | None = None
) -> Request | None:
    """Take back the answers recorded on the request of this client message."""
    key = client_message_key(settings, store, message_id)
    made_by = _staff_address(settings, by) if by else getpass.getuser()
    request = _request_of(settings, store, key, now)
    if not store.withdraw_answers(request.messages, made_by, now):
        raise UnknownMessage(f"no answer is recorded on the request of {key}")
    return reevaluated(settings, store, key, now)


def _staff_address(settings: Settings, address: str) -> str:
    directory = Directory(settings.policy)
    if directory.role(address) is not Role.STAFF:
        raise AnswerRefused(f"--by {address}: not a staff address (an agency domain or [[staff]])")
    return directory.staff_main_address(normalise_address(address))


def _request_of(settings: Settings, store: Store, key: str, now: datetime) -> Request:
    request = request_holding(settings, store, key, now)
    if request is None:
        raise UnknownMessage(f"{key} belongs to no request as of {now:%Y-%m-%d %H:%M}Z")
    return request


def _shown(instant: datetime, settings: Settings) -> str:
    return f"{instant.astimezone(ZoneInfo(settings.policy.timezone)):%Y-%m-%d %H:%M %Z}"
