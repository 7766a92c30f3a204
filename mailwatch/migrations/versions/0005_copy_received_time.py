"""Each copy keeps its own top-most Received header's time: every mailbox's delivery adds
its own, and the earliest arrival among the copies is the one that counts
(response-clock.md, "Times").  Copies stored before knew only their message's (its first
stored copy's), which they keep.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message_copy",
        sa.Column("received_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.execute(
        "UPDATE message_copy SET received_time = "
        "(SELECT received_time FROM message WHERE message.id = message_copy.message_id)"
    )


def downgrade() -> None:
    op.drop_column("message_copy", "received_time")
