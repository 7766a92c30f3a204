"""The composition root: settings in, the store, adapters and clock the use cases take, out.

The use cases (polling, nudges, digests) never build an adapter themselves:
the command line and the daemon build them here and pass them in.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer
from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.model import Role
from mailwatch.store.repository import Store


class SchemaOutdated(Exception):
    pass


def utc_now() -> datetime:
    """The clock, unless a command is told `--now` or a test fixes it."""
    return datetime.now(UTC)


def open_store(settings: Settings) -> Store:
    """The configured database; a new empty one gets the schema, an outdated one is refused."""
    store = Store(settings.database_url)
    if not inspect(store.engine).get_table_names():
        store.upgrade()
    elif not store.schema_is_current():
        store.close()
        raise SchemaOutdated(
            f"the database at {store.url.render_as_string(hide_password=True)} has an older "
            "schema than this mailwatch: run `mailwatch migrate` (after `mailwatch backup`)"
        )
    return store


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
