"""What a nudge email says: the template context for one recipient's batch of nudges.

The templates (templates/nudge.*) only lay this out; every number and time
is worked out here, in the recipient's timezone, so the text and HTML parts
say exactly the same thing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import normalise_address
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Message, Policy
from mailwatch.core.nudges import Nudge

DEFAULT_WAIVE_KEYWORD = "$NoReplyNeeded"


def nudge_context(
    recipient: str,
    nudges: Sequence[Nudge],
    *,
    others_waiting: int,
    policy: Policy,
    messages: Mapping[str, Message],
    now: datetime,
    waive_keyword: str = DEFAULT_WAIVE_KEYWORD,
) -> dict[str, Any]:
    """Context for `nudge.*`: `nudges` most urgent first (see `batch_by_recipient`).

    `messages` maps a message key to its Message; the one that opened each
    request names who wrote.  `others_waiting` counts the recipient's other
    open requests, mentioned but not listed again.
    """
    member = next(
        (s for s in policy.staff if normalise_address(s.email) == normalise_address(recipient)),
        None,
    )
    zone = ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
    items = [_item(nudge, messages.get(nudge.request.opened_by), zone, now) for nudge in nudges]
    return {
        "recipient": recipient,
        "recipient_name": member.name if member and member.name else recipient,
        "timezone": zone.key,
        "count": len(items),
        "items": items,
        "first": items[0],
        "others_waiting": others_waiting,
        "waive_keyword": waive_keyword,
    }


def _item(nudge: Nudge, opener: Message | None, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    request = nudge.request
    left = (request.deadline - now).total_seconds()
    return {
        "account": request.account,
        # one line: a client's subject may carry line breaks, even header-like text
        "subject": " ".join(request.subject.split()) or "(no subject)",
        "sender_name": opener.from_name if opener else "",
        "sender_address": (opener.from_addr if opener else None) or "unknown sender",
        "received": _local(request.received_at, zone),
        "deadline": _local(request.deadline, zone),
        "waited": human_duration((now - request.received_at).total_seconds()),
        "overdue": left < 0,
        "time_left": human_duration(left),  # "1h 40m" or "overdue by 45m"
        "tier": request.tier,
        "stage": nudge.stage,
        "critical": nudge.critical,
        "reasons": list(nudge.reasons),
        "message_id": request.opened_by,
        "waive_command": f"mailwatch waive {shlex.quote(request.opened_by)}",
        "reply_possibly_unseen": request.reply_possibly_unseen,
        "answered_command": f"mailwatch answered {shlex.quote(request.opened_by)} --at DATE",
    }


def _local(instant: datetime, zone: ZoneInfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
