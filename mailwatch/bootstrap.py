"""The composition root: settings in, the store, adapters and clock the use cases take, out.

The use cases (polling, nudges, digests) never build an adapter themselves:
the command line and the daemon build them here and pass them in.

A database that cannot be used is one `DatabaseProblem` line naming the URL (never
its password) and what to do.  `configuration` says whether only an operator can fix
it (a wrong URL, a missing directory, permissions, a file that is not a database, a
server that refuses the login): the command line exits 2 on those, so the systemd
unit stops restarting; a server that does not answer may come back, so it exits 1.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer
from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.model import Role
from mailwatch.store.repository import Store


class DatabaseProblem(Exception):
    def __init__(self, message: str, *, configuration: bool) -> None:
        super().__init__(message)
        self.configuration = configuration


class SchemaMismatch(Exception):
    """The schema is older or newer than this mailwatch's."""


def utc_now() -> datetime:
    """The clock, unless a command is told `--now` or a test fixes it."""
    return datetime.now(UTC)


def open_store(settings: Settings) -> Store:
    """The configured database; a new empty one gets the schema, another version's is refused."""
    store = connect_store(settings)
    try:
        if _is_empty(store):
            store.upgrade()
        else:
            mismatch = schema_mismatch(store)
            if mismatch:
                raise SchemaMismatch(mismatch)
    except BaseException:
        store.close()
        raise
    return store


def migrate_store(settings: Settings) -> None:
    """Apply the migrations this mailwatch has; a schema written by a newer one is refused."""
    store = connect_store(settings)
    try:
        if store.unknown_revisions():
            raise SchemaMismatch(str(schema_mismatch(store)))
        store.upgrade()
    finally:
        store.close()


def database_check(settings: Settings) -> tuple[bool, str]:
    """For `mailwatch check`: whether the database can be used as it is, and one line on it."""
    try:
        store = connect_store(settings)
    except DatabaseProblem as problem:
        return False, str(problem)
    try:
        shown = f"database {shown_url(store.url)}"
        if _is_empty(store):
            return True, f"{shown}: ok, empty (mailwatch creates its schema in it)"
        mismatch = schema_mismatch(store)
        return (False, mismatch) if mismatch else (True, f"{shown}: ok, the schema is current")
    finally:
        store.close()


def _is_empty(store: Store) -> bool:
    return not inspect(store.engine).get_table_names()


def schema_mismatch(store: Store) -> str | None:
    """What is wrong with the schema of a database that has one, or None when it is current."""
    where = f"the database at {shown_url(store.url)}"
    unknown = store.unknown_revisions()
    if unknown:
        return (
            f"{where} has a schema from a newer mailwatch (revision {', '.join(sorted(unknown))}):"
            " install that version again, or restore the backup made before it;"
            " `mailwatch migrate` cannot take a schema back"
        )
    if not store.schema_is_current():
        return (
            f"{where} has an older schema than this mailwatch: run `mailwatch migrate` "
            "(after `mailwatch backup`)"
        )
    return None


def connect_store(settings: Settings) -> Store:
    """The configured database, connected once to prove it can be; raises DatabaseProblem."""
    url = make_url(settings.database_url)
    try:
        store = Store(settings.database_url)
    except ValueError as error:  # a dialect other than SQLite and PostgreSQL
        raise DatabaseProblem(
            f"database {shown_url(url)}: {error}: correct [database] url "
            "(sqlite:///PATH or postgresql+psycopg://…)",
            configuration=True,
        ) from None
    except (ArgumentError, ImportError) as error:  # an unknown or missing driver
        raise DatabaseProblem(
            f"database {shown_url(url)}: no driver for it ({error}): use sqlite:///PATH, or "
            "postgresql+psycopg://… with `pip install 'mailwatch[postgres]'`",
            configuration=True,
        ) from None
    except OSError as error:  # creating the SQLite file
        raise _file_problem(url, error) from None
    try:
        with store.engine.connect():
            pass
    except DBAPIError as error:
        store.close()
        raise _connection_problem(store, error) from None
    return store


def shown_url(url: URL | str) -> str:
    """A database URL as it may be shown: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _file_problem(url: URL, error: OSError) -> DatabaseProblem:
    database = url.database or ""
    directory = Path(database).parent
    if isinstance(error, FileNotFoundError):
        fix = (
            f"the directory {directory} does not exist: create it, writable by the user "
            "mailwatch runs as, or correct [database] url"
        )
    elif isinstance(error, PermissionError):
        fix = (
            f"permission denied: the user mailwatch runs as must be able to read and write "
            f"{database} and its directory {directory}"
        )
    else:
        fix = f"cannot create {database}: {error.strerror or error}"
    return DatabaseProblem(f"database {shown_url(url)}: {fix}", configuration=True)


def _connection_problem(store: Store, error: DBAPIError) -> DatabaseProblem:
    shown = f"database {shown_url(store.url)}"
    reason = " ".join(str(error.orig).split())
    if store.url.password:
        reason = reason.replace(store.url.password, "***")
    if store.dialect == "sqlite":
        if "not a database" in reason:
            return DatabaseProblem(
                f"{shown}: {store.url.database} is not an SQLite database: correct [database] "
                "url (mailwatch creates its database file itself)",
                configuration=True,
            )
        return DatabaseProblem(
            f"{shown}: {reason}: the user mailwatch runs as must be able to read and write "
            "the file and its directory",
            configuration="locked" not in reason,
        )
    # A server that answered with FATAL refused us (no such role or database, a wrong
    # password): only a change of the URL or the server helps. One that is starting or
    # shutting down says so in a FATAL too, and will be back.
    if "FATAL" in reason and "the database system is" not in reason:
        return DatabaseProblem(
            f"{shown}: the server refused: {reason}: correct [database] url, or create the "
            "role and database on the server",
            configuration=True,
        )
    return DatabaseProblem(
        f"{shown}: cannot reach the server: {reason}: mailwatch tries again when it is "
        "started again",
        configuration=False,
    )


def make_mailer(settings: Settings) -> Mailer | None:
    """None without an [smtp] server: the passes say so only when they have mail to send.
    The mailer sends to staff only: agency domains and [[staff]] addresses."""
    if settings.smtp is None:
        return None
    directory = Directory(settings.policy)
    return Mailer(settings.smtp, is_staff=lambda address: directory.role(address) is Role.STAFF)


def make_renderer() -> Renderer:
    """The packaged templates."""
    return Renderer()
