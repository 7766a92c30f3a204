"""Times that cannot be true are cleared from mail stored before mailwatch checked them
(response-clock.md, decision 12): a `Date: 31 Dec 9999` made every evaluation overflow,
and Dovecot's 2038-01-19 for pre-1901 dates hid a message from status and report.  A
time before 1970 or later than a day after this migration runs is cleared; each message
that had one arrives again by the trustworthy times it has left and is evaluated again.

Every other message is re-timed by the same rule too, and evaluated again where its
arrival moves: until 0005 a message arrived when its first stored copy said, and an mbox
`From ` line won over the top Received, so mail imported from an mbox exported days later
"arrived" days late (and a `--now` before the export lost it).

The order of stand-ins is copied from core/times.py as it is at this revision, not
imported: a migration must do tomorrow what it does today.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIEST_TRUSTED = datetime(1970, 1, 1, tzinfo=UTC)
# the migration cannot know when each message was first seen: a day past its own run
# time leaves every real clock's skew alone
LATEST_AFTER_RUN = timedelta(days=1)
MIGRATION_GAP = timedelta(hours=1)  # a Received this much before INTERNALDATE wins
CHUNK = 500

MESSAGE = sa.table(
    "message",
    sa.column("id", sa.Integer),
    sa.column("date", UTCDateTime()),
    sa.column("received_time", UTCDateTime()),
    sa.column("arrived_at", UTCDateTime()),
    sa.column("dirty", sa.Integer),
)
COPY = sa.table(
    "message_copy",
    sa.column("message_id", sa.Integer),
    sa.column("internal_date", UTCDateTime()),
    sa.column("envelope_time", UTCDateTime()),
    sa.column("received_time", UTCDateTime()),
)
# `message.at` is not among them: it is the evaluation's conclusion, which the
# evaluation these messages are marked for writes again
MESSAGE_TIMES = (MESSAGE.c.date, MESSAGE.c.received_time)
COPY_TIMES = (COPY.c.internal_date, COPY.c.envelope_time, COPY.c.received_time)


def upgrade() -> None:
    conn = op.get_bind()
    run_at = datetime.now(UTC)
    latest = run_at + LATEST_AFTER_RUN

    def untrue(column: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
        return sa.or_(column < EARLIEST_TRUSTED, column > latest)

    # the messages whose times change, evaluated again even where their arrival stays
    affected = set(conn.scalars(sa.select(MESSAGE.c.id).where(sa.or_(*map(untrue, MESSAGE_TIMES)))))
    affected.update(
        conn.scalars(sa.select(COPY.c.message_id).where(sa.or_(*map(untrue, COPY_TIMES))))
    )
    for column in MESSAGE_TIMES:
        conn.execute(MESSAGE.update().where(untrue(column)).values({column.name: None}))
    for column in COPY_TIMES:
        conn.execute(COPY.update().where(untrue(column)).values({column.name: None}))
    for ids in _all_ids(conn):
        rearrived = [
            {"row_id": row_id, "arrived": arrived}
            for row_id, (arrived, before) in _arrivals(conn, ids, run_at, latest).items()
            if arrived != before or row_id in affected
        ]
        if rearrived:
            conn.execute(
                MESSAGE.update()
                .where(MESSAGE.c.id == sa.bindparam("row_id"))
                .values(arrived_at=sa.bindparam("arrived"), dirty=MESSAGE.c.dirty + 1),
                rearrived,
            )


def _all_ids(conn: sa.Connection) -> Iterator[list[int]]:
    """Every message id, a chunk at a time."""
    last = 0
    while ids := list(
        conn.scalars(
            sa.select(MESSAGE.c.id).where(MESSAGE.c.id > last).order_by(MESSAGE.c.id).limit(CHUNK)
        )
    ):
        yield ids
        last = ids[-1]


def _arrivals(
    conn: sa.Connection, ids: list[int], run_at: datetime, latest: datetime
) -> dict[int, tuple[datetime, datetime]]:
    """Each message's earliest arrival among its copies, by the trustworthy times left,
    beside its stored arrival."""
    copies: dict[int, list[datetime | None]] = {row_id: [] for row_id in ids}
    for message_id, internal_date, envelope_time, received in conn.execute(
        sa.select(COPY.c.message_id, *COPY_TIMES).where(COPY.c.message_id.in_(ids))
    ):
        copies[message_id].append(_copy_arrival(internal_date, envelope_time, received))
    arrivals: dict[int, tuple[datetime, datetime]] = {}
    for row_id, date, received, arrived_at in conn.execute(
        sa.select(MESSAGE.c.id, *MESSAGE_TIMES, MESSAGE.c.arrived_at).where(MESSAGE.c.id.in_(ids))
    ):
        # a message without copies has only its own headers, as in core/times.py
        own = copies[row_id] or [received]
        known = [moment for moment in (a or date for a in own) if moment is not None]
        if known:
            arrivals[row_id] = min(known), arrived_at
        elif EARLIEST_TRUSTED <= arrived_at <= latest:
            # no time left, and arrived_at was none of them: it is when the message was
            # stored, which is how the store times a message without any
            arrivals[row_id] = arrived_at, arrived_at
        else:
            # The message stays untimed either way (the clock reads its times, not
            # arrived_at); arrived_at only decides when retention deletes it and which
            # `--now` sees it.  When it was stored is lost with the untrue time; this run
            # is the one moment known to be no earlier, so retention never deletes it
            # before its time.
            arrivals[row_id] = run_at, arrived_at
    return arrivals


def _copy_arrival(
    internal_date: datetime | None, envelope_time: datetime | None, received: datetime | None
) -> datetime | None:
    """When one copy arrived by its own times, as core/times.py `copy_arrival` reads them;
    None when only the message's Date could say."""
    if internal_date is not None:
        if received is not None and received < internal_date - MIGRATION_GAP:
            return received
        return internal_date
    return received or envelope_time


def _chunks(values: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def downgrade() -> None:
    """Nothing to undo: the cleared times could not have been true."""
