"""The plain values the response clock works on.

Everything here is a frozen dataclass of standard-library types, so the core
can be tested with tables of values and the adapters (IMAP, files, database)
only have to produce and consume these.  All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Container
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, time, timedelta
from enum import Enum, StrEnum
from typing import NamedTuple, TypeVar


class Role(StrEnum):
    STAFF = "staff"
    CLIENT = "client"
    OTHER = "other"


class Status(StrEnum):
    MET = "met"
    BREACHED = "breached"
    OPEN = "open"
    OVERDUE = "overdue"
    WAIVED = "waived"


class ClockKind(StrEnum):
    CALENDAR = "calendar"
    BUSINESS = "business"


# ---------------------------------------------------------------- messages

Slotted = TypeVar("Slotted")


def _pickled_as_arguments(cls: type[Slotted]) -> type[Slotted]:
    """Pickle a frozen dataclass with slots as the arguments of its constructor: the
    `__setstate__` dataclasses give it sets each field from Python, which was a third of
    handing a first sync's parsed mail from the parsing process to the storing one."""
    values = operator.attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]
    setattr(cls, "__reduce__", lambda self: (cls, values(self)))  # noqa: B010
    return cls


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Copy:
    """Where one copy of a message was seen: a mailbox folder, or a file on import.

    `internal_date` is the IMAP INTERNALDATE (None for imported files);
    `envelope_time` is an mbox `From ` line's time (read as UTC), when there is one;
    `received_time` is this copy's top-most `Received` header's time: each mailbox's
    delivery adds its own, so copies of one message differ.
    """

    mailbox: str
    folder: str
    sent_folder: bool = False
    internal_date: datetime | None = None
    envelope_time: datetime | None = None
    waive_keyword: bool = False  # the waive keyword is set on this copy
    waive_folder: bool = False  # this copy lies in the waive folder / label
    waive_seen_at: datetime | None = None  # when mailwatch first saw the keyword or folder copy
    gm_thrid: str | None = None  # Gmail X-GM-THRID (joins messages of the same mailbox only)
    received_time: datetime | None = None


@_pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Message:
    """One logical message (deduplicated by `key`), with every copy seen of it.

    `key` is the Message-ID with its angle brackets, or a synthetic
    `<mw-sha1-…@mailwatch.invalid>` when the message has none.
    `headers` holds the decoded values of the header fields the rules read,
    names lower-cased, in order of appearance (a field may occur twice).
    """

    key: str
    from_addr: str | None = None  # addr-spec, lower-cased
    from_name: str = ""
    sender_addr: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    date: datetime | None = None  # the Date header, None when missing or unparsable
    received_time: datetime | None = None  # the top-most Received header's time
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    thread_index: str | None = None  # Outlook Thread-Index conversation GUID (hex)
    headers: tuple[tuple[str, str], ...] = ()
    courtesy: bool = False  # the body only thanks or acknowledges (decided at ingest)
    copies: tuple[Copy, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of a header field, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc + self.bcc

    @property
    def participants(self) -> frozenset[str]:
        people = set(self.recipients)
        if self.from_addr:
            people.add(self.from_addr)
        return frozenset(people)


class WaiverVia(StrEnum):
    """How a waiver was made: the waive keyword or folder (IMAP), `waive`, or courtesy."""

    KEYWORD = "keyword"
    FOLDER = "folder"
    COMMAND = "command"
    COURTESY = "courtesy"


@dataclass(frozen=True)
class Waiver:
    """A "no reply needed" on one client message; it covers the whole request of that
    message, up to `seen_at` (response-clock.md, Decisions 1)."""

    message_key: str
    by: str  # who made it: the `--by` or login name; for a keyword or folder the mailbox
    seen_at: datetime  # when it was made, or first seen by a poll
    reason: str = ""
    via: WaiverVia = WaiverVia.COMMAND


ANSWER_CHANNELS = ("phone", "meeting", "chat", "other")


@dataclass(frozen=True)
class RecordedAnswer:
    """An answer given outside email (`mailwatch answered`): it answers the request of
    `message_key`, a client message, at `at`, like a staff email sent then."""

    message_key: str
    at: datetime
    via: str  # one of ANSWER_CHANNELS
    responder: str | None  # the staff member who answered (`--by`), when named
    recorded_by: str  # `--by`, else the login name of who ran the command
    recorded_at: datetime
    note: str = ""
    withdrawn_at: datetime | None = None  # taken back (`mailwatch unanswered`) then
    withdrawn_by: str | None = None

    def known_at(self, now: datetime) -> bool:
        """Recorded, and not yet taken back, as of `now`."""
        return self.recorded_at <= now and (self.withdrawn_at is None or self.withdrawn_at > now)


# ---------------------------------------------------------------- the agency


@dataclass(frozen=True)
class BusinessHours:
    timezone: str = "UTC"
    days: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0
    start: time = time(9, 0)
    end: time = time(17, 30)
    holidays: Container[date] = (
        frozenset()
    )  # dates in `timezone`; any container (a `holidays` object)
    closed: frozenset[date] = frozenset()


@dataclass(frozen=True)
class Tier:
    name: str
    target: timedelta
    subject_patterns: tuple[str, ...] = ()  # regular expressions, searched in the subject
    high_priority: bool = False  # also matches Importance: high, X-Priority 1|2, Priority: urgent
    clock: ClockKind | None = None  # None: the account's (or agency's) clock
    directors_after: timedelta | None = None  # None: [nudges] directors_after


@dataclass(frozen=True)
class StaffMember:
    email: str
    name: str = ""
    aliases: tuple[str, ...] = ()
    timezone: str | None = None


@dataclass(frozen=True)
class Account:
    name: str
    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    manager: str | None = None
    backups: tuple[str, ...] = ()
    target: timedelta | None = None
    clock: ClockKind | None = None
    business_hours: BusinessHours | None = None


@dataclass(frozen=True)
class Leave:
    who: str
    start: date  # both days included, agency timezone
    end: date


@dataclass(frozen=True)
class NudgeStage:
    name: str  # "reminder", "warning", "breach"
    at: float  # fraction of the target elapsed on the request's clock: 0.75, 0.9, 1.0
    notify: tuple[str, ...]  # any of "manager", "backups", "head"


@dataclass(frozen=True)
class NudgePolicy:
    enabled: bool = True
    stages: tuple[NudgeStage, ...] = (
        NudgeStage("reminder", 0.75, ("manager",)),
        NudgeStage("warning", 0.90, ("manager", "backups")),
        NudgeStage("breach", 1.0, ("manager", "backups", "head")),
    )
    quiet_start: time = time(20, 0)  # recipient's local time
    quiet_end: time = time(8, 0)
    quiet_weekends: bool = True
    critical_tiers: tuple[str, ...] = ("critical",)  # these go at once, whatever the hour
    max_lateness: timedelta = timedelta(hours=2)  # a stage due longer ago than this is skipped
    still_waiting_at: time = time(9, 0)  # the daily overdue lists go from then (recipient's time)
    head_overdue_after: timedelta = timedelta(hours=24)  # past the deadline: on the head's list
    directors_after: timedelta | None = None  # past the deadline: to the Directors (None: never)


@dataclass(frozen=True)
class Policy:
    """Everything the clock needs to know about the agency, from the configuration."""

    agency_domains: tuple[str, ...] = ()
    timezone: str = "UTC"
    staff: tuple[StaffMember, ...] = ()
    accounts: tuple[Account, ...] = ()
    head_of_client_management: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    target: timedelta = timedelta(hours=24)
    clock: ClockKind = ClockKind.CALENDAR
    business_hours: BusinessHours = field(default_factory=BusinessHours)
    tiers: tuple[Tier, ...] = ()
    request_expiry: timedelta = timedelta(days=14)
    subject_window: timedelta = timedelta(days=14)
    generic_subjects: frozenset[str] = frozenset(
        {
            "hi",
            "hello",
            "hey",
            "question",
            "quick question",
            "help",
            "update",
            "fyi",
            "thanks",
            "thank you",
            "test",
            "urgent",
            "request",
            "info",
            "enquiry",
            "inquiry",
            "no subject",
            "(no subject)",
        }
    )
    human_lists: tuple[str, ...] = ()
    courtesy: bool = True
    leave: tuple[Leave, ...] = ()
    absence_max: timedelta = timedelta(days=7)
    nudges: NudgePolicy = field(default_factory=NudgePolicy)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Classification:
    """What a message is to the clock, and why."""

    key: str
    role: Role
    account: str | None  # the account of a client sender
    automated: str | None  # the rule that fired, e.g. "Auto-Submitted: auto-replied"; None = human
    can_answer: bool  # a staff person (not jira@, billing@, …)
    responder: str | None  # the staff person's main address (Sender on behalf, aliases mapped)
    at: datetime | None  # received_at (client/other) or sent_at (staff); None: no usable time
    time_source: str  # "internaldate", "received", "mbox", "date", "none"


class Verdict(NamedTuple):
    """What is kept of a message's classification: what evaluating any other thread needs
    to know of it (the rest follows from the policy). A tuple, not a dataclass: one for each
    message of a first sync comes from the parsing process, and tuples unpickle faster."""

    role: Role
    responder: str | None
    at: datetime | None
    automated: str | None
    out_of_office: bool  # a staff member's automatic reply while away


@dataclass(frozen=True)
class Request:
    account: str
    thread: str  # Message-ID of the thread's earliest message
    subject: str
    opened_by: str
    received_at: datetime
    messages: tuple[str, ...]  # the human client messages of the request
    tier: str
    clock: ClockKind
    target_seconds: int
    deadline: datetime
    responsible: tuple[str, ...]
    status: Status
    answered_by: str | None = None
    answered_at: datetime | None = None
    responder: str | None = None
    response_seconds: int | None = None
    elapsed_seconds: int = 0  # on the request's clock, up to the answer or `now`
    closed_at: datetime | None = None  # answered, waived, or expired unanswered
    waiver: Waiver | None = None
    notes: tuple[str, ...] = ()  # the reasons behind the decisions, for `explain`
    answered_via: str | None = None  # "email", or an ANSWER_CHANNELS value of a RecordedAnswer
    reply_possibly_unseen: bool = False  # a client message cites staff-looking mail never seen


@dataclass(frozen=True)
class Absence:
    """A staff member inferred absent from their own out-of-office auto-reply."""

    who: str
    start: datetime
    end: datetime
    evidence: str  # the auto-reply's Message-ID


@dataclass(frozen=True)
class Checkpoint:
    """How far one (mailbox, folder) has been synced."""

    mailbox: str
    folder: str
    uidvalidity: int | None = None
    last_uid: int = 0
    uidnext: int | None = None
    highestmodseq: int | None = None


# ---------------------------------------------------------------- identity of a policy


def policy_fingerprint(policy: Policy) -> str:
    """A digest of the policy that is the same in every process: sets are sorted (their
    order follows per-process string hashing) and a holiday calendar stands in by its
    country code (its own contents grow as years are looked up)."""
    return hashlib.sha256(json.dumps(_canonical(policy), sort_keys=True).encode()).hexdigest()


def _canonical(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(json.dumps(_canonical(v), sort_keys=True) for v in value)
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, date | time):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    # a holiday calendar (any other Container of dates)
    return f"{type(value).__name__}:{getattr(value, 'country', '')}-{getattr(value, 'subdiv', '')}"
