"""An index for "which outside senders did staff reply to this period?": a digest's
senders nobody configured read every message of the period to find the few from
outside senders (0.1-0.3 s of the digests at a million messages).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HUMAN_OTHER_MAIL = sa.text("role = 'other' AND automated IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_message_human_other_mail",
        "message",
        ["arrived_at"],
        sqlite_where=HUMAN_OTHER_MAIL,
        postgresql_where=HUMAN_OTHER_MAIL,
    )


def downgrade() -> None:
    op.drop_index("ix_message_human_other_mail", table_name="message")
