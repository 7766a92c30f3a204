"""Values written as the driver takes them (`store/rows.py`) are stored exactly as the column
types stored them, on both databases: the readers, and the queries comparing stored times,
rely on it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, text

from mailwatch.store.db import dialect_insert, execute_many
from mailwatch.store.repository import Store
from mailwatch.store.rows import json_text, written_insert, written_time
from mailwatch.store.tables import MESSAGES
from tests.fixtures.stores import SqliteTemplate

TIMES = [
    datetime(50, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=13, minutes=45))),
    datetime(2026, 11, 1, 6, tzinfo=ZoneInfo("Asia/Kathmandu")),
    datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=timezone(-timedelta(hours=3, minutes=30, seconds=17))),
    None,
]
ADDRESSES = [(), ("a@acme.example", "é@acme.example", "\u2028", "\\", '"', "😀")]
# what `rows` gives, and columns it leaves to their defaults
DRIVER_COLUMNS = ["to", "headers", "date", "arrived_at", "courtesy", "raw_headers", "cc"]
DRIVER_COLUMNS += ["dirty", "out_of_office", "from_name"]
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


def written_rows(conn: Connection) -> list[dict[str, Any]]:
    """`rows` as the driver takes them (`written_insert`)."""
    time = written_time(conn)
    return [
        {
            **row,
            "to": json_text(row["to"]),
            "headers": json_text(row["headers"]),
            "date": time(row["date"]),
            "arrived_at": time(row["arrived_at"]),
        }
        for row in rows()
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

        written = written_rows(conn)
        conn.execute(written_insert(conn, MESSAGES, list(written[0])), written)

        assert as_stored(conn, names) == by_column_types


def test_rows_written_by_execute_many_are_stored_as_sqlalchemy_stores_them(
    migrated_sqlite: SqliteTemplate, tmp_path: Path
) -> None:
    """On SQLite, the driver's own executemany: the columns the rows leave out (`dirty`,
    `out_of_office`, `from_name`) given their defaults as SQLAlchemy gives them."""
    stored = []
    for name, write in (("sqlalchemy", Connection.execute), ("driver", execute_many)):
        sqlite = Store(migrated_sqlite.copy(tmp_path / f"{name}.db"))
        with sqlite.engine.begin() as conn:
            written = [
                row | dict.fromkeys(["cc", "bcc", "in_reply_to", "references"], "[]")
                for row in written_rows(conn)
            ]
            write(conn, written_insert(conn, MESSAGES, list(written[0])), written)
            stored.append(as_stored(conn, DRIVER_COLUMNS))
        sqlite.close()

    assert stored[1] == stored[0]
    assert len(stored[1]) == len(rows())


@pytest.fixture
def sqlite_conn(migrated_sqlite: SqliteTemplate, tmp_path: Path) -> Iterator[Connection]:
    """A transaction on a migrated SQLite store, where `execute_many` uses the driver."""
    sqlite = Store(migrated_sqlite.copy(tmp_path / "driver.db"))
    with sqlite.engine.begin() as conn:
        yield conn
    sqlite.close()


def test_a_row_leaving_out_a_column_without_a_constant_default_is_refused(
    sqlite_conn: Connection,
) -> None:
    written = [{"key": "<m@acme.example>", "arrived_at": written_time(sqlite_conn)(TIMES[0])}]
    insert = written_insert(sqlite_conn, MESSAGES, list(written[0]))
    # Bcc's default is a new list for each row: SQLAlchemy's to make, not the rows'
    with pytest.raises(ValueError, match="rows without a value for 'bcc'"):
        execute_many(sqlite_conn, insert, written)


def test_a_value_the_statement_gives_itself_is_refused_not_replaced_by_a_default(
    sqlite_conn: Connection,
) -> None:
    written = [{"key": "<m@acme.example>", "arrived_at": written_time(sqlite_conn)(TIMES[0])}]
    written[0] |= dict.fromkeys(["to", "cc", "bcc", "in_reply_to", "references"], "[]")
    insert = written_insert(sqlite_conn, MESSAGES, list(written[0])).values(dirty=0)
    with pytest.raises(ValueError, match="rows without a value for 'dirty'"):
        execute_many(sqlite_conn, insert, written)


def test_a_time_without_a_timezone_is_refused_as_the_column_type_refuses_it(
    store: Store,
) -> None:
    with store.engine.begin() as conn, pytest.raises(ValueError, match="timezone"):
        written_time(conn)(datetime(2026, 3, 2, 9, 0))
