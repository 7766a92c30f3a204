"""Indexes on columns mostly NULL (or false) made partial, and one no query used dropped: a
first sync wrote an entry in each for every message (docs/benchmarks.md, step 12).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, column indexed, SQLite condition, PostgreSQL condition); the column the
# full index held is the same but for out_of_office, whose replies are found by time
PARTIAL = (
    ("ix_message_thread_id", "message", "thread_id", "thread_id IS NOT NULL", None),
    ("ix_message_thread_index", "message", "thread_index", "thread_index IS NOT NULL", None),
    ("ix_message_out_of_office", "message", "at", "out_of_office = 1", "out_of_office"),
    ("ix_message_copy_gm_thrid", "message_copy", "gm_thrid", "gm_thrid IS NOT NULL", None),
)
FULL_COLUMN = {"ix_message_out_of_office": "out_of_office"}


def upgrade() -> None:
    op.drop_index("ix_message_responder", table_name="message")
    for name, table, column, sqlite_where, postgresql_where in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(
            name,
            table,
            [column],
            sqlite_where=sa.text(sqlite_where),
            postgresql_where=sa.text(postgresql_where or sqlite_where),
        )


def downgrade() -> None:
    for name, table, column, _, _ in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [FULL_COLUMN.get(name, column)])
    op.create_index("ix_message_responder", "message", ["responder"])
