"""Alembic environment, run by `Store.upgrade()` with the store's own connection.

There is no alembic.ini: the store builds the Config in code and hands its
connection over in `config.attributes["connection"]`, so SQLite gets the same
pragmas and BEGIN IMMEDIATE as every other write.  For a new revision:

    from alembic import command
    from mailwatch.store.db import alembic_config
    from mailwatch.store.repository import Store
    store = Store("sqlite:////tmp/scratch.db"); store.upgrade()
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, "what changed", autogenerate=True)
"""

from alembic import context
from sqlmodel import SQLModel

import mailwatch.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("mailwatch migrations run through Store.upgrade() (`mailwatch migrate`)")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite lacks most ALTER TABLE
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
