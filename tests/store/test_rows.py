"""Values written as the driver takes them (`store/rows.py`) are stored exactly as the column
types stored them, on both databases: the readers, and the queries comparing stored times,
rely on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, text

from mailwatch.store.db import dialect_insert
from mailwatch.store.repository import Store
from mailwatch.store.rows import json_text, written_insert, written_time
from mailwatch.store.tables import MESSAGES

TIMES = [
    datetime(50, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=13, minutes=45))),
    datetime(2026, 11, 1, 6, tzinfo=ZoneInfo("Asia/Kathmandu")),
    datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=timezone(-timedelta(hours=3, minutes=30, seconds=17))),
    None,
]
ADDRESSES = [(), ("a@acme.example", "é@acme.example", "\u2028", "\\", '"', "😀")]
RULE_HEADERS = [(("list-id", "<news.acme.example>"), ("x-campaign", '😀 \\ "')), None]


def rows() -> list[dict[str, Any]]:
    return [
        {
            "key": f"<m{number}@acme.example>",
            "to": ADDRESSES[number % len(ADDRESSES)],
            "headers": RULE_HEADERS[number % len(RULE_HEADERS)],
            "date": time,
            "arrived_at": TIMES[number - 1] or TIMES[0],
            "courtesy": number % 2 == 0,
            "raw_headers": bytes(range(number * 40, number * 40 + 40)),
        }
        for number, time in enumerate(TIMES)
    ]


def as_stored(conn: Connection, names: list[str]) -> list[tuple[str, ...]]:
    """Each message's `names` as the database holds them: the type and the text."""
    if conn.dialect.name == "sqlite":
        columns = [f'typeof("{name}") || \':\' || quote("{name}")' for name in names]
    else:
        columns = [
            f"pg_typeof(\"{name}\")::text || ':' || coalesce(\"{name}\"::text, 'NULL')"
            for name in names
        ]
    query = f"SELECT {', '.join(columns)} FROM message ORDER BY id"
    return [tuple(row) for row in conn.execute(text(query))]


def test_values_written_as_the_driver_takes_them_are_stored_as_the_column_types_store_them(
    store: Store,
) -> None:
    names = [name for name in rows()[0] if name != "key"]
    with store.engine.begin() as conn:
        conn.execute(dialect_insert(conn, MESSAGES), rows())
        by_column_types = as_stored(conn, names)
        conn.execute(text("DELETE FROM message"))

        time = written_time(conn)
        written = [
            {
                **row,
                "to": json_text(row["to"]),
                "headers": json_text(row["headers"]),
                "date": time(row["date"]),
                "arrived_at": time(row["arrived_at"]),
            }
            for row in rows()
        ]
        conn.execute(written_insert(conn, MESSAGES, list(written[0])), written)

        assert as_stored(conn, names) == by_column_types


def test_a_time_without_a_timezone_is_refused_as_the_column_type_refuses_it(
    store: Store,
) -> None:
    with store.engine.begin() as conn, pytest.raises(ValueError, match="timezone"):
        written_time(conn)(datetime(2026, 3, 2, 9, 0))
