"""Outside senders nobody configured (issue 14): people staff replied to who belong to no
account and are not staff, so the configuration can catch up.  `status` lists those seen in
the last `RECENT` days (long enough to span a holiday, short enough that a sender already
dealt with drops off); the agency digest, those seen in its period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import domain_of
from mailwatch.output import iso
from mailwatch.store.repository import Store, UnconfiguredSender

RECENT = timedelta(days=30)
LISTED = 10  # in the `status` table; the JSON has them all


def recent_unconfigured(store: Store, now: datetime) -> list[UnconfiguredSender]:
    """Those seen in the `RECENT` days up to `now` (mail arrived by `now` included)."""
    return store.unconfigured_senders(now - RECENT, now + timedelta(seconds=1))


def unconfigured_json(senders: Sequence[UnconfiguredSender]) -> list[dict[str, Any]]:
    return [
        {
            "address": sender.address,
            "domain": domain_of(sender.address),
            "messages": sender.messages,
            "last_seen": iso(sender.last_seen),
        }
        for sender in senders
    ]


def unconfigured_lines(senders: Sequence[UnconfiguredSender], timezone: str) -> list[str]:
    """For the `status` table: a short list after the requests."""
    if not senders:
        return []
    zone = ZoneInfo(timezone)
    lines = [
        f"Outside senders staff replied to in the last {RECENT.days} days who belong to no "
        "account (add them to [[accounts]]?):"
    ]
    for sender in senders[:LISTED]:
        seen = sender.last_seen.astimezone(zone)
        lines.append(
            f"  {sender.address} ({domain_of(sender.address)}): {sender.messages} message(s), "
            f"last {seen:%Y-%m-%d %H:%M}"
        )
    if len(senders) > LISTED:
        lines.append(f"  … and {len(senders) - LISTED} more (`mailwatch status --format json`)")
    return lines
