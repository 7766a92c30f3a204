"""The work of an evaluation on stored messages: classifying them, and evaluating a part
of whole threads.  It runs in the evaluating process, or in the worker processes of a
first evaluation (`evaluation_workers.py`): a part's evaluation is a plain value that the
evaluating process stores."""

from __future__ import annotations

import logging
from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.classification import people_seen_sending, person_sending, verdicts
from mailwatch.core.clock import Evaluation, evaluate, threads_of
from mailwatch.core.model import (
    Absence,
    Message,
    RecordedAnswer,
    Verdict,
    Waiver,
    policy_fingerprint,
)
from mailwatch.store.messages import Loaded
from mailwatch.store.repository import Store
from mailwatch.store.rows import request_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailContext:
    """What evaluating some threads needs to know of all the other mail, from the store."""

    people: frozenset[str]  # staff seen sending human mail from a Sent folder
    absences: list[Absence]
    waivers: list[Waiver]
    recorded_answers: list[RecordedAnswer]


@dataclass(frozen=True)
class Classified:
    """Stored messages classified: what to store about each, by row id."""

    verdicts: list[tuple[int, Verdict, int]]  # (row id, verdict, change counter as read)
    policy: str  # the fingerprint of the policy they were found under
    people: set[str]  # staff seen sending human mail


def classified(settings: Settings, rows: Sequence[Loaded]) -> Classified:
    """Each message's role, responder, time and automation verdict, and the people seen
    sending: what evaluating any thread needs to know about all the others."""
    directory = Directory(settings.policy)
    messages = [row.message for row in rows]
    found = verdicts(messages, settings.policy, directory)
    automated = {key: verdict.automated for key, verdict in found.items()}
    return Classified(
        [(row.row_id, found[row.message.key], row.dirty) for row in rows],
        policy_fingerprint(settings.policy),
        people_seen_sending(messages, directory, automated),
    )


def save_classified(store: Store, found: Classified, more_people: Set[str] = frozenset()) -> None:
    store.save_classifications(found.verdicts, found.policy, found.people | more_people)


def classified_page(
    settings: Settings, store: Store, after: int, upto: int
) -> list[tuple[int, int]]:
    """Classify and store the messages with row ids in (after, upto] not classified under
    the policy yet (most were as they were stored), and add the people seen sending among
    all of them: each one's row id and change counter as read."""
    policy = policy_fingerprint(settings.policy)
    # those classified already first: one changed in between is read again below
    counters, senders = store.classified_between(after, upto, policy)
    directory = Directory(settings.policy)
    people = {person for pair in senders if (person := person_sending(*pair, directory))}
    found = classified(settings, store.loaded_between(after, upto, policy))
    save_classified(store, found, people)
    return counters + [(row_id, seen) for row_id, _, seen in found.verdicts]


@dataclass(frozen=True)
class PartEvaluation:
    """What evaluating a part of whole threads found, for the evaluating process to store."""

    messages: int  # how many were evaluated
    # (row id, key, thread the last evaluation stored) of each message not set aside
    kept: list[tuple[int, str, str | None]]
    thread_of: dict[str, str]
    # the keys the clock took part in; the others (stamped after `now`) stay to be evaluated
    evaluated: frozenset[str]
    # as their rows are written (`request_rows`): encoded in a worker, not the evaluating
    # process, which was the first evaluation's bound
    requests: list[dict[str, Any]]
    untimed: tuple[str, ...]
    unlisted_senders: tuple[str, ...]
    unknown_correspondents: tuple[str, ...]
    set_aside: tuple[str, ...]  # a line for each thread whose evaluation failed


def stored_verdicts(part: list[Loaded]) -> dict[str, str | None]:
    """Each message's automation verdict as its classification stored it."""
    return {row.message.key: row.automated for row in part}


def evaluated_part(
    settings: Settings,
    now: datetime,
    context: MailContext,
    part: list[Loaded],
    verdicts: dict[str, str | None],
    dialect: str,
    thread_of: dict[str, str] | None = None,
) -> PartEvaluation:
    """Evaluate a union of whole threads, with the automation verdicts stored (`verdicts`;
    the others are found) and, when known, their threads (`thread_of`); the requests as
    the store of `dialect` writes them."""
    messages = [row.message for row in part]
    evaluation, set_aside = _evaluate_setting_aside(
        settings, messages, now, context, verdicts, thread_of
    )
    left_out = {key for keys in set_aside for key in keys}
    return PartEvaluation(
        messages=len(part),
        kept=[
            (row.row_id, row.message.key, row.thread_id)
            for row in part
            if row.message.key not in left_out
        ],
        thread_of=evaluation.thread_of,
        evaluated=frozenset(evaluation.classifications),
        requests=request_rows(evaluation.requests, now, dialect),
        untimed=evaluation.untimed,
        unlisted_senders=evaluation.unlisted_senders,
        unknown_correspondents=evaluation.unknown_correspondents,
        set_aside=tuple(_set_aside_line(k, e) for k, e in set_aside.items()),
    )


def _evaluate_setting_aside(
    settings: Settings,
    messages: list[Message],
    now: datetime,
    context: MailContext,
    verdicts: dict[str, str | None],
    thread_of: dict[str, str] | None,
) -> tuple[Evaluation, dict[tuple[str, ...], str]]:
    """The evaluation of `messages`; a thread whose evaluation fails is left out of it, with
    the error, so that hostile mail or a bug in one thread costs that thread only."""

    def evaluated(some: list[Message]) -> Evaluation:
        return evaluate_messages(settings, some, now, context, verdicts, thread_of)

    try:
        return evaluated(messages), {}
    except Exception:
        log.exception(
            "the evaluation of %d messages failed; trying each thread alone", len(messages)
        )
    try:
        groups = threads_of(messages, settings.policy, now)
    except Exception:  # the threading itself fails: the whole part is set aside
        groups = [sorted(m.key for m in messages)]
    set_aside: dict[tuple[str, ...], str] = {}
    for group in groups:
        members = set(group)
        try:
            evaluated([m for m in messages if m.key in members])
        except Exception as error:
            set_aside[tuple(sorted(group))] = error_text(error)
    for keys, text in set_aside.items():
        log.warning("set aside: %s", _set_aside_line(keys, text))
    left_out = {key for keys in set_aside for key in keys}
    return evaluated([m for m in messages if m.key not in left_out]), set_aside


def error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _set_aside_line(keys: tuple[str, ...], error: str) -> str:
    more = f" and {len(keys) - 1} more message(s)" if len(keys) > 1 else ""
    return f"the thread of {keys[0]}{more}: {error}"


def evaluate_messages(
    settings: Settings,
    messages: list[Message],
    now: datetime,
    context: MailContext,
    verdicts: dict[str, str | None],
    thread_of: dict[str, str] | None = None,
) -> Evaluation:
    """The clock over these messages, with the rest of the mail's `context`."""
    return evaluate(
        messages,
        settings.policy,
        now,
        context.waivers,
        known_people=context.people,
        absences=context.absences,
        recorded_answers=context.recorded_answers,
        verdicts=verdicts,
        thread_of=thread_of,
    )
