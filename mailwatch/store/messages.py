"""Stored mail: messages and their copies, IMAP locations, waive flags and waivers, and
the mail set aside because it could not be handled."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)

from mailwatch.core.conversations import normalise_subject
from mailwatch.core.model import Checkpoint, Message, Verdict, Waiver
from mailwatch.core.times import copy_arrival
from mailwatch.store.db import (
    Database,
    chunks,
    dialect_insert,
    execute_many,
    reading,
    writing,
)
from mailwatch.store.rows import (
    copy_columns,
    json_text,
    message_columns,
    messages_with_copies,
    threading_copy,
    verdict_columns,
    written_insert,
    written_time,
)
from mailwatch.store.tables import CHECKPOINTS, COPIES, MESSAGES, QUARANTINE, REFERENCES, WAIVERS

QUARANTINE_RAW_LIMIT = 1024 * 1024
_THREADING_LISTS = ("to", "cc", "bcc", "in_reply_to", "references")


@dataclass(frozen=True)
class StoredMessage:
    """One fetched or imported copy, ready to persist."""

    message: Message  # core model, with exactly ONE Copy in .copies
    raw_headers: bytes  # the raw header block as fetched (kept so rules can be re-run)
    uidvalidity: int | None = None  # IMAP location of this copy; None for imported files
    uid: int | None = None
    location: str = ""  # human-readable origin ("alice/INBOX uid 42", "/path/to/file.mbox#17")
    verdict: Verdict | None = None  # its classification from this one copy, when found


@dataclass(frozen=True, slots=True)
class Loaded:
    """A stored message as read back, with what the last evaluation stored about it."""

    row_id: int
    message: Message
    automated: str | None  # the stored automation verdict (None: human, or not classified)
    thread_id: str | None
    dirty: int  # its change counter: 0 when evaluated


@dataclass(frozen=True)
class QuarantinedMessage:
    location: str
    error: str
    seen_at: datetime


class MessageStore(Database):
    # ------------------------------------------------------------ messages

    def add_messages(
        self,
        batch: Sequence[StoredMessage],
        checkpoint: Checkpoint | None = None,
        policy: str | None = None,
    ) -> int:
        """Store a batch of copies and, in the same transaction, the checkpoint after it;
        a new message stored from one copy keeps its verdict, found under the policy whose
        fingerprint is `policy`.

        Returns the number of new logical messages.
        """
        for item in batch:
            if len(item.message.copies) != 1:
                raise ValueError(f"{item.message.key}: a stored copy needs exactly one Copy")
            if item.uid is None and not item.location:
                raise ValueError(f"{item.message.key}: a copy needs a uid or a location")
        new: set[int] = set()
        with writing(self.engine) as conn:
            if batch:
                ids, new = _upsert_messages(conn, batch, policy)
                known = set(ids.values()) - new
                _add_copies(conn, batch, ids, known)
                for chunk in chunks(sorted(known)):
                    _copy_added(conn, chunk)
            if checkpoint is not None:
                _save_checkpoint(conn, checkpoint)
        return len(new)

    def load_messages(self, arrived_before: datetime | None = None) -> list[Message]:
        """Every stored message with all its copies, earliest arrival first."""
        arrived = () if arrived_before is None else (MESSAGES.c.arrived_at < arrived_before,)
        messages = (
            select(*message_columns())
            .where(*arrived)
            .order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        )
        with reading(self.engine) as conn:
            # messages first: a copy stored in between belongs to no listed message, or to
            # one that exists either way (PostgreSQL reads each statement's own snapshot)
            rows = conn.execute(messages).mappings().all()
            copies = select(*copy_columns()).select_from(COPIES.join(MESSAGES)).where(*arrived)
            return messages_with_copies(conn, rows, copies)

    def messages_by_keys(self, keys: Iterable[str], rule_headers: bool = True) -> list[Message]:
        """These stored messages with all their copies (unknown keys are left out); without
        `rule_headers`, lighter copies that can be threaded but not classified."""
        rows = self.loaded_by_keys(keys, rule_headers)
        return [row.message for row in rows]

    def loaded_by_keys(self, keys: Iterable[str], rule_headers: bool = True) -> list[Loaded]:
        """These stored messages with their stored evaluation (unknown keys are left out)."""
        return self._loaded_where(MESSAGES.c.key, sorted(set(keys)), rule_headers)

    def loaded_by_ids(self, ids: Sequence[int], rule_headers: bool = True) -> list[Loaded]:
        """These stored messages (by row id) with their stored evaluation."""
        return self._loaded_where(MESSAGES.c.id, ids, rule_headers)

    def _loaded_where(
        self, column: ColumnElement[Any], values: Sequence[Any], rule_headers: bool
    ) -> list[Loaded]:
        result: list[Loaded] = []
        with reading(self.engine) as conn:
            for chunk in chunks(values):
                query = select(*message_columns(rule_headers)).where(column.in_(chunk))
                result += _loaded(conn, conn.execute(query).mappings().all())
        return result

    def loaded_between(self, after: int, upto: int, except_classified_under: str) -> list[Loaded]:
        """The stored messages with a row id in (after, upto] not classified under the policy
        `except_classified_under` (a fingerprint), with their stored evaluation, in order of row
        id (a page read by a range of ids: no list of keys is held)."""
        query = (
            select(*message_columns())
            .where(
                MESSAGES.c.id > after,
                MESSAGES.c.id <= upto,
                or_(
                    MESSAGES.c.classified_under.is_(None),
                    MESSAGES.c.classified_under != except_classified_under,
                ),
            )
            .order_by(MESSAGES.c.id)
        )
        with reading(self.engine) as conn:
            return _loaded(conn, conn.execute(query).mappings().all())

    def threading_copies(self, ids: Sequence[int]) -> list[tuple[int, Message, datetime | None]]:
        """(row id, copy, classified time) of these stored messages, each copy holding only
        what the subject fallback reads: key, addresses, subject and references (no
        copies, no headers: building whole messages was most of threading years of mail)."""
        columns = [MESSAGES.c[name] for name in ("id", "key", "from_addr", "subject", "at")]
        listed = [cast(MESSAGES.c[name], Text).label(name) for name in _THREADING_LISTS]
        found = []
        with reading(self.engine) as conn:
            for chunk in chunks(ids):
                query = select(*columns, *listed).where(MESSAGES.c.id.in_(chunk))
                found += [(row.id, threading_copy(row), row.at) for row in conn.execute(query)]
        return found

    def last_row_id(self) -> int:
        """The largest row id of a stored message (0 for none)."""
        with reading(self.engine) as conn:
            return conn.scalar(select(func.max(MESSAGES.c.id))) or 0

    def messages_with_subject(
        self, norm_subject: str, arrived_by: datetime
    ) -> list[tuple[str, str | None, datetime]]:
        """(key, thread, arrival) of the messages with this normalised subject that had
        arrived by `arrived_by`, earliest first."""
        query = (
            select(MESSAGES.c.key, MESSAGES.c.thread_id, MESSAGES.c.arrived_at)
            .where(MESSAGES.c.norm_subject == norm_subject, MESSAGES.c.arrived_at <= arrived_by)
            .order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        )
        with reading(self.engine) as conn:
            return [(row.key, row.thread_id, row.arrived_at) for row in conn.execute(query)]

    # ------------------------------------------------------------ IMAP locations

    def checkpoint(self, mailbox: str, folder: str) -> Checkpoint | None:
        query = select(CHECKPOINTS).where(
            CHECKPOINTS.c.mailbox == mailbox, CHECKPOINTS.c.folder == folder
        )
        with reading(self.engine) as conn:
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

    def forget_locations(self, mailbox: str, folder: str) -> int:
        """After a UIDVALIDITY change: the folder's UIDs mean nothing any more.

        The copy rows stay (with their INTERNALDATE and waive flags) but lose their
        UID; a copy fetched again under the new UIDVALIDITY is matched back to its
        row by Message-ID instead of becoming a second copy.  Returns the rows changed.
        """
        with writing(self.engine) as conn:
            return conn.execute(
                update(COPIES)
                .where(
                    COPIES.c.mailbox == mailbox,
                    COPIES.c.folder == folder,
                    COPIES.c.uid.is_not(None),
                )
                .values(uid=None, uidvalidity=None)
            ).rowcount

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
        here = (
            COPIES.c.mailbox == mailbox,
            COPIES.c.folder == folder,
            COPIES.c.uidvalidity == uidvalidity,
        )
        flagged = sorted(flagged_uids & checked_uids)
        unflagged = sorted(checked_uids - flagged_uids)
        with writing(self.engine) as conn:
            changed = sum(
                conn.execute(
                    _waive_keyword(True, seen_at).where(*here, COPIES.c.uid.in_(uids))
                ).rowcount
                for uids in chunks(flagged)
            )
            changed += sum(
                conn.execute(
                    _waive_keyword(False, seen_at).where(*here, COPIES.c.uid.in_(uids))
                ).rowcount
                for uids in chunks(unflagged)
            )
            if changed:
                for uids in chunks(sorted(checked_uids)):
                    touched = select(COPIES.c.message_id).where(*here, COPIES.c.uid.in_(uids))
                    _mark_dirty(conn, MESSAGES.c.id.in_(touched))
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
        with writing(self.engine) as conn:
            conn.execute(dialect_insert(conn, QUARANTINE).on_conflict_do_nothing().values(values))

    def quarantined(self) -> list[QuarantinedMessage]:
        query = select(QUARANTINE.c.location, QUARANTINE.c.error, QUARANTINE.c.seen_at).order_by(
            QUARANTINE.c.seen_at, QUARANTINE.c.id
        )
        with reading(self.engine) as conn:
            return [QuarantinedMessage(*row) for row in conn.execute(query)]

    def add_waiver(self, waiver: Waiver) -> None:
        """Record a waiver; the first one for a message wins."""
        with writing(self.engine) as conn:
            conn.execute(
                dialect_insert(conn, WAIVERS)
                .on_conflict_do_nothing()
                .values(
                    message_key=waiver.message_key,
                    made_by=waiver.by,
                    seen_at=waiver.seen_at,
                    reason=waiver.reason,
                )
            )
            _mark_dirty(conn, MESSAGES.c.key == waiver.message_key)

    def remove_waivers(self, keys: set[str]) -> int:
        """Take back the command waivers of these messages (`unwaive`); how many there were."""
        with writing(self.engine) as conn:
            removed = conn.execute(delete(WAIVERS).where(WAIVERS.c.message_key.in_(keys)))
            _mark_dirty(conn, MESSAGES.c.key.in_(keys))
        return removed.rowcount

    def waivers(self) -> list[Waiver]:
        query = select(WAIVERS).order_by(WAIVERS.c.seen_at, WAIVERS.c.id)
        with reading(self.engine) as conn:
            return [
                Waiver(row["message_key"], row["made_by"], row["seen_at"], row["reason"])
                for row in conn.execute(query).mappings()
            ]


def _mark_dirty(conn: Connection, messages: ColumnElement[bool]) -> None:
    """These messages changed: their threads are to be evaluated again."""
    conn.execute(update(MESSAGES).where(messages).values(dirty=MESSAGES.c.dirty + 1))


def _copy_added(conn: Connection, ids: Sequence[int]) -> None:
    """These messages have another copy: their threads are to be evaluated again, and their
    classification found again (a copy in a Sent folder, or an earlier one, changes it)."""
    conn.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id.in_(ids))
        .values(dirty=MESSAGES.c.dirty + 1, classified_under=None)
    )


def _waive_keyword(flagged: bool, seen_at: datetime) -> Any:
    """The update that sets (or clears) the waive keyword of copies that lack (or have) it."""
    since: ColumnElement[Any]
    if flagged:
        since = func.coalesce(
            COPIES.c.waive_seen_at,
            bindparam("seen_at", seen_at, type_=COPIES.c.waive_seen_at.type),
        )
    else:
        # the folder copy still waives: keep when it was seen
        since = case((COPIES.c.waive_folder.is_(True), COPIES.c.waive_seen_at), else_=None)
    return (
        update(COPIES)
        .where(COPIES.c.waive_keyword.is_(not flagged))
        .values(waive_keyword=flagged, waive_seen_at=since)
    )


def _save_checkpoint(conn: Connection, checkpoint: Checkpoint) -> None:
    position = {
        "uidvalidity": checkpoint.uidvalidity,
        "last_uid": checkpoint.last_uid,
        "uidnext": checkpoint.uidnext,
        "highestmodseq": checkpoint.highestmodseq,
    }
    conn.execute(
        dialect_insert(conn, CHECKPOINTS)
        .values(mailbox=checkpoint.mailbox, folder=checkpoint.folder, **position)
        .on_conflict_do_update(index_elements=["mailbox", "folder"], set_=position)
    )


# ---------------------------------------------------------------- storing a batch


def _upsert_messages(
    conn: Connection, batch: Sequence[StoredMessage], policy: str | None
) -> tuple[dict[str, int], set[int]]:
    """Insert the unknown messages (with the verdict of those with one copy in the batch,
    found under `policy`); return every key's row id, and the row ids inserted."""
    stored_at = datetime.now(UTC)
    first: dict[str, StoredMessage] = {}
    arrival: dict[str, datetime] = {}
    copies: dict[str, int] = defaultdict(int)
    for item in batch:
        key = item.message.key
        first.setdefault(key, item)
        copies[key] += 1
        arrived = _arrival(item.message, stored_at)
        arrival[key] = min(arrival.get(key, arrived), arrived)

    known = _message_ids(conn, first)
    time = written_time(conn)
    missing = [
        _message_row(first[key], arrival[key], time, policy, copies[key] == 1)
        for key in first
        if key not in known
    ]
    ids = {key: row_id for key, (row_id, _) in known.items()}
    inserted: dict[str, int] = {}
    if missing:
        inserted = _inserted_ids(conn, missing)
        ids.update(inserted)
        _add_references(conn, {row_id: first[key].message for key, row_id in inserted.items()})
    if len(ids) < len(first):  # another process stored some of them meanwhile
        lost = {key: row for key, row in _message_ids(conn, first).items() if key not in ids}
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
    return ids, set(inserted.values())


def _inserted_ids(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert the message `rows` (their keys not stored): the row id of each inserted."""
    insert = written_insert(conn, MESSAGES, list(rows[0])).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        # the write transaction holds the whole database: every key not stored before is
        # inserted here. A plain executemany and a read of the ids cost half the CPU of
        # an INSERT … RETURNING, which SQLAlchemy sends as many-row statements it builds
        execute_many(conn, insert, rows)
        return {
            key: row_id for key, (row_id, _) in _message_ids(conn, (r["key"] for r in rows)).items()
        }
    # PostgreSQL: another process may store some of them meanwhile; RETURNING tells ours
    return {
        key: row_id
        for key, row_id in conn.execute(insert.returning(MESSAGES.c.key, MESSAGES.c.id), rows)
    }


def _message_ids(conn: Connection, keys: Iterable[str]) -> dict[str, tuple[int, datetime]]:
    found: dict[str, tuple[int, datetime]] = {}
    for chunk in chunks(list(keys)):
        query = select(MESSAGES.c.key, MESSAGES.c.id, MESSAGES.c.arrived_at).where(
            MESSAGES.c.key.in_(chunk)
        )
        found.update({key: (row_id, arrived) for key, row_id, arrived in conn.execute(query)})
    return found


def _add_references(conn: Connection, messages: dict[int, Message]) -> None:
    rows = [
        {"message_id": row_id, "ref_key": ref}
        for row_id, message in messages.items()
        for ref in sorted(set(message.in_reply_to) | set(message.references))
    ]
    execute_many(conn, written_insert(conn, REFERENCES, ["message_id", "ref_key"]), rows)


def _add_copies(
    conn: Connection, batch: Sequence[StoredMessage], ids: dict[str, int], known: set[int]
) -> None:
    """The batch's copies, `known` the row ids of messages stored before (only they can
    have a copy whose UID was forgotten)."""
    present = _present_uids(conn, batch)
    orphans = _orphan_copies(conn, known)
    time = written_time(conn)
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
        rows.append(_copy_row(item, message_id, time))
    if rebind:
        conn.execute(
            update(COPIES)
            .where(COPIES.c.id == bindparam("row_id"))
            .values(uidvalidity=bindparam("uidvalidity"), uid=bindparam("uid")),
            rebind,
        )
    if rows:
        insert = written_insert(conn, COPIES, list(rows[0]))
        execute_many(conn, insert.on_conflict_do_nothing(), rows)


def _present_uids(
    conn: Connection, batch: Sequence[StoredMessage]
) -> set[tuple[str, str, int | None, int]]:
    """The batch's IMAP locations that are already stored."""
    wanted: dict[tuple[str, str, int | None], list[int]] = defaultdict(list)
    for item in batch:
        if item.uid is not None:
            copy = item.message.copies[0]
            wanted[(copy.mailbox, copy.folder, item.uidvalidity)].append(item.uid)
    present: set[tuple[str, str, int | None, int]] = set()
    for (mailbox, folder, uidvalidity), uids in wanted.items():
        for chunk in chunks(uids):
            query = select(COPIES.c.uid).where(
                COPIES.c.mailbox == mailbox,
                COPIES.c.folder == folder,
                COPIES.c.uidvalidity == uidvalidity,
                COPIES.c.uid.in_(chunk),
            )
            present.update((mailbox, folder, uidvalidity, uid) for uid in conn.scalars(query))
    return present


def _orphan_copies(
    conn: Connection, message_ids: set[int]
) -> dict[tuple[int, str, str], list[int]]:
    """IMAP copies of these messages whose UID was forgotten, by (message, mailbox, folder)."""
    orphans: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    for chunk in chunks(sorted(message_ids)):
        query = select(COPIES.c.id, COPIES.c.message_id, COPIES.c.mailbox, COPIES.c.folder).where(
            COPIES.c.message_id.in_(chunk),
            COPIES.c.uid.is_(None),
            COPIES.c.location.is_(None),
        )
        for row_id, message_id, mailbox, folder in conn.execute(query):
            orphans[(message_id, mailbox, folder)].append(row_id)
    return orphans


def _arrival(message: Message, stored_at: datetime) -> datetime:
    """When the one copy being stored arrived, as the clock reads it (response-clock.md,
    "Times"); a copy with no timestamp at all arrived when it was stored."""
    arrived = copy_arrival(message, message.copies[0])
    return stored_at if arrived is None else arrived[0]


def _message_row(
    item: StoredMessage,
    arrived_at: datetime,
    time: Callable[[datetime | None], Any],
    policy: str | None,
    one_copy: bool,
) -> dict[str, Any]:
    """The message's row as `written_insert` takes it; under a `policy`, with its verdict if
    it is stored from `one_copy` (another copy can change it)."""
    message = item.message
    classification = (
        {} if policy is None else verdict_columns(item.verdict if one_copy else None, policy, time)
    )
    return {
        "key": message.key,
        "from_addr": message.from_addr,
        "from_name": message.from_name,
        "sender_addr": message.sender_addr,
        "to": json_text(message.to),
        "cc": json_text(message.cc),
        "bcc": json_text(message.bcc),
        "subject": message.subject,
        "date": time(message.date),
        "received_time": time(message.received_time),
        "in_reply_to": json_text(message.in_reply_to),
        "references": json_text(message.references),
        "thread_index": message.thread_index,
        "headers": json_text(message.headers),
        "courtesy": message.courtesy,
        "raw_headers": zlib.compress(item.raw_headers),
        "arrived_at": time(arrived_at),
        "norm_subject": normalise_subject(message.subject),
        "dirty": 1,  # one change awaiting evaluation (add_messages counts known ones')
        **classification,
    }


def _copy_row(
    item: StoredMessage, message_id: int, time: Callable[[datetime | None], Any]
) -> dict[str, Any]:
    """The copy's row as `written_insert` takes it."""
    copy = item.message.copies[0]
    return {
        "message_id": message_id,
        "mailbox": copy.mailbox,
        "folder": copy.folder,
        "sent_folder": copy.sent_folder,
        "internal_date": time(copy.internal_date),
        "envelope_time": time(copy.envelope_time),
        "received_time": time(copy.received_time),
        "waive_keyword": copy.waive_keyword,
        "waive_folder": copy.waive_folder,
        "waive_seen_at": time(copy.waive_seen_at),
        "gm_thrid": copy.gm_thrid,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "location": None if item.uid is not None else item.location,
    }


def _loaded(conn: Connection, rows: Sequence[RowMapping]) -> list[Loaded]:
    """The message `rows` (read by `message_columns`) with their copies."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    copies = select(*copy_columns()).where(COPIES.c.message_id.in_(ids))
    messages = messages_with_copies(conn, rows, copies)
    return [
        Loaded(row["id"], message, row["automated"], row["thread_id"], row["dirty"])
        for row, message in zip(rows, messages, strict=True)
    ]
