"""Derived evaluation state, so that only the threads new mail touches are re-evaluated:
the normalised subject, thread and classification of each message, the references
index, the people seen sending from Sent folders, and named state values.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel.sql.sqltypes.AutoString() and UTCDateTime()
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailwatch_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailwatch_state")),
        sa.UniqueConstraint("name", name=op.f("uq_mailwatch_state_name")),
    )
    op.create_table(
        "person",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person")),
        sa.UniqueConstraint("address", name=op.f("uq_person_address")),
    )
    op.create_table(
        "message_ref",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("ref_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name=op.f("fk_message_ref_message_id_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_ref")),
    )
    with op.batch_alter_table("message_ref", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_ref_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_ref_ref_key"), ["ref_key"], unique=False)

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "norm_subject",
                sqlmodel.sql.sqltypes.AutoString(),
                nullable=False,
                server_default="",
            )
        )
        batch_op.add_column(sa.Column("dirty", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(
            sa.Column("responder", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("automated", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("out_of_office", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_message_dirty"), ["dirty"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_norm_subject"), ["norm_subject"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_message_out_of_office"), ["out_of_office"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_message_responder"), ["responder"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_thread_id"), ["thread_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_thread_index"), ["thread_index"], unique=False)

    with op.batch_alter_table("message_copy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_copy_gm_thrid"), ["gm_thrid"], unique=False)

    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_request_thread"), ["thread"], unique=False)

    _fill_subjects_and_references()


def _fill_subjects_and_references() -> None:
    """Messages stored before this revision: their normalised subject and references."""
    from mailwatch.core.conversations import normalise_subject

    conn = op.get_bind()
    message = sa.table(
        "message",
        sa.column("id", sa.Integer),
        sa.column("subject", sa.String),
        sa.column("in_reply_to", sa.JSON),
        sa.column("references", sa.JSON),
        sa.column("norm_subject", sa.String),
    )
    reference = sa.table(
        "message_ref", sa.column("message_id", sa.Integer), sa.column("ref_key", sa.String)
    )
    rows = conn.execute(
        sa.select(message.c.id, message.c.subject, message.c.in_reply_to, message.c.references)
    ).all()
    for row_id, subject, in_reply_to, references in rows:
        conn.execute(
            message.update()
            .where(message.c.id == row_id)
            .values(norm_subject=normalise_subject(subject))
        )
        refs = sorted(set(in_reply_to or []) | set(references or []))
        if refs:
            conn.execute(reference.insert(), [{"message_id": row_id, "ref_key": r} for r in refs])


def downgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_thread"))
        batch_op.drop_index(batch_op.f("ix_request_closed_at"))

    with op.batch_alter_table("message_copy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_copy_gm_thrid"))

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_thread_index"))
        batch_op.drop_index(batch_op.f("ix_message_thread_id"))
        batch_op.drop_index(batch_op.f("ix_message_responder"))
        batch_op.drop_index(batch_op.f("ix_message_out_of_office"))
        batch_op.drop_index(batch_op.f("ix_message_norm_subject"))
        batch_op.drop_index(batch_op.f("ix_message_dirty"))
        batch_op.drop_column("out_of_office")
        batch_op.drop_column("automated")
        batch_op.drop_column("at")
        batch_op.drop_column("responder")
        batch_op.drop_column("role")
        batch_op.drop_column("thread_id")
        batch_op.drop_column("dirty")
        batch_op.drop_column("norm_subject")

    with op.batch_alter_table("message_ref", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_ref_ref_key"))
        batch_op.drop_index(batch_op.f("ix_message_ref_message_id"))

    op.drop_table("message_ref")
    op.drop_table("person")
    op.drop_table("mailwatch_state")
