"""Privacy in the store: reducing mail with no client participant, forgetting an address,
exporting what names one, and retention.  What a reduction keeps is policy, decided by the
caller (`ReductionPolicy`); this module only carries it out."""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    RowMapping,
    String,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)

from mailwatch.core.model import Message
from mailwatch.store.db import CHUNK, Database, chunks, read_state, reading, save_state, writing
from mailwatch.store.messages import QuarantinedMessage
from mailwatch.store.rows import messages_with_copies
from mailwatch.store.tables import (
    CLAIMS,
    COPIES,
    LESSON_RECORDS,
    MESSAGES,
    PEOPLE,
    QUARANTINE,
    RECORDED_ANSWERS,
    REFERENCES,
    REQUESTS,
    RETENTION,
    WAIVERS,
)

REDUCED_STATE = "reduced_before"  # mail that arrived before this was considered for reduction
REDUCED_RAW = zlib.compress(b"")  # a reduced message keeps no raw header block
FORGOTTEN = "(forgotten)"  # stands in for a forgotten address in a kept request
# A PostgreSQL advisory lock key (any constant bigint that is ours): changing stored requests.
REQUESTS_LOCK = 0x6D77_7265_7175  # "mwrequ"

_ADDRESS_COLUMNS = (
    MESSAGES.c.from_addr,
    MESSAGES.c.sender_addr,
    MESSAGES.c.to,
    MESSAGES.c.cc,
    MESSAGES.c.bcc,
)
# what decides whether a message is reduced, and what its reduction keeps
_FILTER_COLUMNS = (MESSAGES.c.id, MESSAGES.c.thread_id, *_ADDRESS_COLUMNS)
_REDUCE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.automated,
    MESSAGES.c.out_of_office,
    MESSAGES.c.headers,
)
_REDUCED_FIELDS = ("to", "cc", "bcc", "subject", "norm_subject", "headers", "raw_headers")


@dataclass(frozen=True)
class ReductionPolicy:
    """What happens to mail with no client participant (the values: mailwatch.privacy_policy)."""

    grace: timedelta  # only mail that arrived at least this long ago is reduced
    recipient_headers: frozenset[str]  # header fields kept without their value


@dataclass(frozen=True)
class Forgotten:
    """What `forget_address` removed."""

    messages: int  # the address's own messages (sent or received)
    conversation_messages: int  # other messages of the same conversations
    requests: int  # requests kept for the figures but stripped of the address and subject
    claims: int  # nudges and digests addressed to it
    set_aside: int  # unreadable mail that named it


class PrivacyStore(Database):
    def reduce_unrelated_mail(
        self,
        keys: Iterable[str] | None,
        now: datetime,
        is_client: Callable[[str], bool],
        policy: ReductionPolicy,
    ) -> int:
        """Cut mail with no client participant and no client in its thread down to what
        threading and the clock read: ids, references, times, copies, the sender, and the
        automation verdict as a header.  Candidates are the evaluated `keys` (None: all
        mail was evaluated) and the mail that arrived since the last reduction; only what
        arrived `policy.grace` before `now` (so an account added soon after still sees its
        history) and is evaluated is reduced.  Returns how many messages were reduced."""
        arrived_before = now - policy.grace
        with writing(self.engine) as conn:
            mark = read_state(conn, REDUCED_STATE)
            since = None if mark is None else datetime.fromisoformat(mark)
            wanted = None if keys is None else set(keys)
            candidates = _without_clients(conn, wanted, since, arrived_before, is_client)
            client_threads = _client_threads(conn, set(candidates.values()))
            doomed = sorted(id for id, thread in candidates.items() if thread not in client_threads)
            reduce = (
                update(MESSAGES)
                .where(MESSAGES.c.id == bindparam("row_id"))
                .values({name: bindparam(f"new_{name}") for name in _REDUCED_FIELDS})
            )
            # read again a chunk at a time: holding every candidate's headers until their
            # threads are known cost hundreds of MB on a first evaluation of years of mail
            for chunk in chunks(doomed):
                rows = conn.execute(select(*_REDUCE_COLUMNS).where(MESSAGES.c.id.in_(chunk)))
                conn.execute(
                    reduce, [_reduced(row, policy.recipient_headers) for row in rows.mappings()]
                )
            if since is None or arrived_before > since:
                save_state(conn, REDUCED_STATE, arrived_before.isoformat())
        return len(doomed)

    def messages_about(self, address: str) -> list[tuple[Message, datetime, bytes]]:
        """Every message `address` sent or received: (message, arrived at, raw header block)."""
        query = (
            select(MESSAGES)
            .where(_mentions(address))
            .order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        )
        with reading(self.engine) as conn:
            rows = [row for row in conn.execute(query).mappings() if address in _addresses_of(row)]
            copies = select(COPIES).join(MESSAGES).where(_mentions(address))
            messages = messages_with_copies(conn, rows, copies)
        return [
            (message, row["arrived_at"], zlib.decompress(row["raw_headers"]))
            for message, row in zip(messages, rows, strict=True)
        ]

    def forget_address(self, address: str) -> Forgotten:
        """Delete every conversation `address` took part in (each thread holding a message it
        sent or received, with copies, references and waivers), its claims, its person
        record and the set-aside mail naming it.  The requests of those conversations stay
        for the figures, without subject, with message ids replaced by tokens (so no
        re-evaluation replaces them: nothing carries their thread any more), and with the
        address taken out of responder and responsible; their lessons stay with them."""
        with writing(self.engine) as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(REQUESTS_LOCK)))
            own = _messages_naming(conn, address)
            threads = sorted({row["thread_id"] for row in own if row["thread_id"]})
            doomed = {row["id"]: row["key"] for row in own}
            for chunk in chunks(threads):
                query = select(MESSAGES.c.id, MESSAGES.c.key).where(MESSAGES.c.thread_id.in_(chunk))
                doomed.update({row.id: row.key for row in conn.execute(query)})
            tokens = {key: _token() for key in {*doomed.values(), *threads}}
            requests = _forget_in_requests(conn, address, tokens)
            _delete_messages(conn, doomed)
            _forget_in_lessons(conn, address, tokens)
            claims = _forget_claims(conn, address, tokens)
            conn.execute(delete(PEOPLE).where(PEOPLE.c.address == address))
            set_aside = [row.id for row in _quarantine_naming(conn, address)]
            for chunk in chunks(set_aside):
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
        with reading(self.engine) as conn:
            return [
                QuarantinedMessage(row.location, row.error, row.seen_at)
                for row in _quarantine_naming(conn, address)
            ]

    def delete_messages_before(self, cutoff: datetime) -> int:
        """Retention: drop messages that arrived before `cutoff`, and quarantined mail
        seen before it.  Computed requests stay; those received before the cutoff are
        from now on history that an evaluation no longer touches."""
        old = select(MESSAGES.c.id).where(MESSAGES.c.arrived_at < cutoff)
        with writing(self.engine) as conn:
            conn.execute(delete(COPIES).where(COPIES.c.message_id.in_(old)))
            deleted = conn.execute(delete(MESSAGES).where(MESSAGES.c.arrived_at < cutoff)).rowcount
            conn.execute(delete(QUARANTINE).where(QUARANTINE.c.seen_at < cutoff))
            horizon = retention_horizon(conn)
            if horizon is None:
                conn.execute(RETENTION.insert().values(cutoff=cutoff))
            elif cutoff > horizon:
                conn.execute(update(RETENTION).values(cutoff=cutoff))
        return deleted


def retention_horizon(conn: Connection) -> datetime | None:
    """The latest retention cutoff: requests received before it are history."""
    horizon: datetime | None = conn.scalar(select(func.max(RETENTION.c.cutoff)))
    return horizon


# ---------------------------------------------------------------- reduction


def _without_clients(
    conn: Connection,
    wanted: set[str] | None,
    since: datetime | None,
    arrived_before: datetime,
    is_client: Callable[[str], bool],
) -> dict[int, str | None]:
    """The unreduced, evaluated staff or other mail among the candidates that names no
    client, by row id with its thread: `wanted` keys (None: all), and what arrived since
    `since`, before `arrived_before`."""
    window = MESSAGES.c.arrived_at < arrived_before
    unreduced = (
        MESSAGES.c.role.in_(("staff", "other")),
        MESSAGES.c.dirty == 0,
        MESSAGES.c.raw_headers != REDUCED_RAW,
    )
    queries = []
    if since is not None and wanted is not None:
        # the window is new arrivals; evaluated keys may be older mail (never newer
        # than the grace period: a past run with `--now` ahead may have set the mark)
        window = window & (MESSAGES.c.arrived_at >= since)
        older = MESSAGES.c.arrived_at < min(since, arrived_before)
        queries += [
            select(*_FILTER_COLUMNS).where(MESSAGES.c.key.in_(chunk), older, *unreduced)
            for chunk in chunks(sorted(wanted))
        ]
    queries.append(select(*_FILTER_COLUMNS).where(window, *unreduced))
    candidates: dict[int, str | None] = {}
    threads: dict[str, str] = {}  # one string per thread, not one per message
    for query in queries:
        # streamed: a first evaluation of years of mail reads every message once
        for row in conn.execute(query.execution_options(yield_per=CHUNK)).mappings():
            if not any(is_client(a) for a in _addresses_of(row)):
                thread = row["thread_id"]
                candidates[row["id"]] = thread and threads.setdefault(thread, thread)
    return candidates


def _client_threads(conn: Connection, threads: set[str | None]) -> set[str]:
    """Those of `threads` that hold a client's message."""
    found: set[str] = set()
    for chunk in chunks(sorted(thread for thread in threads if thread)):
        query = select(MESSAGES.c.thread_id).where(
            MESSAGES.c.thread_id.in_(chunk), MESSAGES.c.role == "client"
        )
        found.update(conn.scalars(query))
    return found


def _reduced(row: RowMapping, recipient_headers: frozenset[str]) -> dict[str, Any]:
    """The new values of a reduced message: no recipients, subject or raw header block;
    the rule headers that name nobody; the automation verdict kept as Auto-Submitted, so
    that classifying the message again gives the same answer without its subject."""
    headers = []
    for name, value in row["headers"]:
        if name == "auto-submitted" and row["automated"]:
            continue
        if name == "return-path" and value.replace(" ", "") != "<>":
            continue  # a bounce address may name the recipient (VERP)
        headers.append([name, "" if name in recipient_headers else value])
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


# ---------------------------------------------------------------- one address


def _addresses_of(row: RowMapping) -> set[str]:
    found = {row["from_addr"], row["sender_addr"], *row["to"], *row["cc"], *row["bcc"]}
    return {address for address in found if address}


def _mentions(address: str) -> ColumnElement[bool]:
    """A cheap SQL filter for messages that may name `address` (callers check exactly)."""
    quoted = json.dumps(address)  # as it appears inside a stored JSON list
    in_lists = [
        cast(column, String).contains(quoted, autoescape=True)
        for column in (MESSAGES.c.to, MESSAGES.c.cc, MESSAGES.c.bcc)
    ]
    return or_(MESSAGES.c.from_addr == address, MESSAGES.c.sender_addr == address, *in_lists)


def _messages_naming(conn: Connection, address: str) -> list[RowMapping]:
    """Id, key and thread of every message `address` sent or received."""
    query = select(MESSAGES.c.id, MESSAGES.c.key, MESSAGES.c.thread_id, *_ADDRESS_COLUMNS)
    return [
        row
        for row in conn.execute(query.where(_mentions(address))).mappings()
        if address in _addresses_of(row)
    ]


def _quarantine_naming(conn: Connection, address: str) -> list[Row[Any]]:
    needle = address.encode()
    query = select(QUARANTINE).order_by(QUARANTINE.c.seen_at, QUARANTINE.c.id)
    return [row for row in conn.execute(query) if row.raw and needle in row.raw.lower()]


def _delete_messages(conn: Connection, doomed: dict[int, str]) -> None:
    """Delete these messages (row id -> key) with their references, copies, waivers and
    recorded answers."""
    for chunk in chunks(sorted(doomed)):
        conn.execute(delete(REFERENCES).where(REFERENCES.c.message_id.in_(chunk)))
        conn.execute(delete(COPIES).where(COPIES.c.message_id.in_(chunk)))
        conn.execute(delete(MESSAGES).where(MESSAGES.c.id.in_(chunk)))
    for keys in chunks(sorted(doomed.values())):
        conn.execute(delete(WAIVERS).where(WAIVERS.c.message_key.in_(keys)))
        conn.execute(delete(RECORDED_ANSWERS).where(RECORDED_ANSWERS.c.message_key.in_(keys)))


def _forget_in_lessons(conn: Connection, address: str, tokens: dict[str, str]) -> None:
    """A lesson of a forgotten conversation stays with its anonymous request (under the
    token that replaced its message id), like the request's waiver; the address goes from
    who made and owns lessons, and from their words."""
    written = re.compile(re.escape(address), re.IGNORECASE)
    for row in conn.execute(select(LESSON_RECORDS)).mappings().all():
        values = {
            column: FORGOTTEN
            for column in ("made_by", "owner")
            if (row[column] or "").lower() == address
        }
        for column in ("reason", "action", "note"):
            if row[column] and written.search(row[column]):
                values[column] = written.sub(FORGOTTEN, row[column])
        if row["message_key"] in tokens:
            values["message_key"] = tokens[row["message_key"]]
        if values:
            conn.execute(
                update(LESSON_RECORDS).where(LESSON_RECORDS.c.id == row["id"]).values(values)
            )


def _forget_claims(conn: Connection, address: str, tokens: dict[str, str]) -> int:
    """Claims keyed by a forgotten message take its token; the address's own claims go.
    Returns how many were deleted."""
    for row in conn.execute(select(CLAIMS.c.id, CLAIMS.c.key)).all():
        opener, bar, stage = row.key.partition("|")
        if bar and opener in tokens:
            changed = update(CLAIMS).where(CLAIMS.c.id == row.id)
            conn.execute(changed.values(key=f"{tokens[opener]}|{stage}"))
    deleted: int = conn.execute(delete(CLAIMS).where(CLAIMS.c.recipient == address)).rowcount
    return deleted


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


def _anonymous_conversation(
    row: RowMapping, address: str, tokens: dict[str, str]
) -> dict[str, Any]:
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
