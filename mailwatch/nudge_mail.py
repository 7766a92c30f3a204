"""What a nudge email says: the template context for one recipient's batch of nudges.

The templates (templates/nudge.*) only lay this out; every number and time
is worked out here, in the recipient's timezone, so the text and HTML parts
say exactly the same thing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import normalise_address
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Message, Policy, Request, StaffMember
from mailwatch.core.nudges import Nudge

DEFAULT_WAIVE_KEYWORD = "$NoReplyNeeded"
DEFAULT_WAIVE_FOLDER = "No reply needed"


@dataclass(frozen=True)
class SentNudge:
    """A nudge about a request that already went out: which stage, to whom, when."""

    stage: str
    recipient: str
    sent_at: datetime


def nudge_context(
    recipient: str,
    nudges: Sequence[Nudge],
    *,
    policy: Policy,
    messages: Mapping[str, Message],
    now: datetime,
    waiting: Sequence[Request] = (),
    sent_before: Mapping[str, Sequence[SentNudge]] | None = None,
    waive_keyword: str = DEFAULT_WAIVE_KEYWORD,
    waive_folder: str = DEFAULT_WAIVE_FOLDER,
) -> dict[str, Any]:
    """Context for `nudge.*`: `nudges` most urgent first (see `batch_by_recipient`).

    `messages` maps a message key to its Message; the one that opened each
    request names who wrote.  `waiting` are the recipient's other requests
    still waiting for a reply, listed after the nudged ones; `sent_before`
    maps a request's `opened_by` to the nudges about it that already went out,
    which the Head of Client Management's copy lists.
    """
    people = {normalise_address(s.email): s for s in policy.staff}
    member = people.get(normalise_address(recipient))
    zone = ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
    earlier = sent_before or {}
    items = [
        _item(nudge, messages.get(nudge.request.opened_by), zone, now)
        | _for_head(nudge, policy, people, earlier.get(nudge.request.opened_by, ()), zone)
        for nudge in nudges
    ]
    others = [
        _waiting_item(request, messages.get(request.opened_by), zone, now) for request in waiting
    ]
    return {
        "recipient": recipient,
        "recipient_name": member.name if member and member.name else recipient,
        "timezone": zone.key,
        "count": len(items),
        "items": items,
        "first": items[0],
        "others": others,
        "as_head": all(item["as_head"] for item in items),
        "waive_keyword": waive_keyword,
        "waive_folder": waive_folder,
    }


def _item(nudge: Nudge, opener: Message | None, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    request = nudge.request
    left = (request.deadline - now).total_seconds()
    return {
        "account": request.account,
        "subject": _one_line(request.subject),
        "sender": _sender(opener),
        "received": _local(request.received_at, zone),
        "deadline": _local(request.deadline, zone),
        "waited": human_duration((now - request.received_at).total_seconds()),
        "overdue": left < 0,
        "due_now": 0 <= left < 60,  # the breach stage falls due at the deadline itself
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


def _for_head(
    nudge: Nudge,
    policy: Policy,
    people: Mapping[str, StaffMember],
    sent: Sequence[SentNudge],
    zone: ZoneInfo,
) -> dict[str, Any]:
    """Who answers for the request and which reminders went out: what a Head needs to follow
    it up.  A Head who manages or backs up the account is nudged as one of them."""
    request = nudge.request
    account = next((a for a in policy.accounts if a.name == request.account), None)
    team = {normalise_address(a) for a in request.responsible}
    if account:
        team |= {normalise_address(a) for a in (account.manager or "", *account.backups) if a}
    heads = {normalise_address(h) for h in policy.head_of_client_management}
    recipient = normalise_address(nudge.recipient)
    stages: dict[str, list[SentNudge]] = {}
    for reminder in sorted(sent, key=lambda s: s.sent_at):
        stages.setdefault(reminder.stage, []).append(reminder)
    return {
        "as_head": recipient in heads and recipient not in team,
        "responsible": [_person(a, people) for a in request.responsible] or ["nobody"],
        "reminders": [
            f"{stage} to {', '.join(_name(r.recipient, people) for r in sent_to)}, "
            f"{_local(sent_to[0].sent_at, zone)}"
            for stage, sent_to in stages.items()
        ],
    }


def _waiting_item(
    request: Request, opener: Message | None, zone: ZoneInfo, now: datetime
) -> dict[str, Any]:
    left = (request.deadline - now).total_seconds()
    return {
        "account": request.account,
        "subject": _one_line(request.subject),
        "sender": _sender(opener),
        "received": _local(request.received_at, zone),
        "when": human_duration(left) if left < 0 else f"due {_local(request.deadline, zone)}",
    }


def _one_line(subject: str) -> str:
    # a client's subject may carry line breaks, even header-like text
    return " ".join(subject.split()) or "(no subject)"


def _sender(opener: Message | None) -> str:
    address = (opener.from_addr if opener else None) or "unknown sender"
    return f"{opener.from_name} <{address}>" if opener and opener.from_name else address


def _person(address: str, people: Mapping[str, StaffMember]) -> str:
    member = people.get(normalise_address(address))
    return f"{member.name} ({address})" if member and member.name else address


def _name(address: str, people: Mapping[str, StaffMember]) -> str:
    member = people.get(normalise_address(address))
    return member.name if member and member.name else address


def _local(instant: datetime, zone: ZoneInfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
