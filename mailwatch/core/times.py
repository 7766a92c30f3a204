"""Which timestamp to trust (response-clock.md, "Times").

Client `Date` headers are not trusted for arrival: the agency's own server's
INTERNALDATE is.  A migrated or re-uploaded mailbox stamps INTERNALDATE with
the upload time, so a top-most `Received` more than an hour earlier wins.
Imported files have no INTERNALDATE: Received, then the mbox `From ` line,
then Date stand in.  A staff message's `Date` is its send time when it is
plausible against the server's arrival time.

No timestamp is trusted that cannot be true: one from before the Unix epoch, or
later than the moment mailwatch first saw the message plus the skew a `Date` is
allowed (Dovecot reports 2038-01-19 for some pre-1901 dates; a stranger can
write `Date: 31 Dec 9999`).  Such a time is dropped when the message is
stored, so arrival falls back to the next trustworthy time, and no later
computation can overflow.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mailwatch.core.model import Copy, Message

_MIGRATION_GAP = timedelta(hours=1)
_DATE_BEFORE_ARRIVAL = timedelta(hours=48)
_DATE_AFTER_ARRIVAL = timedelta(minutes=5)
# How far apart two messages' times (`sent_at` or `arrival`) can be at most beyond the
# distance between their arrivals: a staff message counts from a Date this near its arrival
SEND_TIME_SPREAD = _DATE_BEFORE_ARRIVAL + _DATE_AFTER_ARRIVAL
_EARLIEST_TRUSTED = datetime(1970, 1, 1, tzinfo=UTC)


def trusted_times(message: Message, seen_at: datetime) -> Message:
    """The message without the timestamps that cannot be true when it is first seen
    at `seen_at`."""
    latest = seen_at + _DATE_AFTER_ARRIVAL

    def trusted(moment: datetime | None) -> datetime | None:
        return moment if moment is None or _EARLIEST_TRUSTED <= moment <= latest else None

    def untrusted(*moments: datetime | None) -> bool:
        return any(trusted(moment) is not moment for moment in moments)

    # nearly every message keeps its times: copied only when one goes (a first sync's
    # thousands of messages)
    copies = tuple(
        replace(
            c,
            internal_date=trusted(c.internal_date),
            envelope_time=trusted(c.envelope_time),
            received_time=trusted(c.received_time),
        )
        if untrusted(c.internal_date, c.envelope_time, c.received_time)
        else c
        for c in message.copies
    )
    if copies == message.copies and not untrusted(message.date, message.received_time):
        return message
    return replace(
        message,
        date=trusted(message.date),
        received_time=trusted(message.received_time),
        copies=copies,
    )


def copy_arrival(message: Message, copy: Copy | None) -> tuple[datetime, str] | None:
    """When this copy arrived, and which timestamp said so (a message known without any
    copy has only its own headers)."""
    received = message.received_time if copy is None else copy.received_time
    if copy is not None and copy.internal_date is not None:
        if received is not None and received < copy.internal_date - _MIGRATION_GAP:
            return received, "received"
        return copy.internal_date, "internaldate"
    if received is not None:
        return received, "received"
    if copy is not None and copy.envelope_time is not None:
        return copy.envelope_time, "mbox"
    if message.date is not None:
        return message.date, "date"
    return None


def arrival(message: Message) -> tuple[datetime, str] | None:
    """The earliest arrival among the message's copies."""
    found = [a for a in (copy_arrival(message, c) for c in message.copies or (None,)) if a]
    return min(found, key=lambda a: a[0]) if found else None


def sent_at(message: Message) -> tuple[datetime, str] | None:
    """A staff message's send time: its Date when plausible, else its arrival."""
    arrived = arrival(message)
    if arrived is None:
        return None
    date = message.date
    if (
        date is not None
        and arrived[0] - _DATE_BEFORE_ARRIVAL <= date <= arrived[0] + _DATE_AFTER_ARRIVAL
    ):
        return date, "date"
    return arrived
