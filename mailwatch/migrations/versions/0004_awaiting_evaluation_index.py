"""The messages awaiting evaluation get a partial index instead of a full index on
`dirty`: with `dirty = 0` on nearly every row, SQLite took the full index for the privacy
reduction's lookups by key and scanned the table once per 500 keys (hours at 1,000,000
messages), and could not use it to find the few dirty messages in arrival order.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWAITING_EVALUATION = sa.text("dirty > 0")


def upgrade() -> None:
    op.drop_index("ix_message_dirty", table_name="message")
    op.create_index(
        "ix_message_awaiting_evaluation",
        "message",
        ["arrived_at", "id"],
        sqlite_where=AWAITING_EVALUATION,
        postgresql_where=AWAITING_EVALUATION,
    )


def downgrade() -> None:
    op.drop_index("ix_message_awaiting_evaluation", table_name="message")
    op.create_index("ix_message_dirty", "message", ["dirty"], unique=False)
