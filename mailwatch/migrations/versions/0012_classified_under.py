"""The policy a message's stored classification was found under: a message is classified as
it is stored, and a first evaluation classifies again only the messages classified under
another policy or changed since (docs/benchmarks.md, step 11).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message") as table:
        table.add_column(
            sa.Column("classified_under", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("message") as table:
        table.drop_column("classified_under")
