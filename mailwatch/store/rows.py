"""Stored rows back into the core dataclasses (and requests both ways), for every part of
the store that reads them."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    type_coerce,
)
from sqlalchemy.types import NullType, UserDefinedType
from sqlmodel.sql.sqltypes import UTCDateTime

from mailwatch.core.model import (
    ClockKind,
    Copy,
    Message,
    Request,
    Status,
    Verdict,
    Waiver,
    WaiverVia,
)
from mailwatch.store.db import dialect_insert
from mailwatch.store.tables import COPIES, MESSAGES, REQUESTS

# ---------------------------------------------------------------- messages


# The JSON columns of a message read as text: `messages_with_copies` decodes each distinct
# text once per read (addresses and rule headers repeat across thousands of messages; the
# per-value decoding of the column type was a sixth of a first evaluation).
_JSON_COLUMNS = ("to", "cc", "bcc", "in_reply_to", "references", "headers")


def message_columns(rule_headers: bool = True) -> list[Any]:
    """The columns a Message is read from; without `rule_headers`, a light copy's, which can
    be threaded but not classified."""
    left_out = {"raw_headers"} if rule_headers else {"raw_headers", "headers"}
    return [_as_read(column) for column in MESSAGES.c if column.name not in left_out]


def copy_columns() -> list[Any]:
    """The columns a Copy is read from."""
    return [_as_read(column) for column in COPIES.c]


def _as_read(column: Column[Any]) -> Any:
    if column.name in _JSON_COLUMNS:
        return cast(column, Text).label(column.name)
    if isinstance(column.type, UTCDateTime):
        # as the driver gives it, made a UTC time by `_time`: the column type's processing
        # was a tenth of reading a message back
        return type_coerce(column, NullType()).label(column.name)
    return column


def _time(value: datetime | str | None) -> datetime | None:
    """A time read by `_as_read` (or by its column type) as a UTC time, as the column type
    makes it: SQLite gives the text it stored, without an offset, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


class _AsGiven(UserDefinedType[Any]):
    """A bound value handed to the driver as it is: no processing, no cast (an untyped
    bound value would take its column's type)."""

    cache_ok = True


AS_GIVEN = _AsGiven()


def written_insert(conn: Connection, table: Table, names: Sequence[str]) -> Any:
    """The dialect's INSERT of `names` into `table`, its values given as the driver takes
    them (`written_time`, `json_text`): the column types' processing of each value was a
    quarter of storing a first sync's batch."""
    return dialect_insert(conn, table).values(
        {name: bindparam(name, type_=AS_GIVEN) for name in names}
    )


def written_time(conn: Connection) -> Callable[[datetime | None], datetime | str | None]:
    """A time as its UTC column type stores it: on SQLite the text `_time` reads back (and
    queries compare), on PostgreSQL the time itself."""
    return written_time_on(conn.dialect.name)


def written_time_on(dialect: str) -> Callable[[datetime | None], datetime | str | None]:
    """`written_time` for a database named by its dialect ("sqlite", "postgresql")."""
    return _sqlite_time if dialect == "sqlite" else _utc_time


def _sqlite_time(value: datetime | None) -> str | None:
    # "2026-11-01 06:00:00.000000": SQLAlchemy's SQLite DATETIME storage format
    utc = _utc_time(value)
    return None if utc is None else utc.isoformat(" ", "microseconds")[:26]


def _utc_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.utcoffset() is None:  # refused as the column type refuses it
        raise ValueError(f"a time without a timezone cannot be stored: {value}")
    return value.astimezone(UTC)


def json_text(value: Any) -> str:
    """A JSON column's value as its column type encodes it (`json_strings` reads it); a
    tuple as a list."""
    # most messages have no Cc, no Bcc, and a first one no references: encoding those
    # cost 0.1 s of storing 20,000 messages
    return "[]" if value == [] or value == () else json.dumps(value)


def messages_with_copies(
    conn: Connection, rows: Sequence[RowMapping], copies: Select[Any]
) -> list[Message]:
    """The message `rows` as Messages, each with its copies among those `copies` selects
    (a query on the copy table, which may select more)."""
    copies_of: dict[int, list[Copy]] = defaultdict(list)
    ordered = copies.order_by(COPIES.c.message_id, COPIES.c.id)
    for row in conn.execute(ordered).mappings():
        copies_of[row["message_id"]].append(_copy(row))
    # a light copy is read without its rule headers (`message_columns`)
    with_headers = bool(rows) and "headers" in rows[0]
    return [_message(row, copies_of[row["id"]], with_headers) for row in rows]


def _message(row: RowMapping, copies: list[Copy], with_headers: bool) -> Message:
    return Message(
        key=row["key"],
        from_addr=_shared(row["from_addr"]),
        from_name=row["from_name"],
        sender_addr=_shared(row["sender_addr"]),
        to=_addresses(row["to"]),
        cc=_addresses(row["cc"]),
        bcc=_addresses(row["bcc"]),
        subject=row["subject"],
        date=_time(row["date"]),
        received_time=_time(row["received_time"]),
        in_reply_to=_message_ids(row["in_reply_to"]),
        references=_message_ids(row["references"]),
        thread_index=row["thread_index"],
        headers=_rule_headers(row["headers"]) if with_headers else (),
        courtesy=row["courtesy"],
        copies=tuple(copies),
    )


def threading_copy(row: Any) -> Message:
    """A message with only what threading reads, from a row of those columns (the lists as
    JSON text)."""
    return Message(
        key=row.key,
        from_addr=_shared(row.from_addr),
        to=_addresses(row.to),
        cc=_addresses(row.cc),
        bcc=_addresses(row.bcc),
        subject=row.subject,
        in_reply_to=_message_ids(row.in_reply_to),
        references=_message_ids(row.references),
    )


def _addresses(value: str | list[str]) -> tuple[str, ...]:
    """A list of addresses as read by `message_columns` (text), or by the column type."""
    return _decoded_addresses(value) if isinstance(value, str) else tuple(map(sys.intern, value))


@lru_cache(maxsize=4096)
def _decoded_addresses(text: str) -> tuple[str, ...]:
    # Addresses repeat across thousands of messages: each list decoded once, and one string
    # each keeps a first evaluation of years of mail within memory
    return tuple(map(sys.intern, json_strings(text)))


def _message_ids(value: str | list[str]) -> tuple[str, ...]:
    """A list of Message-IDs as read by `message_columns` (text), or by the column type:
    each is of one thread, so not worth a cache."""
    return tuple(json_strings(value) if isinstance(value, str) else value)


def _rule_headers(value: str | list[list[str]]) -> tuple[tuple[str, str], ...]:
    """The rule headers as read by `message_columns` (text: most messages have the same
    few, decoded once each), or by the column type (a list of pairs)."""
    if isinstance(value, str):
        return _decoded_rule_headers(value)
    return tuple((name, text) for name, text in value)


@lru_cache(maxsize=4096)
def _decoded_rule_headers(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in json.loads(text))


def _shared(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def _copy(row: RowMapping) -> Copy:
    return Copy(
        mailbox=sys.intern(row["mailbox"]),
        folder=sys.intern(row["folder"]),
        sent_folder=row["sent_folder"],
        internal_date=_time(row["internal_date"]),
        envelope_time=_time(row["envelope_time"]),
        received_time=_time(row["received_time"]),
        waive_keyword=row["waive_keyword"],
        waive_folder=row["waive_folder"],
        waive_seen_at=_time(row["waive_seen_at"]),
        gm_thrid=row["gm_thrid"],
    )


# The columns of a message's verdict and the policy it was found under
VERDICT_COLUMNS = ("role", "responder", "at", "automated", "out_of_office", "classified_under")


def verdict_columns(
    verdict: Verdict | None, policy: str | None, time: Callable[[datetime | None], Any]
) -> dict[str, Any]:
    """A message's VERDICT_COLUMNS as `written_insert` takes them, `verdict` found under the
    policy whose fingerprint is `policy` (no verdict: none found yet)."""
    if verdict is None:
        return dict.fromkeys(VERDICT_COLUMNS) | {"out_of_office": False}
    return {
        "role": verdict.role.value,
        "responder": verdict.responder,
        "at": time(verdict.at),
        "automated": verdict.automated,
        "out_of_office": verdict.out_of_office,
        "classified_under": policy,
    }


# ---------------------------------------------------------------- requests


def request_rows(
    requests: Sequence[Request], evaluated_at: datetime, dialect: str
) -> list[dict[str, Any]]:
    """The requests' rows as the database named by its `dialect` stores them."""
    time = written_time_on(dialect)
    return [request_row(request, evaluated_at, time) for request in requests]


def request_row(
    request: Request, evaluated_at: datetime, time: Callable[[datetime | None], Any]
) -> dict[str, Any]:
    """The request's row as `written_insert` takes it, `time` from `written_time`."""
    waiver = request.waiver
    return {
        "account": request.account,
        "thread": request.thread,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": time(request.received_at),
        "messages": json_text(request.messages),
        "tier": request.tier,
        "clock": request.clock.value,
        "target_seconds": request.target_seconds,
        "deadline": time(request.deadline),
        "responsible": json_text(request.responsible),
        "status": request.status.value,
        "answered_by": request.answered_by,
        "answered_at": time(request.answered_at),
        "responder": request.responder,
        "response_seconds": request.response_seconds,
        "elapsed_seconds": request.elapsed_seconds,
        "closed_at": time(request.closed_at),
        # JSON null, as the column type stores None
        "waiver": json_text(
            None
            if waiver is None
            else {
                "message_key": waiver.message_key,
                "by": waiver.by,
                "seen_at": waiver.seen_at.astimezone(UTC).isoformat(),
                "reason": waiver.reason,
                "via": waiver.via.value,
            }
        ),
        "notes": json_text(request.notes),
        "evaluated_at": time(evaluated_at),
        "answered_via": request.answered_via,
        "reply_possibly_unseen": request.reply_possibly_unseen,
    }


# A request's JSON columns are read as text and decoded by `read_requests`, the texts that
# repeat across thousands of requests (`responsible`, `waiver`) once per read: PostgreSQL's
# driver decoding every value was half the time of reading a monthly digest's requests.
def json_as_text(column: Column[Any]) -> ColumnElement[Any]:
    """A JSON column read as its text (any other column as it is)."""
    return cast(column, Text).label(column.name) if isinstance(column.type, JSON) else column


# what a Request is read from: every column but the row id and when it was evaluated
REQUEST_COLUMNS = tuple(
    json_as_text(column) for column in REQUESTS.c if column.name not in ("id", "evaluated_at")
)
STATUSES = {status.value: status for status in Status}  # a lookup: thousands of rows
_CLOCKS = {clock.value: clock for clock in ClockKind}


def read_requests(conn: Connection, query: Select[Any]) -> list[Request]:
    """The requests `query` selects (its columns: `REQUEST_COLUMNS`)."""
    repeated = lru_cache(maxsize=1024)(json.loads)  # the values are only read, never changed
    return [_request(row, repeated) for row in conn.execute(query).mappings()]


def json_strings(text: str) -> list[str]:
    """A JSON list of strings as stored (`["a", "b"]`), decoded: with no backslash no value
    holds an escape or a quote, so splitting it gives the values as decoding would, in a
    fraction of the time (a request's messages, a message's addresses and references,
    hundreds of thousands of them); anything else is decoded."""
    if text == "[]":
        return []
    if text.startswith('["') and text.endswith('"]') and "\\" not in text and '","' not in text:
        return text[2:-2].split('", "')
    found: list[str] = json.loads(text)
    return found


def _request(row: RowMapping, repeated: Callable[[str], Any]) -> Request:
    waiver = repeated(row["waiver"]) if row["waiver"] is not None else None
    return Request(
        account=row["account"],
        thread=row["thread"],
        subject=row["subject"],
        opened_by=row["opened_by"],
        received_at=row["received_at"],
        messages=tuple(json_strings(row["messages"])),
        tier=row["tier"],
        clock=_CLOCKS[row["clock"]],
        target_seconds=row["target_seconds"],
        deadline=row["deadline"],
        responsible=tuple(repeated(row["responsible"])),
        status=STATUSES[row["status"]],
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
            via=WaiverVia(waiver["via"]) if "via" in waiver else _via_from_by(waiver["by"]),
        ),
        notes=tuple(repeated(row["notes"])),
        answered_via=row["answered_via"],
        reply_possibly_unseen=row["reply_possibly_unseen"],
    )


def _via_from_by(by: str) -> WaiverVia:
    """How a waiver stored before `via` was kept was made: its `by` said it."""
    if by.startswith("keyword"):
        return WaiverVia.KEYWORD
    if by.startswith("waive folder"):
        return WaiverVia.FOLDER
    return WaiverVia.COURTESY if by == "mailwatch (courtesy)" else WaiverVia.COMMAND
