"""Use cases: one function per thing a person or the daemon asks mailwatch to do.

Each reads the clock at most once (callers pass `now`), calls the pure core,
and talks to the world only through the store and adapters it is given.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from mailwatch.adapters.files import ImportedItem, read_path, size_of
from mailwatch.adapters.parse import (
    UnparsableMessage,
    body_prefix_of,
    header_block,
    parse_message,
)
from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.clock import Evaluation
from mailwatch.core.conversations import normalise_subject
from mailwatch.core.lessons import Lesson, LessonRecord, lessons_from
from mailwatch.core.model import Copy, Message, Policy, Request, Role, Status, Waiver, WaiverVia
from mailwatch.core.times import trusted_times
from mailwatch.evaluation import closure, evaluate_subset, refresh_requests
from mailwatch.progress import Progress
from mailwatch.requests_as_of import (
    evaluation_as_of,
    is_historical,
    requests_as_of,
    waiting_as_of,
)
from mailwatch.store.repository import Store, StoredMessage

log = logging.getLogger(__name__)

IMPORT_BATCH = 500
DEFAULT_IMPORT_MAILBOX = "import"


# ---------------------------------------------------------------- import


@dataclass
class ImportResult:
    read: int = 0
    new: int = 0
    set_aside: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def import_paths(
    settings: Settings,
    store: Store,
    paths: Sequence[Path],
    now: datetime,
    *,
    mailbox: str | None = None,
    sent: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Backfill mail files through the same pipeline as IMAP (idempotent: interrupted, it
    is run again; what was stored is recognised and not stored twice)."""
    result = ImportResult()
    batch: list[StoredMessage] = []
    total_bytes, read_bytes = sum(size_of(path) for path in paths), 0
    task = progress.task("import") if progress is not None else None
    for path in paths:
        for item in read_path(path, sent=sent):
            if not isinstance(item, ImportedItem):
                result.warnings.append(f"{item.location}: {item.text}")
                continue
            result.read += 1
            read_bytes += len(item.raw)
            stored = _stored(item, mailbox or DEFAULT_IMPORT_MAILBOX, store, now, result)
            if stored is not None:
                batch.append(stored)
            if len(batch) >= IMPORT_BATCH:
                result.new += store.add_messages(batch)
                batch = []
                if task is not None:
                    task.update(result.read, read_bytes / total_bytes if total_bytes else None)
    if batch:
        result.new += store.add_messages(batch)
        if task is not None:
            task.update(result.read, 1.0)
    if task is not None:
        task.finish()
    refresh_requests(settings, store, now)
    return result


def _stored(
    item: ImportedItem, mailbox: str, store: Store, now: datetime, result: ImportResult
) -> StoredMessage | None:
    try:
        message = parse_message(item.raw, body_prefix=body_prefix_of(item.raw))
    except Exception as error:  # one bad file never stops an import: set it aside, go on
        reason = (
            str(error)
            if isinstance(error, UnparsableMessage)
            else f"{type(error).__name__}: {error}"
        )
        store.quarantine(item.location, reason, item.raw, now)
        result.set_aside.append(f"{item.location}: {reason}")
        return None
    copy = Copy(
        mailbox=mailbox,
        folder=item.folder,
        sent_folder=item.sent_folder,
        envelope_time=item.envelope_time,
        received_time=message.received_time,
    )
    # seen today, even when `--now` is an instant in the past
    trusted = trusted_times(replace(message, copies=(copy,)), max(now, datetime.now(UTC)))
    return StoredMessage(trusted, header_block(item.raw), location=item.location)


# ---------------------------------------------------------------- report and status


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    requests: tuple[Request, ...]
    lessons: Mapping[str, Lesson] = field(default_factory=dict)  # as known at generated_at


class InvalidFilter(Exception):
    pass


@dataclass(frozen=True)
class RequestFilter:
    """Which requests a report shows: each kind left empty admits all; within a kind any
    value may match (OR), and every kind given must match (AND)."""

    accounts: frozenset[str] = frozenset()
    responsible: frozenset[str] = frozenset()
    statuses: frozenset[Status] = frozenset()

    def admits(self, request: Request) -> bool:
        return (
            (not self.accounts or request.account in self.accounts)
            and (not self.responsible or not self.responsible.isdisjoint(request.responsible))
            and (not self.statuses or request.status in self.statuses)
        )


def request_filter(
    policy: Policy,
    accounts: Sequence[str] = (),
    responsible: Sequence[str] = (),
    statuses: Sequence[str] = (),
) -> RequestFilter:
    """The filter of `report --account/--responsible/--status`; an account or status that
    does not exist is refused, naming the valid ones (a typo must not print an empty report)."""
    configured = [account.name for account in policy.accounts]
    for name in accounts:
        if name not in configured:
            raise InvalidFilter(
                f"--account {name!r}: no such account; configured accounts: "
                f"{', '.join(configured) or 'none'}"
            )
    valid = [status.value for status in Status]
    for name in statuses:
        if name not in valid:
            raise InvalidFilter(f"--status {name!r}: not a status; one of {', '.join(valid)}")
    directory = Directory(policy)  # an alias finds the requests of its [[staff]] email
    return RequestFilter(
        frozenset(accounts),
        frozenset(directory.staff_main_address(address) for address in responsible),
        frozenset(Status(name) for name in statuses),
    )


def report(
    settings: Settings,
    store: Store,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    only: RequestFilter = RequestFilter(),
) -> Report:
    """Every request received in [since, until) that `only` admits, with its status as of
    `now` (the filter sees that status)."""
    found = requests_as_of(settings, store, now, since, until)
    lessons = lessons_from(store.lesson_records(now))
    return Report(now, tuple(r for r in found if only.admits(r)), lessons)


def status(settings: Settings, store: Store, now: datetime) -> Report:
    """Requests open or overdue now, oldest first."""
    waiting = tuple(waiting_as_of(settings, store, now))
    return Report(now, waiting, lessons_from(store.lesson_records(now)))


# ---------------------------------------------------------------- waive and explain


class UnknownMessage(Exception):
    pass


def normalise_message_id(text: str) -> str:
    text = text.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    local, _, domain = text[1:-1].rpartition("@")
    return f"<{local}@{domain.lower()}>" if local else text


class Refused(Exception):
    """A command that would hide or take back what it must not: one line, exit 1."""


def waive(
    settings: Settings,
    store: Store,
    message_id: str,
    now: datetime,
    reason: str = "",
    *,
    by: str | None = None,
    force: bool = False,
) -> tuple[Waiver, Request | None]:
    """Mark "no reply needed" the request this client message belongs to; a request already
    answered only with `force` (waiving it takes a met or breached request out of the figures)."""
    key = client_message_key(settings, store, message_id)
    request = request_holding(settings, store, key, now)
    if request is not None and request.status in (Status.MET, Status.BREACHED) and not force:
        raise Refused(
            f"{key}: its request was already answered ({request.status.value}); waiving it "
            "would take it out of the figures: add --force to waive it anyway "
            "(the digests will list it)"
        )
    waiver = Waiver(key, by=by or getpass.getuser(), seen_at=now, reason=reason)
    store.add_waiver(waiver)
    return waiver, reevaluated(settings, store, key, now)


def unwaive(
    settings: Settings,
    store: Store,
    message_id: str,
    now: datetime,
    reason: str = "",
    *,
    by: str | None = None,
) -> Request | None:
    """Take back the command waiver of the request this client message belongs to."""
    key = client_message_key(settings, store, message_id)
    request = request_holding(settings, store, key, now)
    waiver = request.waiver if request is not None else None
    if request is None or waiver is None:
        raise Refused(f"{key}: its request is not waived")
    if waiver.via is WaiverVia.COURTESY:
        raise Refused(
            f"{key}: waived by mailwatch as a courtesy message (automation.courtesy); "
            "there is no waiver to take back"
        )
    if waiver.via is not WaiverVia.COMMAND:
        raise Refused(
            f"{key}: waived by the waive {waiver.via} in mailbox {waiver.by}; a {waiver.via} "
            "waiver lasts while the mail carries it: take the keyword off, or the copy out "
            "of the folder"
        )
    store.remove_waivers(set(request.messages))
    # no table keeps taken-back waivers: the log is the record of who took it back, and why
    log.info(
        "waiver of %s taken back by %s at %s: %s",
        request.opened_by,
        by or getpass.getuser(),
        now.isoformat(),
        reason or "no reason given",
    )
    return reevaluated(settings, store, key, now)


def client_message_key(settings: Settings, store: Store, message_id: str) -> str:
    key = normalise_message_id(message_id)
    found = store.messages_by_keys([key])
    if not found:
        raise UnknownMessage(f"no stored message has Message-ID {key}")
    role = Directory(settings.policy).role(found[0].from_addr)
    if role is not Role.CLIENT:
        raise UnknownMessage(f"{key} is not a client message (it is {role.value} mail)")
    return key


def request_holding(settings: Settings, store: Store, key: str, now: datetime) -> Request | None:
    evaluation = evaluate_subset(settings, store, closure(store, {key}, settings.policy), now)
    return next((r for r in evaluation.requests if key in r.messages), None)


def reevaluated(settings: Settings, store: Store, key: str, now: datetime) -> Request | None:
    """The request of `key` after a change to what it is measured by (a waiver, a recorded
    answer); the stored requests too, unless `now` lies before the last evaluation (its
    messages stay marked for the next one)."""
    request = request_holding(settings, store, key, now)
    if not is_historical(store, now):
        refresh_requests(settings, store, now)
    return request


@dataclass(frozen=True)
class ExplainedMessage:
    at: datetime | None
    key: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    role: str
    verdict: str


@dataclass(frozen=True)
class Explanation:
    thread: str
    messages: tuple[ExplainedMessage, ...]
    requests: tuple[Request, ...]
    lesson_records: tuple[LessonRecord, ...] = ()  # made by `now` on the requests' messages


@dataclass(frozen=True)
class SubjectMatch:
    """A conversation with the subject asked for: its first such message."""

    key: str
    arrived_at: datetime


class SeveralConversations(Exception):
    def __init__(self, subject: str, matches: Sequence[SubjectMatch]) -> None:
        super().__init__(
            f"{len(matches)} conversations have the subject {subject!r}: "
            "explain one of them by its Message-ID"
        )
        self.matches = tuple(matches)


def conversation_with_subject(settings: Settings, store: Store, subject: str, now: datetime) -> str:
    """The first Message-ID of the one conversation whose (normalised) subject is `subject`,
    among the mail that had arrived by `now`."""
    wanted = normalise_subject(subject)
    first_of_thread: dict[str, SubjectMatch] = {}
    for key, thread, arrived_at in store.messages_with_subject(wanted, arrived_by=now):
        first_of_thread.setdefault(thread or key, SubjectMatch(key, arrived_at))
    if not first_of_thread:
        raise UnknownMessage(f"no stored message has the subject {subject!r}")
    if len(first_of_thread) > 1:
        raise SeveralConversations(subject, list(first_of_thread.values()))
    return next(iter(first_of_thread.values())).key


def explain(settings: Settings, store: Store, message_id: str, now: datetime) -> Explanation:
    """The messages of a request's thread, who each went to, which counted, which did not,
    and why."""
    key = normalise_message_id(message_id)
    keys = closure(store, {key}, settings.policy)
    messages = store.messages_by_keys(keys)
    evaluation = evaluation_as_of(settings, store, keys, now)
    thread = evaluation.thread_of.get(key)
    if thread is None:
        if key in evaluation.classifications:
            raise UnknownMessage(f"{key} has no usable timestamp, so it is not measured")
        raise UnknownMessage(f"no stored message has Message-ID {key}")
    members = sorted(
        (m for m in messages if evaluation.thread_of.get(m.key) == thread),
        key=lambda m: (evaluation.classifications[m.key].at, m.key),
    )
    directory = Directory(settings.policy)
    explained = tuple(_explained(m, evaluation, directory) for m in members)
    requests = tuple(r for r in evaluation.requests if r.thread == thread)
    theirs = {key for request in requests for key in request.messages}
    records = tuple(r for r in store.lesson_records(now) if r.message_key in theirs)
    return Explanation(thread, explained, requests, records)


def _explained(message: Message, evaluation: Evaluation, directory: Directory) -> ExplainedMessage:
    c = evaluation.classifications[message.key]
    to_client = any(directory.role(address) is Role.CLIENT for address in message.recipients)
    if c.automated:
        verdict = f"automated ({c.automated}): does not count"
    elif c.role is Role.CLIENT:
        verdict = f"client of {c.account}: counts"
    elif c.role is Role.STAFF and not to_client:
        verdict = "internal: no client recipient, does not answer"
    elif c.role is Role.STAFF and not c.can_answer:
        verdict = f"{c.responder} is not a listed person: cannot answer"
    elif c.role is Role.STAFF:
        verdict = f"staff ({c.responder}): can answer when addressed to the client"
    else:
        verdict = "outside sender: not measured"
    return ExplainedMessage(
        at=c.at,
        key=message.key,
        sender=message.from_addr or "",
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        role=c.role.value,
        verdict=f"{verdict}; time from {c.time_source}",
    )
