"""The store: core dataclasses in and out of SQLite or PostgreSQL.

Every write runs in one short transaction.  On SQLite those transactions start
with BEGIN IMMEDIATE, so a writer takes the lock up front instead of failing
with SQLITE_BUSY halfway (the SQLAlchemy pysqlite recipe); busy_timeout makes
the others wait for it.  Idempotency comes from unique keys and
INSERT … ON CONFLICT DO NOTHING, which both dialects share.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    String,
    Table,
    Text,
    bindparam,
    case,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from mailwatch.core.conversations import normalise_subject
from mailwatch.core.model import (
    Checkpoint,
    ClockKind,
    Copy,
    Message,
    Request,
    Status,
    Waiver,
)
from mailwatch.store.tables import (
    CheckpointRow,
    ClaimRow,
    CopyRow,
    LeaseRow,
    MessageRow,
    PersonRow,
    QuarantineRow,
    ReferenceRow,
    RequestRow,
    RetentionRow,
    StateRow,
    SyncStateRow,
    WaiverRow,
)

MESSAGES = MessageRow.__table__
REFERENCES = ReferenceRow.__table__
PEOPLE = PersonRow.__table__
STATE = StateRow.__table__
COPIES = CopyRow.__table__
CHECKPOINTS = CheckpointRow.__table__
WAIVERS = WaiverRow.__table__
REQUESTS = RequestRow.__table__
RETENTION = RetentionRow.__table__
CLAIMS = ClaimRow.__table__
LEASES = LeaseRow.__table__
SYNC_STATES = SyncStateRow.__table__
QUARANTINE = QuarantineRow.__table__

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
QUARANTINE_RAW_LIMIT = 1024 * 1024
CHUNK = 500  # values per IN (...) list: well below every SQLite variable limit
WRITE = "mailwatch_write"  # execution option: this transaction will write
# A PostgreSQL advisory lock key (any constant bigint that is ours): replace_requests.
REPLACE_REQUESTS_LOCK = 0x6D77_7265_7175  # "mwrequ"


@dataclass(frozen=True)
class StoredMessage:
    """One fetched or imported copy, ready to persist."""

    message: Message  # core model, with exactly ONE Copy in .copies
    raw_headers: bytes  # the raw header block as fetched (kept so rules can be re-run)
    uidvalidity: int | None = None  # IMAP location of this copy; None for imported files
    uid: int | None = None
    location: str = ""  # human-readable origin ("alice/INBOX uid 42", "/path/to/file.mbox#17")


@dataclass(frozen=True)
class QuarantinedMessage:
    location: str
    error: str
    seen_at: datetime


@dataclass(frozen=True)
class Claim:
    kind: str
    key: str
    recipient: str
    claimed_at: datetime  # the latest claim
    sent_at: datetime | None
    attempts: int  # how many times it was claimed
    error: str | None  # the latest failure, cleared once sent
    failed_at: datetime | None = None
    released: bool = False  # a temporary failure gave it back: the next claim retries


@dataclass(frozen=True)
class SyncState:
    mailbox: str
    folder: str | None  # None: the mailbox as a whole (login, folder list)
    last_ok_at: datetime | None
    last_error: str | None
    failures: int  # consecutive failures since the last success
    last_attempt_at: datetime | None = None
    last_error_at: datetime | None = None
    fetched: int = 0  # messages fetched by the last successful sync


class Store:
    def __init__(self, url: str):
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        self.engine = (
            _sqlite_engine(self.url) if self.dialect == "sqlite" else _postgres_engine(self.url)
        )

    # ------------------------------------------------------------ schema

    def upgrade(self) -> None:
        """Apply every migration not applied yet (creates the schema on an empty database)."""
        config = _alembic_config()
        with self._writing() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        with self.engine.connect() as conn:
            applied = set(MigrationContext.configure(conn).get_current_heads())
        return applied == set(ScriptDirectory.from_config(_alembic_config()).get_heads())

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ messages

    def add_messages(
        self, batch: Sequence[StoredMessage], checkpoint: Checkpoint | None = None
    ) -> int:
        """Store a batch of copies and, in the same transaction, the checkpoint after it.

        Returns the number of new logical messages.
        """
        for item in batch:
            if len(item.message.copies) != 1:
                raise ValueError(f"{item.message.key}: a stored copy needs exactly one Copy")
            if item.uid is None and not item.location:
                raise ValueError(f"{item.message.key}: a copy needs a uid or a location")
        with self._writing() as conn:
            ids, new = self._upsert_messages(conn, batch) if batch else ({}, 0)
            if batch:
                self._add_copies(conn, batch, ids)
                self._mark_dirty(conn, set(ids.values()))
            if checkpoint is not None:
                self._save_checkpoint(conn, checkpoint)
        return new

    def load_messages(self, arrived_before: datetime | None = None) -> list[Message]:
        """Every stored message with all its copies, earliest arrival first."""
        messages = select(MESSAGES).order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        copies = select(COPIES).join(MESSAGES).order_by(COPIES.c.message_id, COPIES.c.id)
        if arrived_before is not None:
            messages = messages.where(MESSAGES.c.arrived_at < arrived_before)
            copies = copies.where(MESSAGES.c.arrived_at < arrived_before)
        with self._reading() as conn:
            # messages first: a copy stored in between belongs to no listed message, or to
            # one that exists either way (PostgreSQL reads each statement's own snapshot)
            message_rows = conn.execute(messages).mappings().all()
            copies_of: dict[int, list[Copy]] = defaultdict(list)
            for row in conn.execute(copies).mappings():
                copies_of[row["message_id"]].append(_copy(row))
        return [_message(row, copies_of[row["id"]]) for row in message_rows]

    def raw_headers(self, key: str) -> bytes | None:
        """The raw header block stored with a message, for re-running the rules."""
        with self._reading() as conn:
            packed = conn.scalar(select(MESSAGES.c.raw_headers).where(MESSAGES.c.key == key))
        return None if packed is None else zlib.decompress(packed)

    def delete_messages_before(self, cutoff: datetime) -> int:
        """Retention: drop messages that arrived before `cutoff`, and quarantined mail
        seen before it.  Computed requests stay; those received before the cutoff are
        from now on history that `replace_requests` no longer touches."""
        old = select(MESSAGES.c.id).where(MESSAGES.c.arrived_at < cutoff)
        with self._writing() as conn:
            conn.execute(delete(COPIES).where(COPIES.c.message_id.in_(old)))
            deleted = conn.execute(delete(MESSAGES).where(MESSAGES.c.arrived_at < cutoff)).rowcount
            conn.execute(delete(QUARANTINE).where(QUARANTINE.c.seen_at < cutoff))
            horizon = _retention_horizon(conn)
            if horizon is None:
                conn.execute(RETENTION.insert().values(cutoff=cutoff))
            elif cutoff > horizon:
                conn.execute(update(RETENTION).values(cutoff=cutoff))
        return deleted

    # ------------------------------------------------------------ privacy

    def reduce_unrelated_mail(
        self, keys: Iterable[str], now: datetime, is_client: Callable[[str], bool]
    ) -> int:
        """Cut mail with no client participant and no client in its thread down to what
        threading and the clock read: ids, references, times, copies, the sender, and the
        automation verdict as a header.  Candidates are the evaluated `keys` and the mail
        that arrived since the last reduction; only what arrived before `arrived_before`
        (a grace period, so an account added soon after still sees its history) and is
        evaluated is reduced.  Returns how many messages were reduced."""
        wanted = set(keys)
        arrived_before = now - UNRELATED_MAIL_GRACE
        with self._writing() as conn:
            since = conn.scalar(select(STATE.c.value).where(STATE.c.name == REDUCED_STATE))
            window = MESSAGES.c.arrived_at < arrived_before
            unreduced = (
                MESSAGES.c.role.in_(("staff", "other")),
                MESSAGES.c.dirty == 0,
                MESSAGES.c.raw_headers != REDUCED_RAW,
            )
            queries = []
            if since is not None:
                # the window is new arrivals; evaluated keys may be older mail (never newer
                # than the grace period: a past run with `--now` ahead may have set the mark)
                window_start = datetime.fromisoformat(since)
                window = window & (MESSAGES.c.arrived_at >= window_start)
                older = MESSAGES.c.arrived_at < min(window_start, arrived_before)
                queries += [
                    select(*_REDUCE_COLUMNS).where(MESSAGES.c.key.in_(chunk), older, *unreduced)
                    for chunk in _chunks(sorted(wanted))
                ]
            queries.append(select(*_REDUCE_COLUMNS).where(window, *unreduced))
            candidates = {}
            for query in queries:
                # streamed: a first evaluation of years of mail reads every message once
                for row in conn.execute(query.execution_options(yield_per=CHUNK)).mappings():
                    if not any(is_client(a) for a in _addresses_of(row)):
                        candidates[row["id"]] = row
            threads = sorted({row["thread_id"] for row in candidates.values() if row["thread_id"]})
            client_threads: set[str] = set()
            for chunk in _chunks(threads):
                client_threads.update(
                    conn.scalars(
                        select(MESSAGES.c.thread_id).where(
                            MESSAGES.c.thread_id.in_(chunk), MESSAGES.c.role == "client"
                        )
                    )
                )
            reduced = [
                _reduced(row)
                for row in candidates.values()
                if row["thread_id"] not in client_threads
            ]
            for start in range(0, len(reduced), CHUNK):
                conn.execute(
                    update(MESSAGES)
                    .where(MESSAGES.c.id == bindparam("row_id"))
                    .values({name: bindparam(f"new_{name}") for name in _REDUCED_FIELDS}),
                    reduced[start : start + CHUNK],
                )
            if since is None or arrived_before > datetime.fromisoformat(since):
                mark = arrived_before.isoformat()
                conn.execute(
                    self._insert(STATE)
                    .values(name=REDUCED_STATE, value=mark)
                    .on_conflict_do_update(index_elements=["name"], set_={"value": mark})
                )
        return len(reduced)

    def messages_about(self, address: str) -> list[tuple[Message, datetime, bytes]]:
        """Every message `address` sent or received: (message, arrived at, raw header block)."""
        with self._reading() as conn:
            rows = [
                row
                for row in conn.execute(select(MESSAGES).where(_mentions(address))).mappings()
                if address in _addresses_of(row)
            ]
            copies_of: dict[int, list[Copy]] = defaultdict(list)
            for chunk in _chunks([row["id"] for row in rows]):
                query = (
                    select(COPIES)
                    .where(COPIES.c.message_id.in_(chunk))
                    .order_by(COPIES.c.message_id, COPIES.c.id)
                )
                for copy in conn.execute(query).mappings():
                    copies_of[copy["message_id"]].append(_copy(copy))
        rows.sort(key=lambda row: (row["arrived_at"], row["id"]))
        return [
            (
                _message(row, copies_of[row["id"]]),
                row["arrived_at"],
                zlib.decompress(row["raw_headers"]),
            )
            for row in rows
        ]

    def forget_address(self, address: str) -> Forgotten:
        """Delete every conversation `address` took part in (each thread holding a message it
        sent or received, with copies, references and waivers), its claims, its person
        record and the set-aside mail naming it.  The requests of those conversations stay
        for the figures, without subject, with message ids replaced by tokens (so no
        re-evaluation replaces them: nothing carries their thread any more), and with the
        address taken out of responder and responsible."""
        with self._writing() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(REPLACE_REQUESTS_LOCK)))
            own = [
                row
                for row in conn.execute(
                    select(
                        MESSAGES.c.id, MESSAGES.c.key, MESSAGES.c.thread_id, *_ADDRESS_COLUMNS
                    ).where(_mentions(address))
                ).mappings()
                if address in _addresses_of(row)
            ]
            threads = sorted({row["thread_id"] for row in own if row["thread_id"]})
            doomed = {row["id"]: row["key"] for row in own}
            for chunk in _chunks(threads):
                query = select(MESSAGES.c.id, MESSAGES.c.key).where(MESSAGES.c.thread_id.in_(chunk))
                doomed.update({row.id: row.key for row in conn.execute(query)})
            tokens = {key: _token() for key in {*doomed.values(), *threads}}
            requests = _forget_in_requests(conn, address, tokens)
            ids = sorted(doomed)
            for chunk in _chunks(ids):
                conn.execute(delete(REFERENCES).where(REFERENCES.c.message_id.in_(chunk)))
                conn.execute(delete(COPIES).where(COPIES.c.message_id.in_(chunk)))
                conn.execute(delete(MESSAGES).where(MESSAGES.c.id.in_(chunk)))
            keys = sorted(doomed.values())
            for chunk in _chunks(keys):
                conn.execute(delete(WAIVERS).where(WAIVERS.c.message_key.in_(chunk)))
            for row in conn.execute(select(CLAIMS.c.id, CLAIMS.c.key)).all():
                opener, bar, stage = row.key.partition("|")
                if bar and opener in tokens:
                    changed = update(CLAIMS).where(CLAIMS.c.id == row.id)
                    conn.execute(changed.values(key=f"{tokens[opener]}|{stage}"))
            claims = conn.execute(delete(CLAIMS).where(CLAIMS.c.recipient == address)).rowcount
            conn.execute(delete(PEOPLE).where(PEOPLE.c.address == address))
            set_aside = [row.id for row in _quarantine_naming(conn, address)]
            for chunk in _chunks(set_aside):
                conn.execute(delete(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)))
        return Forgotten(
            messages=len(own),
            conversation_messages=len(doomed) - len(own),
            requests=requests,
            claims=claims,
            set_aside=len(set_aside),
        )

    def quarantined_naming(self, address: str) -> list[QuarantinedMessage]:
        """Set-aside mail whose stored bytes name `address`."""
        with self._reading() as conn:
            return [
                QuarantinedMessage(row.location, row.error, row.seen_at)
                for row in _quarantine_naming(conn, address)
            ]

    def set_state(self, name: str, value: str) -> None:
        with self._writing() as conn:
            conn.execute(
                self._insert(STATE)
                .values(name=name, value=value)
                .on_conflict_do_update(index_elements=["name"], set_={"value": value})
            )

    # ------------------------------------------------------------ IMAP locations

    def checkpoint(self, mailbox: str, folder: str) -> Checkpoint | None:
        query = select(CHECKPOINTS).where(
            CHECKPOINTS.c.mailbox == mailbox, CHECKPOINTS.c.folder == folder
        )
        with self._reading() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return Checkpoint(
            mailbox=row["mailbox"],
            folder=row["folder"],
            uidvalidity=row["uidvalidity"],
            last_uid=row["last_uid"],
            uidnext=row["uidnext"],
            highestmodseq=row["highestmodseq"],
        )

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._writing() as conn:
            self._save_checkpoint(conn, checkpoint)

    def forget_locations(self, mailbox: str, folder: str) -> int:
        """After a UIDVALIDITY change: the folder's UIDs mean nothing any more.

        The copy rows stay (with their INTERNALDATE and waive flags) but lose their
        UID; a copy fetched again under the new UIDVALIDITY is matched back to its
        row by Message-ID instead of becoming a second copy.  Returns the rows changed.
        """
        with self._writing() as conn:
            return conn.execute(
                update(COPIES)
                .where(
                    COPIES.c.mailbox == mailbox,
                    COPIES.c.folder == folder,
                    COPIES.c.uid.is_not(None),
                )
                .values(uid=None, uidvalidity=None)
            ).rowcount

    def known_uids(self, mailbox: str, folder: str, uidvalidity: int) -> set[int]:
        query = select(COPIES.c.uid).where(
            COPIES.c.mailbox == mailbox,
            COPIES.c.folder == folder,
            COPIES.c.uidvalidity == uidvalidity,
        )
        with self._reading() as conn:
            return set(conn.scalars(query))

    def set_waive_keyword(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        flagged_uids: set[int],
        checked_uids: set[int],
        seen_at: datetime,
    ) -> int:
        """Among `checked_uids`, the copies in `flagged_uids` carry the waive keyword and
        the others do not.  Returns how many copies changed."""
        flagged = sorted(flagged_uids & checked_uids)
        unflagged = sorted(checked_uids - flagged_uids)
        here = (
            COPIES.c.mailbox == mailbox,
            COPIES.c.folder == folder,
            COPIES.c.uidvalidity == uidvalidity,
        )
        changed = 0
        with self._writing() as conn:
            for uids in _chunks(flagged):
                changed += conn.execute(
                    update(COPIES)
                    .where(*here, COPIES.c.uid.in_(uids), COPIES.c.waive_keyword.is_(False))
                    .values(
                        waive_keyword=True,
                        waive_seen_at=func.coalesce(
                            COPIES.c.waive_seen_at,
                            bindparam("seen_at", seen_at, type_=COPIES.c.waive_seen_at.type),
                        ),
                    )
                ).rowcount
            for uids in _chunks(unflagged):
                changed += conn.execute(
                    update(COPIES)
                    .where(*here, COPIES.c.uid.in_(uids), COPIES.c.waive_keyword.is_(True))
                    .values(
                        waive_keyword=False,
                        # the folder copy still waives: keep when it was seen
                        waive_seen_at=case(
                            (COPIES.c.waive_folder.is_(True), COPIES.c.waive_seen_at),
                            else_=None,
                        ),
                    )
                ).rowcount
            if changed:
                for uids in _chunks(sorted(checked_uids)):
                    touched = select(COPIES.c.message_id).where(*here, COPIES.c.uid.in_(uids))
                    conn.execute(
                        update(MESSAGES)
                        .where(MESSAGES.c.id.in_(touched))
                        .values(dirty=MESSAGES.c.dirty + 1)
                    )
        return changed

    # ------------------------------------------------------------ quarantine and waivers

    def quarantine(self, location: str, error: str, raw: bytes | None, seen_at: datetime) -> None:
        """Keep aside a message that could not be handled (once per location)."""
        values: dict[str, Any] = {
            "location": location,
            "error": error,
            "raw": None if raw is None else raw[:QUARANTINE_RAW_LIMIT],
            "raw_size": None if raw is None else len(raw),
            "seen_at": seen_at,
        }
        with self._writing() as conn:
            conn.execute(self._insert(QUARANTINE).on_conflict_do_nothing().values(values))

    def quarantined(self) -> list[QuarantinedMessage]:
        query = select(QUARANTINE.c.location, QUARANTINE.c.error, QUARANTINE.c.seen_at).order_by(
            QUARANTINE.c.seen_at, QUARANTINE.c.id
        )
        with self._reading() as conn:
            return [QuarantinedMessage(*row) for row in conn.execute(query)]

    def add_waiver(self, waiver: Waiver) -> None:
        """Record a waiver; the first one for a message wins."""
        with self._writing() as conn:
            conn.execute(
                self._insert(WAIVERS)
                .on_conflict_do_nothing()
                .values(
                    message_key=waiver.message_key,
                    made_by=waiver.by,
                    seen_at=waiver.seen_at,
                    reason=waiver.reason,
                )
            )
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.key == waiver.message_key)
                .values(dirty=MESSAGES.c.dirty + 1)
            )

    def waivers(self) -> list[Waiver]:
        query = select(WAIVERS).order_by(WAIVERS.c.seen_at, WAIVERS.c.id)
        with self._reading() as conn:
            return [
                Waiver(row["message_key"], row["made_by"], row["seen_at"], row["reason"])
                for row in conn.execute(query).mappings()
            ]

    # ------------------------------------------------------------ computed requests

    def replace_requests(self, requests: Sequence[Request], evaluated_at: datetime) -> None:
        """Replace the computed requests in one transaction.

        Requests received before the retention horizon (the latest cutoff of
        `delete_messages_before`) are history: their messages are gone, so they are
        neither deleted nor replaced by a re-evaluation that can no longer see them.
        """
        with self._writing() as conn:
            if self.dialect == "postgresql":
                # Two workers replacing at once would each keep its own rows (a DELETE
                # does not see rows inserted after its snapshot): take turns.
                conn.execute(select(func.pg_advisory_xact_lock(REPLACE_REQUESTS_LOCK)))
            horizon = _retention_horizon(conn)
            current = REQUESTS.delete()
            if horizon is not None:
                current = current.where(REQUESTS.c.received_at >= horizon)
            conn.execute(current)
            rows = [
                _request_row(request, evaluated_at)
                for request in requests
                if horizon is None or request.received_at >= horizon
            ]
            if rows:
                conn.execute(REQUESTS.insert(), rows)

    def requests(
        self, received_since: datetime | None = None, received_until: datetime | None = None
    ) -> list[Request]:
        """The stored requests received in [received_since, received_until), oldest first."""
        query = select(*_REQUEST_COLUMNS).order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        if received_since is not None:
            query = query.where(REQUESTS.c.received_at >= received_since)
        if received_until is not None:
            query = query.where(REQUESTS.c.received_at < received_until)
        with self._reading() as conn:
            return _requests(conn, query)

    def orphaned_requests(self, received_by: datetime) -> list[Request]:
        """Stored requests whose opening message is no longer stored (a forgotten address's
        conversations carry tokens instead; mail past retention is deleted), received by
        `received_by`: evaluating the stored mail again cannot give them back."""
        opening = select(MESSAGES.c.id).where(MESSAGES.c.key == REQUESTS.c.opened_by)
        query = (
            select(*_REQUEST_COLUMNS)
            .where(~exists(opening), REQUESTS.c.received_at <= received_by)
            .order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        )
        with self._reading() as conn:
            return _requests(conn, query)

    # ------------------------------------------------------------ incremental evaluation

    def dirty_keys(self) -> dict[str, int]:
        """Messages whose thread must be evaluated again, with their change counters,
        earliest arrival first."""
        query = (
            select(MESSAGES.c.key, MESSAGES.c.dirty)
            # a literal, as the partial index says it: SQLite matches the text
            .where(MESSAGES.c.dirty > literal_column("0"))
            .order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        )
        with self._reading() as conn:
            return {row.key: row.dirty for row in conn.execute(query)}

    def mark_all_dirty(self) -> None:
        """Everything is to be evaluated again (the policy changed); people are found anew."""
        with self._writing() as conn:
            conn.execute(update(MESSAGES).values(dirty=MESSAGES.c.dirty + 1))
            conn.execute(delete(PEOPLE))

    def add_people(self, people: set[str]) -> None:
        with self._writing() as conn:
            for chunk in _chunks(sorted(people)):
                conn.execute(
                    self._insert(PEOPLE).on_conflict_do_nothing(),
                    [{"address": address} for address in chunk],
                )

    def all_keys(self) -> set[str]:
        with self._reading() as conn:
            return set(conn.scalars(select(MESSAGES.c.key)))

    def related_keys(self, keys: set[str], subjects: set[str], window: timedelta) -> set[str]:
        """Messages one link away from `keys`: the same stored thread, a reference either
        way, the same conversation key, or one of the normalised `subjects` arriving
        within `window` of them (the subject fallback reaches no further)."""
        found: set[str] = set()
        with self._reading() as conn:
            rows = []
            for chunk in _chunks(sorted(keys)):
                rows += conn.execute(
                    select(
                        MESSAGES.c.id,
                        MESSAGES.c.thread_id,
                        MESSAGES.c.thread_index,
                        MESSAGES.c.in_reply_to,
                        MESSAGES.c.references,
                        MESSAGES.c.arrived_at,
                    ).where(MESSAGES.c.key.in_(chunk))
                ).all()
            ids = [row.id for row in rows]
            threads = sorted({row.thread_id for row in rows if row.thread_id})
            indexes = sorted({row.thread_index for row in rows if row.thread_index})
            referenced = sorted({r for row in rows for r in (*row.in_reply_to, *row.references)})
            for column, values in (
                (MESSAGES.c.thread_id, threads),
                (MESSAGES.c.thread_index, indexes),
                (MESSAGES.c.key, referenced),
            ):
                for chunk in _chunks(values):
                    found.update(conn.scalars(select(MESSAGES.c.key).where(column.in_(chunk))))
            if subjects and rows:
                since = min(row.arrived_at for row in rows) - window
                until = max(row.arrived_at for row in rows) + window
                for chunk in _chunks(sorted(subjects)):
                    query = select(MESSAGES.c.key).where(
                        MESSAGES.c.norm_subject.in_(chunk),
                        MESSAGES.c.arrived_at.between(since, until),
                    )
                    found.update(conn.scalars(query))
            for chunk in _chunks(sorted(keys)):
                referencing = select(REFERENCES.c.message_id).where(REFERENCES.c.ref_key.in_(chunk))
                found.update(
                    conn.scalars(select(MESSAGES.c.key).where(MESSAGES.c.id.in_(referencing)))
                )
            for chunk in _chunks(ids):
                thrids = select(COPIES.c.gm_thrid).where(
                    COPIES.c.message_id.in_(chunk), COPIES.c.gm_thrid.is_not(None)
                )
                same = select(COPIES.c.message_id).where(COPIES.c.gm_thrid.in_(thrids))
                found.update(conn.scalars(select(MESSAGES.c.key).where(MESSAGES.c.id.in_(same))))
        return found

    def subjects_of(self, keys: set[str]) -> set[str]:
        with self._reading() as conn:
            subjects: set[str] = set()
            for chunk in _chunks(sorted(keys)):
                subjects.update(
                    conn.scalars(select(MESSAGES.c.norm_subject).where(MESSAGES.c.key.in_(chunk)))
                )
        return subjects

    def messages_by_keys(self, keys: Iterable[str], rule_headers: bool = True) -> list[Message]:
        """These stored messages with all their copies (unknown keys are left out); without
        `rule_headers`, lighter copies that can be threaded but not classified."""
        columns = [c for c in MESSAGES.c if c.name != "raw_headers"]
        if not rule_headers:
            columns = [c for c in columns if c.name != "headers"]
        result: list[Message] = []
        with self._reading() as conn:
            for chunk in _chunks(sorted(set(keys))):
                rows = (
                    conn.execute(select(*columns).where(MESSAGES.c.key.in_(chunk))).mappings().all()
                )
                copies_of: dict[int, list[Copy]] = defaultdict(list)
                query = (
                    select(COPIES)
                    .where(COPIES.c.message_id.in_([row["id"] for row in rows]))
                    .order_by(COPIES.c.message_id, COPIES.c.id)
                )
                for copy in conn.execute(query).mappings():
                    copies_of[copy["message_id"]].append(_copy(copy))
                result += [_message(row, copies_of[row["id"]]) for row in rows]
        return result

    def people(self) -> set[str]:
        with self._reading() as conn:
            return set(conn.scalars(select(PEOPLE.c.address)))

    def out_of_office_replies(self) -> list[tuple[str, datetime, str, datetime | None]]:
        """(responder, sent at, Message-ID, when they next sent human mail or None) of every
        staff out-of-office auto-reply, in one query."""
        later = MESSAGES.alias("later")
        back = (
            select(func.min(later.c.at))
            .where(
                later.c.responder == MESSAGES.c.responder,
                # a literal, as in the partial index's condition: PostgreSQL cannot prove a
                # bound parameter matches it in a generic plan
                later.c.role == literal_column("'staff'"),
                later.c.automated.is_(None),
                later.c.at > MESSAGES.c.at,
            )
            .scalar_subquery()
        )
        query = select(MESSAGES.c.responder, MESSAGES.c.at, MESSAGES.c.key, back).where(
            MESSAGES.c.out_of_office.is_(True), MESSAGES.c.at.is_not(None)
        )
        with self._reading() as conn:
            return [(row[0], row[1], row[2], row[3]) for row in conn.execute(query)]

    def save_classifications(self, derived: Sequence[dict[str, Any]]) -> None:
        """Each message's role, responder, time, automation rule and out-of-office flag."""
        columns = ("role", "responder", "at", "automated", "out_of_office")
        with self._writing() as conn:
            for start in range(0, len(derived), CHUNK):
                conn.execute(
                    update(MESSAGES)
                    .where(MESSAGES.c.key == bindparam("message_key"))
                    .values(**{c: bindparam(f"new_{c}") for c in columns}),
                    [
                        {"message_key": row["key"], **{f"new_{c}": row[c] for c in columns}}
                        for row in derived[start : start + CHUNK]
                    ],
                )

    def thread_ids_of(self, keys: set[str]) -> set[str]:
        found: set[str] = set()
        with self._reading() as conn:
            for chunk in _chunks(sorted(keys)):
                # no `thread_id IS NOT NULL` in SQL: on a first evaluation PostgreSQL's
                # statistics say it is rare and scan the thread index, a growing part of the
                # table for every 500 keys (22 s of 150 at 100,000 messages)
                query = select(MESSAGES.c.thread_id).where(MESSAGES.c.key.in_(chunk))
                found.update(thread for thread in conn.scalars(query) if thread is not None)
        return found

    def save_evaluation(
        self,
        thread_of: dict[str, str | None],
        changes_seen: dict[str, int],
        people: set[str],
        requests: Sequence[Request],
        threads: set[str],
        evaluated_at: datetime,
        state: dict[str, str],
    ) -> None:
        """Store one evaluation of a closed set of threads, in one transaction: each
        message's thread (no longer dirty, unless it changed again since `changes_seen`
        was read), the people seen sending, and the requests of `threads` (every old and
        new thread id involved) swapped for `requests`.
        """
        with self._writing() as conn:
            horizon = _retention_horizon(conn)
            keys = sorted(thread_of)
            for start in range(0, len(keys), CHUNK):
                conn.execute(
                    update(MESSAGES)
                    .where(MESSAGES.c.key == bindparam("message_key"))
                    .values(
                        # a change stored while this evaluation ran stays to be evaluated
                        dirty=case(
                            (MESSAGES.c.dirty == bindparam("seen"), 0), else_=MESSAGES.c.dirty
                        ),
                        thread_id=bindparam("new_thread"),
                    ),
                    [
                        {
                            "message_key": key,
                            "new_thread": thread_of[key],
                            "seen": changes_seen.get(key, 0),
                        }
                        for key in keys[start : start + CHUNK]
                    ],
                )
            for chunk in _chunks(sorted(people)):
                conn.execute(
                    self._insert(PEOPLE).on_conflict_do_nothing(),
                    [{"address": address} for address in chunk],
                )
            for chunk in _chunks(sorted(threads)):
                stale = REQUESTS.delete().where(REQUESTS.c.thread.in_(chunk))
                if horizon is not None:
                    stale = stale.where(REQUESTS.c.received_at >= horizon)
                conn.execute(stale)
            rows = [
                _request_row(request, evaluated_at)
                for request in requests
                if horizon is None or request.received_at >= horizon
            ]
            for start in range(0, len(rows), CHUNK):
                conn.execute(REQUESTS.insert(), rows[start : start + CHUNK])
            for name, value in state.items():
                conn.execute(
                    self._insert(STATE)
                    .values(name=name, value=value)
                    .on_conflict_do_update(index_elements=["name"], set_={"value": value})
                )

    def state(self, name: str) -> str | None:
        with self._reading() as conn:
            return conn.scalar(select(STATE.c.value).where(STATE.c.name == name))

    def waiting_requests(self) -> list[Request]:
        """Unanswered, unwaived requests that no later mail closed: open or overdue."""
        query = (
            select(*_REQUEST_COLUMNS)
            .where(
                REQUESTS.c.answered_at.is_(None),
                REQUESTS.c.status != "waived",
                REQUESTS.c.closed_at.is_(None),
            )
            .order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        )
        with self._reading() as conn:
            return _requests(conn, query)

    def _mark_dirty(self, conn: Connection, message_ids: set[int]) -> None:
        for chunk in _chunks(sorted(message_ids)):
            conn.execute(
                update(MESSAGES).where(MESSAGES.c.id.in_(chunk)).values(dirty=MESSAGES.c.dirty + 1)
            )

    def _add_references(self, conn: Connection, messages: dict[int, Message]) -> None:
        rows = [
            {"message_id": row_id, "ref_key": ref}
            for row_id, message in messages.items()
            for ref in sorted(set(message.in_reply_to) | set(message.references))
        ]
        for start in range(0, len(rows), CHUNK):
            conn.execute(REFERENCES.insert(), rows[start : start + CHUNK])

    # ------------------------------------------------------------ claim, then act

    def claim(self, kind: str, key: str, recipient: str, now: datetime) -> bool:
        """True only for the one caller that gets to send this (kind, key, recipient).

        A claim released by a temporary failure can be taken again (by exactly one
        caller: the conditional update re-checks `released` under the row lock).
        A claim whose sender crashed before mark_sent/mark_failed stays taken: the
        email is sent at most once, never twice.
        """
        this = _claim_filter(kind, key, recipient)
        with self._writing() as conn:
            first = self._insert(CLAIMS).values(
                kind=kind, key=key, recipient=recipient, claimed_at=now, attempts=1
            )
            if _inserted(conn, first):
                return True
            retaken = conn.execute(
                update(CLAIMS)
                .where(*this, CLAIMS.c.released.is_(True))
                .values(released=False, claimed_at=now, attempts=CLAIMS.c.attempts + 1)
            ).rowcount
            return retaken == 1

    def mark_sent(self, kind: str, key: str, recipient: str, now: datetime) -> None:
        self._update_claim(kind, key, recipient, sent_at=now, error=None, released=False)

    def mark_failed(
        self, kind: str, key: str, recipient: str, error: str, permanent: bool, now: datetime
    ) -> None:
        """A temporary failure releases the claim for a later retry; a permanent one keeps it."""
        self._update_claim(kind, key, recipient, error=error, failed_at=now, released=not permanent)

    def claims(self, kind: str) -> list[Claim]:
        query = (
            select(CLAIMS).where(CLAIMS.c.kind == kind).order_by(CLAIMS.c.claimed_at, CLAIMS.c.id)
        )
        with self._reading() as conn:
            return [
                Claim(
                    kind=row["kind"],
                    key=row["key"],
                    recipient=row["recipient"],
                    claimed_at=row["claimed_at"],
                    sent_at=row["sent_at"],
                    attempts=row["attempts"],
                    error=row["error"],
                    failed_at=row["failed_at"],
                    released=row["released"],
                )
                for row in conn.execute(query).mappings()
            ]

    # ------------------------------------------------------------ health and workers

    def record_sync(
        self,
        mailbox: str,
        folder: str | None,
        ok: bool,
        error: str | None,
        at: datetime,
        fetched: int = 0,
    ) -> None:
        where = (SYNC_STATES.c.mailbox == mailbox, SYNC_STATES.c.folder == (folder or ""))
        if ok:
            changes: dict[str, Any] = {
                "last_attempt_at": at,
                "last_ok_at": at,
                "failures": 0,
                "fetched": fetched,
            }
        else:
            changes = {
                "last_attempt_at": at,
                "last_error": error,
                "last_error_at": at,
                "failures": SYNC_STATES.c.failures + 1,
            }
        with self._writing() as conn:
            conn.execute(
                self._insert(SYNC_STATES)
                .on_conflict_do_nothing()
                .values(mailbox=mailbox, folder=folder or "", last_attempt_at=at)
            )
            conn.execute(update(SYNC_STATES).where(*where).values(changes))

    def sync_states(self) -> list[SyncState]:
        query = select(SYNC_STATES).order_by(SYNC_STATES.c.mailbox, SYNC_STATES.c.folder)
        with self._reading() as conn:
            return [
                SyncState(
                    mailbox=row["mailbox"],
                    folder=row["folder"] or None,
                    last_ok_at=row["last_ok_at"],
                    last_error=row["last_error"],
                    failures=row["failures"],
                    last_attempt_at=row["last_attempt_at"],
                    last_error_at=row["last_error_at"],
                    fetched=row["fetched"],
                )
                for row in conn.execute(query).mappings()
            ]

    def acquire_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the named lease: True while `owner` holds it until now + ttl."""
        with self._writing() as conn:
            if _inserted(
                conn, self._insert(LEASES).values(name=name, owner=owner, expires_at=now + ttl)
            ):
                return True
            return (
                conn.execute(
                    update(LEASES)
                    .where(
                        LEASES.c.name == name,
                        (LEASES.c.owner == owner) | (LEASES.c.expires_at <= now),
                    )
                    .values(owner=owner, expires_at=now + ttl)
                ).rowcount
                == 1
            )

    def leases(self, now: datetime) -> dict[str, str]:
        """The leases held at `now`: name -> owner (expired ones are free, so not listed)."""
        query = select(LEASES.c.name, LEASES.c.owner).where(LEASES.c.expires_at > now)
        with self._reading() as conn:
            return {row.name: row.owner for row in conn.execute(query)}

    @contextmanager
    def turn(self, name: str, wait: timedelta) -> Iterator[bool]:
        """Hold the named lock across processes while the block runs; False when another
        holder kept it for `wait`.  The lock dies with its holder (a PostgreSQL session
        advisory lock, a file lock beside an SQLite database), so a crash frees it at once."""
        deadline = time.monotonic() + wait.total_seconds()
        with self._turn_lock(name) as try_lock:
            while not try_lock():
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.1)
            yield True

    @contextmanager
    def _turn_lock(self, name: str) -> Iterator[Callable[[], bool]]:
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
            with self.engine.connect() as conn:
                held = False

                def try_lock() -> bool:
                    nonlocal held
                    held = bool(conn.scalar(select(func.pg_try_advisory_lock(key))))
                    conn.commit()
                    return held

                try:
                    yield try_lock
                finally:
                    if held:
                        conn.scalar(select(func.pg_advisory_unlock(key)))
                        conn.commit()
            return
        path = f"{self.url.database}.{name}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def try_lock() -> bool:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            yield try_lock
        finally:
            os.close(descriptor)  # releases the lock

    def release_lease(self, name: str, owner: str) -> None:
        """Give a lease back at shutdown, so another worker need not wait for it to expire."""
        with self._writing() as conn:
            conn.execute(delete(LEASES).where(LEASES.c.name == name, LEASES.c.owner == owner))

    # ------------------------------------------------------------ internals

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has on_conflict_do_nothing/do_update."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _save_checkpoint(self, conn: Connection, checkpoint: Checkpoint) -> None:
        position = {
            "uidvalidity": checkpoint.uidvalidity,
            "last_uid": checkpoint.last_uid,
            "uidnext": checkpoint.uidnext,
            "highestmodseq": checkpoint.highestmodseq,
        }
        conn.execute(
            self._insert(CHECKPOINTS)
            .values(mailbox=checkpoint.mailbox, folder=checkpoint.folder, **position)
            .on_conflict_do_update(index_elements=["mailbox", "folder"], set_=position)
        )

    def _upsert_messages(
        self, conn: Connection, batch: Sequence[StoredMessage]
    ) -> tuple[dict[str, int], int]:
        """Insert the unknown messages; return every key's row id and how many were new."""
        stored_at = datetime.now(UTC)
        first: dict[str, StoredMessage] = {}
        arrival: dict[str, datetime] = {}
        for item in batch:
            key = item.message.key
            first.setdefault(key, item)
            arrived = _arrival(item.message, stored_at)
            arrival[key] = min(arrival.get(key, arrived), arrived)

        known = self._message_ids(conn, first)
        missing = [_message_row(first[key], arrival[key]) for key in first if key not in known]
        ids = {key: row_id for key, (row_id, _) in known.items()}
        if missing:
            returning = (
                self._insert(MESSAGES)
                .on_conflict_do_nothing()
                .returning(MESSAGES.c.key, MESSAGES.c.id)
            )
            inserted = {key: row_id for key, row_id in conn.execute(returning, missing)}
            ids.update(inserted)
            self._add_references(
                conn, {row_id: first[key].message for key, row_id in inserted.items()}
            )
        new = len(ids) - len(known)
        if len(ids) < len(first):  # another process stored some of them meanwhile
            lost = {
                key: row for key, row in self._message_ids(conn, first).items() if key not in ids
            }
            ids.update({key: row_id for key, (row_id, _) in lost.items()})
            known.update(lost)

        earlier = [
            {"row_id": row_id, "arrived": arrival[key]}
            for key, (row_id, arrived_at) in known.items()
            if arrival[key] < arrived_at
        ]
        if earlier:
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == bindparam("row_id"))
                .values(arrived_at=bindparam("arrived")),
                earlier,
            )
        return ids, new

    def _message_ids(
        self, conn: Connection, keys: Iterable[str]
    ) -> dict[str, tuple[int, datetime]]:
        found: dict[str, tuple[int, datetime]] = {}
        for chunk in _chunks(list(keys)):
            query = select(MESSAGES.c.key, MESSAGES.c.id, MESSAGES.c.arrived_at).where(
                MESSAGES.c.key.in_(chunk)
            )
            found.update({key: (row_id, arrived) for key, row_id, arrived in conn.execute(query)})
        return found

    def _add_copies(
        self, conn: Connection, batch: Sequence[StoredMessage], ids: dict[str, int]
    ) -> None:
        present = self._present_uids(conn, batch)
        orphans = self._orphan_copies(conn, set(ids.values()))
        rebind: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for item in batch:
            copy = item.message.copies[0]
            message_id = ids[item.message.key]
            if item.uid is not None:
                where = (copy.mailbox, copy.folder, item.uidvalidity, item.uid)
                if where in present:
                    continue
                present.add(where)
                spare = orphans.get((message_id, copy.mailbox, copy.folder))
                if spare:
                    rebind.append(
                        {"row_id": spare.pop(), "uidvalidity": item.uidvalidity, "uid": item.uid}
                    )
                    continue
            rows.append(_copy_row(item, message_id))
        if rebind:
            conn.execute(
                update(COPIES)
                .where(COPIES.c.id == bindparam("row_id"))
                .values(uidvalidity=bindparam("uidvalidity"), uid=bindparam("uid")),
                rebind,
            )
        if rows:
            conn.execute(self._insert(COPIES).on_conflict_do_nothing(), rows)

    def _present_uids(
        self, conn: Connection, batch: Sequence[StoredMessage]
    ) -> set[tuple[str, str, int | None, int]]:
        """The batch's IMAP locations that are already stored."""
        wanted: dict[tuple[str, str, int | None], list[int]] = defaultdict(list)
        for item in batch:
            if item.uid is not None:
                copy = item.message.copies[0]
                wanted[(copy.mailbox, copy.folder, item.uidvalidity)].append(item.uid)
        present: set[tuple[str, str, int | None, int]] = set()
        for (mailbox, folder, uidvalidity), uids in wanted.items():
            for chunk in _chunks(uids):
                query = select(COPIES.c.uid).where(
                    COPIES.c.mailbox == mailbox,
                    COPIES.c.folder == folder,
                    COPIES.c.uidvalidity == uidvalidity,
                    COPIES.c.uid.in_(chunk),
                )
                present.update((mailbox, folder, uidvalidity, uid) for uid in conn.scalars(query))
        return present

    def _orphan_copies(
        self, conn: Connection, message_ids: set[int]
    ) -> dict[tuple[int, str, str], list[int]]:
        """IMAP copies of these messages whose UID was forgotten, by (message, mailbox, folder)."""
        orphans: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        for chunk in _chunks(sorted(message_ids)):
            query = select(
                COPIES.c.id, COPIES.c.message_id, COPIES.c.mailbox, COPIES.c.folder
            ).where(
                COPIES.c.message_id.in_(chunk),
                COPIES.c.uid.is_(None),
                COPIES.c.location.is_(None),
            )
            for row_id, message_id, mailbox, folder in conn.execute(query):
                orphans[(message_id, mailbox, folder)].append(row_id)
        return orphans

    def _update_claim(self, kind: str, key: str, recipient: str, **changes: Any) -> None:
        with self._writing() as conn:
            changed = conn.execute(
                update(CLAIMS).where(*_claim_filter(kind, key, recipient)).values(changes)
            ).rowcount
        if not changed:
            raise LookupError(f"no {kind} claim {key!r} for {recipient}")


# ---------------------------------------------------------------- engines


def _sqlite_engine(url: URL) -> Engine:
    _create_private_file(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _postgres_engine(url: URL) -> Engine:
    return create_engine(url, pool_pre_ping=True)


def _create_private_file(url: URL) -> None:
    """Create a new SQLite file readable by its owner only: it holds staff mail headers."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_begin) instead of the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first: journal_mode may need to wait
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that reads, then writes, fails at once with SQLITE_BUSY
    # when another writer committed in between; IMMEDIATE takes the lock up front.
    immediate = conn.get_execution_options().get(WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


# ---------------------------------------------------------------- rows <-> dataclasses


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _arrival(message: Message, stored_at: datetime) -> datetime:
    copy = message.copies[0]
    for moment in (
        copy.internal_date,
        copy.envelope_time,
        message.received_time,
        message.date,
    ):
        if moment is not None:
            return moment
    return stored_at


def _message_row(item: StoredMessage, arrived_at: datetime) -> dict[str, Any]:
    message = item.message
    return {
        "key": message.key,
        "from_addr": message.from_addr,
        "from_name": message.from_name,
        "sender_addr": message.sender_addr,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "subject": message.subject,
        "date": message.date,
        "received_time": message.received_time,
        "in_reply_to": list(message.in_reply_to),
        "references": list(message.references),
        "thread_index": message.thread_index,
        "headers": [list(pair) for pair in message.headers],
        "courtesy": message.courtesy,
        "raw_headers": zlib.compress(item.raw_headers),
        "arrived_at": arrived_at,
        "norm_subject": normalise_subject(message.subject),
        "dirty": 0,  # add_messages counts the change, as for a new copy of a known message
    }


def _message(row: Any, copies: list[Copy]) -> Message:
    # Addresses repeat across thousands of messages: one string each keeps a first
    # evaluation of years of mail within memory.
    return Message(
        key=row["key"],
        from_addr=_shared(row["from_addr"]),
        from_name=row["from_name"],
        sender_addr=_shared(row["sender_addr"]),
        to=tuple(map(sys.intern, row["to"])),
        cc=tuple(map(sys.intern, row["cc"])),
        bcc=tuple(map(sys.intern, row["bcc"])),
        subject=row["subject"],
        date=row["date"],
        received_time=row["received_time"],
        in_reply_to=tuple(row["in_reply_to"]),
        references=tuple(row["references"]),
        thread_index=row["thread_index"],
        headers=tuple((name, value) for name, value in row.get("headers", ())),
        courtesy=row["courtesy"],
        copies=tuple(copies),
    )


def _shared(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def _copy_row(item: StoredMessage, message_id: int) -> dict[str, Any]:
    copy = item.message.copies[0]
    return {
        "message_id": message_id,
        "mailbox": copy.mailbox,
        "folder": copy.folder,
        "sent_folder": copy.sent_folder,
        "internal_date": copy.internal_date,
        "envelope_time": copy.envelope_time,
        "waive_keyword": copy.waive_keyword,
        "waive_folder": copy.waive_folder,
        "waive_seen_at": copy.waive_seen_at,
        "gm_thrid": copy.gm_thrid,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "location": None if item.uid is not None else item.location,
    }


def _copy(row: Any) -> Copy:
    return Copy(
        mailbox=sys.intern(row["mailbox"]),
        folder=sys.intern(row["folder"]),
        sent_folder=row["sent_folder"],
        internal_date=row["internal_date"],
        envelope_time=row["envelope_time"],
        waive_keyword=row["waive_keyword"],
        waive_folder=row["waive_folder"],
        waive_seen_at=row["waive_seen_at"],
        gm_thrid=row["gm_thrid"],
    )


def _request_row(request: Request, evaluated_at: datetime) -> dict[str, Any]:
    waiver = request.waiver
    return {
        "account": request.account,
        "thread": request.thread,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": request.received_at,
        "messages": list(request.messages),
        "tier": request.tier,
        "clock": request.clock.value,
        "target_seconds": request.target_seconds,
        "deadline": request.deadline,
        "responsible": list(request.responsible),
        "status": request.status.value,
        "answered_by": request.answered_by,
        "answered_at": request.answered_at,
        "responder": request.responder,
        "response_seconds": request.response_seconds,
        "elapsed_seconds": request.elapsed_seconds,
        "closed_at": request.closed_at,
        "waiver": None
        if waiver is None
        else {
            "message_key": waiver.message_key,
            "by": waiver.by,
            "seen_at": waiver.seen_at.astimezone(UTC).isoformat(),
            "reason": waiver.reason,
        },
        "notes": list(request.notes),
        "evaluated_at": evaluated_at,
    }


# A request's JSON columns are read as text and decoded by `_requests`, the texts that
# repeat across thousands of requests (`responsible`, `waiver`) once per read: PostgreSQL's
# driver decoded every value, half the time of reading a monthly digest's ~25,000 requests.
_REQUEST_COLUMNS = tuple(
    cast(column, Text).label(column.name) if isinstance(column.type, JSON) else column
    for column in REQUESTS.c
)


def _requests(conn: Connection, query: Any) -> list[Request]:
    """The requests `query` selects (`_REQUEST_COLUMNS`)."""
    repeated = lru_cache(maxsize=1024)(json.loads)  # the values are only read, never changed
    return [_request(row, repeated) for row in conn.execute(query).mappings()]


def _request(row: Any, repeated: Callable[[str], Any]) -> Request:
    waiver = repeated(row["waiver"]) if row["waiver"] is not None else None
    return Request(
        account=row["account"],
        thread=row["thread"],
        subject=row["subject"],
        opened_by=row["opened_by"],
        received_at=row["received_at"],
        messages=tuple(json.loads(row["messages"])),
        tier=row["tier"],
        clock=ClockKind(row["clock"]),
        target_seconds=row["target_seconds"],
        deadline=row["deadline"],
        responsible=tuple(repeated(row["responsible"])),
        status=Status(row["status"]),
        answered_by=row["answered_by"],
        answered_at=row["answered_at"],
        responder=row["responder"],
        response_seconds=row["response_seconds"],
        elapsed_seconds=row["elapsed_seconds"],
        closed_at=row["closed_at"],
        waiver=None
        if waiver is None
        else Waiver(
            message_key=waiver["message_key"],
            by=waiver["by"],
            seen_at=datetime.fromisoformat(waiver["seen_at"]),
            reason=waiver["reason"],
        ),
        notes=tuple(json.loads(row["notes"])),
    )


def _claim_filter(kind: str, key: str, recipient: str) -> tuple[Any, ...]:
    return (CLAIMS.c.kind == kind, CLAIMS.c.key == key, CLAIMS.c.recipient == recipient)


def _inserted(conn: Connection, insert: Any) -> bool:
    """Run a dialect INSERT that gives way to an existing row; True if it inserted.

    (RETURNING rather than rowcount: PostgreSQL's implicit RETURNING hides the rowcount.)
    """
    table = insert.table
    statement = insert.on_conflict_do_nothing().returning(table.c.id)
    return conn.execute(statement).first() is not None


def _retention_horizon(conn: Connection) -> datetime | None:
    return conn.scalar(select(func.max(RETENTION.c.cutoff)))


# ---------------------------------------------------------------- privacy


# Mail with no client is reduced only once it is this old: an account added to the
# configuration within that time still finds its correspondents' earlier mail whole.
UNRELATED_MAIL_GRACE = timedelta(days=30)
REDUCED_STATE = "reduced_before"  # mail that arrived before this was considered for reduction
REDUCED_RAW = zlib.compress(b"")  # a reduced message keeps no raw header block
FORGOTTEN = "(forgotten)"  # stands in for a forgotten address in a kept request
# Header values that name the recipient (unsubscribe links carry per-recipient tokens):
# a reduced message keeps the field, which is what the automation rules look at, not its value.
_RECIPIENT_HEADERS = ("list-unsubscribe", "x-unsubscribe")
_ADDRESS_COLUMNS = (
    MESSAGES.c.from_addr, MESSAGES.c.sender_addr, MESSAGES.c.to, MESSAGES.c.cc, MESSAGES.c.bcc,
)  # fmt: skip
_REDUCE_COLUMNS = (
    MESSAGES.c.id, MESSAGES.c.thread_id, MESSAGES.c.role, MESSAGES.c.dirty, MESSAGES.c.automated,
    MESSAGES.c.out_of_office, MESSAGES.c.headers, *_ADDRESS_COLUMNS,
)  # fmt: skip
_REDUCED_FIELDS = ("to", "cc", "bcc", "subject", "norm_subject", "headers", "raw_headers")


@dataclass(frozen=True)
class Forgotten:
    """What `forget_address` removed."""

    messages: int  # the address's own messages (sent or received)
    conversation_messages: int  # other messages of the same conversations
    requests: int  # requests kept for the figures but stripped of the address and subject
    claims: int  # nudges and digests addressed to it
    set_aside: int  # unreadable mail that named it


def _addresses_of(row: Any) -> set[str]:
    found = {row["from_addr"], row["sender_addr"], *row["to"], *row["cc"], *row["bcc"]}
    return {address for address in found if address}


def _mentions(address: str) -> Any:
    """A cheap SQL filter for messages that may name `address` (callers check exactly)."""
    quoted = json.dumps(address)  # as it appears inside a stored JSON list
    in_lists = [
        cast(column, String).contains(quoted, autoescape=True)
        for column in (MESSAGES.c.to, MESSAGES.c.cc, MESSAGES.c.bcc)
    ]
    return or_(MESSAGES.c.from_addr == address, MESSAGES.c.sender_addr == address, *in_lists)


def _reduced(row: Any) -> dict[str, Any]:
    """The new values of a reduced message: no recipients, subject or raw header block;
    the rule headers that name nobody; the automation verdict kept as Auto-Submitted, so
    that classifying the message again gives the same answer without its subject."""
    headers = []
    for name, value in row["headers"]:
        if name == "auto-submitted" and row["automated"]:
            continue
        if name == "return-path" and value.replace(" ", "") != "<>":
            continue  # a bounce address may name the recipient (VERP)
        headers.append([name, "" if name in _RECIPIENT_HEADERS else value])
    if row["automated"]:
        headers.append(
            ["auto-submitted", "auto-replied" if row["out_of_office"] else "auto-generated"]
        )
    return {
        "row_id": row["id"],
        "new_to": [],
        "new_cc": [],
        "new_bcc": [],
        "new_subject": "",
        "new_norm_subject": "",
        "new_headers": headers,
        "new_raw_headers": REDUCED_RAW,
    }


def _quarantine_naming(conn: Connection, address: str) -> list[Any]:
    needle = address.encode()
    query = select(QUARANTINE).order_by(QUARANTINE.c.seen_at, QUARANTINE.c.id)
    return [row for row in conn.execute(query) if row.raw and needle in row.raw.lower()]


def _token() -> str:
    """A message id that stands in for a forgotten one: unique, and names nobody."""
    return f"<forgotten.{uuid.uuid4().hex}@mailwatch.invalid>"


def _forget_in_requests(conn: Connection, address: str, tokens: dict[str, str]) -> int:
    """Strip the forgotten address and conversations from the stored requests; returns how
    many requests changed."""
    changed = 0
    for row in conn.execute(select(REQUESTS)).mappings().all():
        in_conversation = row["thread"] in tokens or any(k in tokens for k in row["messages"])
        named = row["responder"] == address or address in row["responsible"]
        if not (in_conversation or named):
            continue
        values: dict[str, Any] = {
            "responsible": [a for a in row["responsible"] if a != address],
            "responder": FORGOTTEN if row["responder"] == address else row["responder"],
        }
        if in_conversation:
            values.update(_anonymous_conversation(row, address, tokens))
        conn.execute(update(REQUESTS).where(REQUESTS.c.id == row["id"]).values(values))
        changed += 1
    return changed


def _anonymous_conversation(row: Any, address: str, tokens: dict[str, str]) -> dict[str, Any]:
    def swap(key: str | None) -> str | None:
        return tokens.get(key, key) if key else key

    def scrub(text: str) -> str:
        for key, token in tokens.items():
            text = text.replace(key, token)
        return text

    waiver = row["waiver"]
    if waiver is not None:
        by = FORGOTTEN if address in waiver["by"].lower() else waiver["by"]
        waiver = {**waiver, "message_key": swap(waiver["message_key"]), "by": by}
    return {
        "subject": "",
        "thread": tokens.get(row["thread"]) or _token(),
        "opened_by": swap(row["opened_by"]),
        "messages": [swap(key) for key in row["messages"]],
        "answered_by": swap(row["answered_by"]),
        "waiver": waiver,
        "notes": [scrub(note) for note in row["notes"] if address not in note.lower()],
    }
