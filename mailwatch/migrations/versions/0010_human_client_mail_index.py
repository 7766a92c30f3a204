"""An index for "when did each client last write?": the accounts gone quiet in a digest
asked it of every client message stored, a scan of most of the mail.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HUMAN_CLIENT_MAIL = sa.text("role = 'client' AND automated IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_message_human_client_mail",
        "message",
        ["from_addr", "arrived_at"],
        sqlite_where=HUMAN_CLIENT_MAIL,
        postgresql_where=HUMAN_CLIENT_MAIL,
    )


def downgrade() -> None:
    op.drop_index("ix_message_human_client_mail", table_name="message")
