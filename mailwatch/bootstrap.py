"""The composition root: settings in, store and adapters out."""

from __future__ import annotations

from sqlalchemy import inspect

from mailwatch.config import Settings
from mailwatch.store.repository import Store


class SchemaOutdated(Exception):
    pass


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
