"""Timestamps a message cannot truly carry when first seen are dropped, and only they."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.core.model import Copy, Message
from mailwatch.core.times import trusted_times

SEEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# before 1970, a little after being seen (a clock ahead), and far in the future
MOMENTS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            SEEN - timedelta(days=3),
            SEEN + timedelta(minutes=5),
            SEEN + timedelta(minutes=5, seconds=1),
            datetime(2090, 1, 1, tzinfo=UTC),
        ]
    ),
)


def trusted(moment: datetime | None) -> datetime | None:
    earliest, latest = datetime(1970, 1, 1, tzinfo=UTC), SEEN + timedelta(minutes=5)
    return moment if moment is not None and earliest <= moment <= latest else None


def copy(internal: datetime | None, envelope: datetime | None, received: datetime | None) -> Copy:
    return Copy(
        mailbox="alice",
        folder="INBOX",
        internal_date=internal,
        envelope_time=envelope,
        received_time=received,
    )


@settings(max_examples=300, deadline=None)
@given(MOMENTS, MOMENTS, st.lists(st.tuples(MOMENTS, MOMENTS, MOMENTS), max_size=3))
def test_each_untrustworthy_time_is_dropped_and_a_message_keeping_all_is_the_same_message(
    date: datetime | None,
    received: datetime | None,
    copy_times: list[tuple[datetime | None, datetime | None, datetime | None]],
) -> None:
    copies = tuple(copy(*times) for times in copy_times)
    message = Message(key="<m@acme.example>", date=date, received_time=received, copies=copies)

    found = trusted_times(message, SEEN)

    assert (found.date, found.received_time) == (trusted(date), trusted(received))
    for before, after in zip(copies, found.copies, strict=True):
        times = (before.internal_date, before.envelope_time, before.received_time)
        kept = tuple(trusted(time) for time in times)
        assert (after.internal_date, after.envelope_time, after.received_time) == kept
        assert (after is before) == (kept == times)
    every = [date, received, *(time for times in copy_times for time in times)]
    assert (found is message) == all(trusted(time) == time for time in every)
