"""The database tables, as SQLModel classes.

The store talks to them through SQLAlchemy Core (the `Table`s at the end), so
the classes only declare columns and keys; the core dataclasses stay the
currency of the rest of the program.  Every datetime column is SQLModel's
UTCDateTime: aware UTC in, aware UTC out, on SQLite too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, LargeBinary, Table, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# Named constraints let Alembic's batch mode on SQLite drop and recreate them;
# the convention must be in place before the first table class is defined.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


HUMAN_STAFF_MAIL = text("role = 'staff' AND automated IS NULL")
# a query the partial index below serves says it in these words: SQLite matches the text
HUMAN_CLIENT_MAIL = text("role = 'client' AND automated IS NULL")
HUMAN_OTHER_MAIL = text("role = 'other' AND automated IS NULL")
AWAITING_EVALUATION = text("dirty > 0")
# mostly NULL at first (an evaluation sets thread_id; few mailers send Thread-Index, only
# Gmail a thread id): a full index would hold an entry for every row, written at every insert
HAS_THREAD_ID = text("thread_id IS NOT NULL")
HAS_THREAD_INDEX = text("thread_index IS NOT NULL")
HAS_GM_THRID = text("gm_thrid IS NOT NULL")
# the few out-of-office replies; PostgreSQL reads the query's "= true" as the column itself
OUT_OF_OFFICE_SQLITE = text("out_of_office = 1")
OUT_OF_OFFICE_POSTGRESQL = text("out_of_office")


class MessageRow(SQLModel, table=True):
    """One logical message, deduplicated by `key` across mailboxes."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("key"),
        # "when did this person next send human mail?" (absences), once per out-of-office reply
        Index(
            "ix_message_human_staff_mail",
            "responder",
            "at",
            sqlite_where=HUMAN_STAFF_MAIL,
            postgresql_where=HUMAN_STAFF_MAIL,
        ),
        # "when did each client last write?" (accounts gone quiet): a few lookups per sender
        Index(
            "ix_message_human_client_mail",
            "from_addr",
            "arrived_at",
            sqlite_where=HUMAN_CLIENT_MAIL,
            postgresql_where=HUMAN_CLIENT_MAIL,
        ),
        # "which outside senders wrote in this period?" (senders nobody configured): the
        # few of them, where the period's messages were read to find them
        Index(
            "ix_message_human_other_mail",
            "arrived_at",
            sqlite_where=HUMAN_OTHER_MAIL,
            postgresql_where=HUMAN_OTHER_MAIL,
        ),
        # the few messages awaiting evaluation, in arrival order; a full index on `dirty`
        # (0 for nearly every row) lured SQLite off the key index in the privacy reduction
        Index(
            "ix_message_awaiting_evaluation",
            "arrived_at",
            "id",
            sqlite_where=AWAITING_EVALUATION,
            postgresql_where=AWAITING_EVALUATION,
        ),
        Index(
            "ix_message_thread_id",
            "thread_id",
            sqlite_where=HAS_THREAD_ID,
            postgresql_where=HAS_THREAD_ID,
        ),
        Index(
            "ix_message_thread_index",
            "thread_index",
            sqlite_where=HAS_THREAD_INDEX,
            postgresql_where=HAS_THREAD_INDEX,
        ),
        Index(
            "ix_message_out_of_office",
            "at",
            sqlite_where=OUT_OF_OFFICE_SQLITE,
            postgresql_where=OUT_OF_OFFICE_POSTGRESQL,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str
    from_addr: str | None = None
    from_name: str = ""
    sender_addr: str | None = None
    to: list[str] = Field(default_factory=list, sa_type=JSON)
    cc: list[str] = Field(default_factory=list, sa_type=JSON)
    bcc: list[str] = Field(default_factory=list, sa_type=JSON)
    subject: str = ""
    date: datetime | None = None
    received_time: datetime | None = None
    in_reply_to: list[str] = Field(default_factory=list, sa_type=JSON)
    references: list[str] = Field(default_factory=list, sa_type=JSON)
    thread_index: str | None = None
    headers: list[list[str]] = Field(default_factory=list, sa_type=JSON)
    courtesy: bool = False
    # zlib-compressed raw header block of the first copy stored, so rules can be re-run
    raw_headers: bytes = Field(sa_type=LargeBinary)
    # the earliest time known for the message (copy INTERNALDATE or mbox time,
    # else Received, else Date, else when it was stored): `--now` and retention use it
    arrived_at: datetime = Field(index=True)
    # the subject as threading compares it (policy-independent, set at ingest)
    norm_subject: str = Field(default="", index=True)
    # the evaluation's conclusions, kept so that only affected threads are re-evaluated:
    # how many changes (new, new copy, waive keyword, waiver) await evaluation: 0 when
    # evaluated; a counter, so an evaluation clears only the changes it saw
    dirty: int = Field(default=1)
    thread_id: str | None = None
    role: str | None = None
    responder: str | None = None
    at: datetime | None = None
    automated: str | None = None
    out_of_office: bool = False
    # the policy (its fingerprint) role, responder, at, automated and out_of_office were found
    # under; None once a copy is added (a copy can change them): found again when evaluated
    classified_under: str | None = None


class ReferenceRow(SQLModel, table=True):
    """A Message-ID a message references (In-Reply-To or References): finds its replies."""

    __tablename__ = "message_ref"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    ref_key: str = Field(index=True)


class PersonRow(SQLModel, table=True):
    """A staff address seen sending human mail from a watched Sent folder: a person."""

    __tablename__ = "person"
    __table_args__ = (UniqueConstraint("address"),)

    id: int | None = Field(default=None, primary_key=True)
    address: str


class StateRow(SQLModel, table=True):
    """Small named values: the policy the requests were computed with, and when."""

    __tablename__ = "mailwatch_state"
    __table_args__ = (UniqueConstraint("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    value: str


class CopyRow(SQLModel, table=True):
    """One copy of a message: an IMAP folder location, or a file on import."""

    __tablename__ = "message_copy"
    __table_args__ = (
        UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),
        UniqueConstraint("mailbox", "folder", "location"),
        Index(
            "ix_message_copy_gm_thrid",
            "gm_thrid",
            sqlite_where=HAS_GM_THRID,
            postgresql_where=HAS_GM_THRID,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    mailbox: str
    folder: str
    sent_folder: bool = False
    internal_date: datetime | None = None
    envelope_time: datetime | None = None
    received_time: datetime | None = None  # this copy's top-most Received header's time
    waive_keyword: bool = False
    waive_folder: bool = False
    waive_seen_at: datetime | None = None
    gm_thrid: str | None = None
    # IMAP UIDs and UIDVALIDITY are unsigned 32-bit: too big for a signed INTEGER
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    uid: int | None = Field(default=None, sa_type=BigInteger)
    # the origin of an imported copy ("/path/file.mbox#17"); None for IMAP copies,
    # whose location is (mailbox, folder, uidvalidity, uid)
    location: str | None = None


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str
    folder: str
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    uidnext: int | None = Field(default=None, sa_type=BigInteger)
    highestmodseq: int | None = Field(default=None, sa_type=BigInteger)


class WaiverRow(SQLModel, table=True):
    __tablename__ = "waiver"
    __table_args__ = (UniqueConstraint("message_key"),)

    id: int | None = Field(default=None, primary_key=True)
    message_key: str
    made_by: str  # Waiver.by ("by" is an SQL keyword)
    seen_at: datetime
    reason: str = ""


class RecordedAnswerRow(SQLModel, table=True):
    """An answer given outside email (`mailwatch answered`), one per client message."""

    __tablename__ = "recorded_answer"
    __table_args__ = (UniqueConstraint("message_key"),)

    id: int | None = Field(default=None, primary_key=True)
    message_key: str
    answered_at: datetime
    via: str
    responder: str | None = None
    recorded_by: str
    recorded_at: datetime
    note: str = ""
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None


class LessonRecordRow(SQLModel, table=True):
    """One `mailwatch annotate`, kept for good: the lessons-learnt log is every recording,
    and a lesson as of an instant is what those made by then leave."""

    __tablename__ = "lesson_record"

    id: int | None = Field(default=None, primary_key=True)
    message_key: str
    made_by: str
    made_at: datetime
    reason: str | None = None
    category: str | None = None
    action: str | None = None
    owner: str | None = None
    resolved: bool = False
    note: str | None = None


class RequestRow(SQLModel, table=True):
    """A computed request; kept when retention deletes the messages behind it."""

    __tablename__ = "request"

    id: int | None = Field(default=None, primary_key=True)
    account: str
    thread: str = Field(index=True)
    subject: str
    opened_by: str
    received_at: datetime = Field(index=True)
    messages: list[str] = Field(default_factory=list, sa_type=JSON)
    tier: str
    clock: str
    target_seconds: int
    deadline: datetime
    responsible: list[str] = Field(default_factory=list, sa_type=JSON)
    status: str
    answered_by: str | None = None
    answered_at: datetime | None = None
    responder: str | None = None
    response_seconds: int | None = None
    elapsed_seconds: int = 0
    closed_at: datetime | None = Field(default=None, index=True)
    waiver: dict[str, str] | None = Field(default=None, sa_type=JSON)
    notes: list[str] = Field(default_factory=list, sa_type=JSON)
    evaluated_at: datetime
    answered_via: str | None = None
    reply_possibly_unseen: bool = False


class RetentionRow(SQLModel, table=True):
    """The latest retention cutoff: requests received before it are frozen history."""

    __tablename__ = "retention"

    id: int | None = Field(default=None, primary_key=True)
    cutoff: datetime


class ClaimRow(SQLModel, table=True):
    """ "Claim, then act": one row per nudge or digest and recipient."""

    __tablename__ = "claim"
    __table_args__ = (UniqueConstraint("kind", "key", "recipient"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    key: str
    recipient: str
    claimed_at: datetime
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    released: bool = False  # a temporary failure gave the claim back for a retry


class ReportedFiguresRow(SQLModel, table=True):
    """The figures a sent digest or client report showed, so a later change is told, not silent."""

    __tablename__ = "reported_figures"
    __table_args__ = (UniqueConstraint("kind", "period_key", "recipient"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # a claim kind: "digest" or "client-report"
    period_key: str  # "week:2026-W47"
    period_start: datetime
    period_end: datetime
    recipient: str  # a digest's recipient; a client report's account
    figures: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # the status of each request behind the figures, by the Message-ID that opened it
    statuses: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    policy: str  # core.model.policy_fingerprint when reported: a later one means a new config
    reported_at: datetime


class LeaseRow(SQLModel, table=True):
    __tablename__ = "lease"
    __table_args__ = (UniqueConstraint("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    owner: str
    expires_at: datetime


class SyncStateRow(SQLModel, table=True):
    __tablename__ = "sync_state"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str
    folder: str  # "" for the mailbox as a whole (a unique key cannot hold NULL)
    last_attempt_at: datetime
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failures: int = 0  # consecutive failures since the last success
    fetched: int = 0  # messages fetched by the last successful sync


class QuarantineRow(SQLModel, table=True):
    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("location"),)

    id: int | None = Field(default=None, primary_key=True)
    location: str
    error: str
    raw: bytes | None = Field(default=None, sa_type=LargeBinary)
    raw_size: int | None = None  # the size before capping
    seen_at: datetime = Field(index=True)


# The tables as SQLAlchemy Core sees them: what the store's queries are written against.
MESSAGES: Table = SQLModel.metadata.tables["message"]
REFERENCES: Table = SQLModel.metadata.tables["message_ref"]
PEOPLE: Table = SQLModel.metadata.tables["person"]
STATE: Table = SQLModel.metadata.tables["mailwatch_state"]
COPIES: Table = SQLModel.metadata.tables["message_copy"]
CHECKPOINTS: Table = SQLModel.metadata.tables["checkpoint"]
WAIVERS: Table = SQLModel.metadata.tables["waiver"]
RECORDED_ANSWERS: Table = SQLModel.metadata.tables["recorded_answer"]
LESSON_RECORDS: Table = SQLModel.metadata.tables["lesson_record"]
REQUESTS: Table = SQLModel.metadata.tables["request"]
RETENTION: Table = SQLModel.metadata.tables["retention"]
CLAIMS: Table = SQLModel.metadata.tables["claim"]
REPORTED_FIGURES: Table = SQLModel.metadata.tables["reported_figures"]
LEASES: Table = SQLModel.metadata.tables["lease"]
SYNC_STATES: Table = SQLModel.metadata.tables["sync_state"]
QUARANTINE: Table = SQLModel.metadata.tables["quarantine"]
