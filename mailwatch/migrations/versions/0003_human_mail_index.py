"""An index for "when did this person next send human mail?": absences inferred from
out-of-office replies ask it once per reply, which scanned all of that person's mail.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HUMAN_STAFF_MAIL = sa.text("role = 'staff' AND automated IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_message_human_staff_mail",
        "message",
        ["responder", "at"],
        sqlite_where=HUMAN_STAFF_MAIL,
        postgresql_where=HUMAN_STAFF_MAIL,
    )


def downgrade() -> None:
    op.drop_index("ix_message_human_staff_mail", table_name="message")
