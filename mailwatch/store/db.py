"""The database underneath the store: engines, transactions, the schema's migrations.

Every write runs in one short transaction.  On SQLite those transactions start
with BEGIN IMMEDIATE, so a writer takes the lock up front instead of failing
with SQLITE_BUSY halfway (the SQLAlchemy pysqlite recipe); busy_timeout makes
the others wait for it.  Idempotency comes from unique keys and
INSERT … ON CONFLICT DO NOTHING, which both dialects share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from mailwatch.store.tables import STATE

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
CHUNK = 500  # values per IN (...) list: well below every SQLite variable limit
WRITE = "mailwatch_write"  # execution option: this transaction will write

Value = TypeVar("Value")


class Database:
    """An SQLite or PostgreSQL database with the mailwatch schema."""

    def __init__(self, url: str):
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        self.engine = (
            _sqlite_engine(self.url) if self.dialect == "sqlite" else _postgres_engine(self.url)
        )

    def upgrade(self) -> None:
        """Apply every migration not applied yet (creates the schema on an empty database)."""
        config = alembic_config()
        with writing(self.engine) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        return self._applied_revisions() == set(_scripts().get_heads())

    def unknown_revisions(self) -> set[str]:
        """Applied migrations this code has no script for: a newer mailwatch wrote the schema."""
        known = {script.revision for script in _scripts().walk_revisions()}
        return self._applied_revisions() - known

    def _applied_revisions(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())

    def close(self) -> None:
        self.engine.dispose()


def alembic_config() -> Config:
    """The migrations' configuration (there is no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


# ---------------------------------------------------------------- transactions


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One transaction that writes (BEGIN IMMEDIATE on SQLite)."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One transaction that only reads."""
    with engine.begin() as conn:
        yield conn


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing/do_update."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def execute_many(conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """`statement` once for each of `rows`, whose values are given as the driver takes them
    (`rows.written_insert`; no bound value of the statement's own). On SQLite the rows go
    to the driver's executemany as tuples: SQLAlchemy's building of each row's parameters
    cost three times SQLite's own writing of wide rows (50,000 requests: 0.8 s against
    0.2 s). PostgreSQL keeps SQLAlchemy's, which sends many rows in one statement. The
    statement is compiled at each call (0.4 ms for a message row): give it all the rows."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(statement, rows)
        return
    compiled = statement.compile(dialect=conn.dialect)
    names = compiled.positiontup
    values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    defaults = _defaults_left_out(compiled, sorted(set(names) - set(rows[0])))
    if defaults:
        rows = [{**defaults, **row} for row in rows]
    conn.exec_driver_sql(compiled.string, [values(row) for row in rows])


def _defaults_left_out(compiled: Any, names: list[str]) -> dict[str, Any]:
    """The values of the inserted columns `names` that the rows leave to their default (an
    INSERT names every column with a default): a constant default only."""
    defaulted = {column.key: column for column in compiled.insert_prefetch}
    defaults = {}
    for name in names:
        column = defaulted.get(name)  # not a value the statement gives itself
        if column is None or not column.default.is_scalar:
            raise ValueError(f"rows without a value for {name!r}")
        defaults[name] = column.default.arg
    return defaults


def chunks(values: Sequence[Value], size: int = CHUNK) -> Iterator[Sequence[Value]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def save_state(conn: Connection, name: str, value: str) -> None:
    """Set the named state row (its one upsert, for every part of the store)."""
    conn.execute(
        dialect_insert(conn, STATE)
        .values(name=name, value=value)
        .on_conflict_do_update(index_elements=["name"], set_={"value": value})
    )


def read_state(conn: Connection, name: str) -> str | None:
    value: str | None = conn.scalar(select(STATE.c.value).where(STATE.c.name == name))
    return value


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
