"""The Alembic migrations against the tables, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from mailwatch.store.repository import Store


def test_an_empty_database_is_not_current_until_upgraded(store_url: str):
    store = Store(store_url)
    try:
        assert not store.schema_is_current()
        store.upgrade()
        assert store.schema_is_current()
    finally:
        store.close()


def test_upgrading_twice_changes_nothing(store: Store):
    store.upgrade()

    assert store.schema_is_current()


def test_the_migrations_create_exactly_the_tables_the_code_declares(store: Store):
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)

    assert differences == []
