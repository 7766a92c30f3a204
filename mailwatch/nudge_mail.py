"""What a nudge email says: the template context for one recipient's batch of nudges, and
for the nudges' relatives: the daily still-waiting list and the Directors' escalation.

The templates (templates/nudge.*, still_waiting.*, directors.*) only lay this out;
every number and time is worked out here, in the recipient's timezone, so the text
and HTML parts say exactly the same thing.
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
from mailwatch.core.still_waiting import StillWaitingList
from mailwatch.core.times import arrival

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
    zone = _zone_of(member, policy)
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
        **_addressed(recipient, member, zone),
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


# ---------------------------------------------------------------- the daily still-waiting list


def still_waiting_context(
    entry: StillWaitingList,
    *,
    policy: Policy,
    messages: Mapping[str, Message],
    now: datetime,
    waive_keyword: str = DEFAULT_WAIVE_KEYWORD,
    waive_folder: str = DEFAULT_WAIVE_FOLDER,
) -> dict[str, Any]:
    """Context for `still_waiting.*`: the recipient's own overdue requests, then (for a
    Head) every request overdue by more than `head_overdue_after`, most overdue first."""
    people = {normalise_address(s.email): s for s in policy.staff}
    member = people.get(entry.recipient)
    zone = _zone_of(member, policy)

    def item(request: Request, why: str) -> dict[str, Any]:
        team = [a for a in _answering(request, policy) if a != entry.recipient]
        return _overdue_item(request, messages.get(request.opened_by), zone, now) | {
            "why": why,
            "others_responsible": [_person(a, people) for a in team],
        }

    mine = [item(r.request, r.why) for r in entry.mine]
    for_head = [item(request, "") for request in entry.for_head]
    return {
        **_addressed(entry.recipient, member, zone),
        "day": f"{entry.day:%A} {entry.day.day} {entry.day:%B}",
        "mine": mine,
        "for_head": for_head,
        "head_overdue_after": human_duration(policy.nudges.head_overdue_after.total_seconds()),
        "count": len(mine) + len(for_head),
        "waive_keyword": waive_keyword,
        "waive_folder": waive_folder,
    }


# ---------------------------------------------------------------- the Directors' stage


def directors_context(
    recipient: str,
    nudges: Sequence[Nudge],
    *,
    policy: Policy,
    messages: Mapping[str, Message],
    now: datetime,
    sent_before: Mapping[str, Sequence[SentNudge]],
) -> dict[str, Any]:
    """Context for `directors.*`: each escalated request with its whole story: who answers
    for it, which reminders went to whom and when, and every client message of it.
    `messages` holds every client message of these requests, by key."""
    people = {normalise_address(s.email): s for s in policy.staff}
    member = people.get(normalise_address(recipient))
    zone = _zone_of(member, policy)
    items = []
    for nudge in nudges:
        request = nudge.request
        story = [messages[key] for key in request.messages if key in messages]
        items.append(
            _overdue_item(request, messages.get(request.opened_by), zone, now)
            | _for_head(nudge, policy, people, sent_before.get(request.opened_by, ()), zone)
            | {
                "reasons": list(nudge.reasons),
                "answering": [_person(a, people) for a in _answering(request, policy)],
                "client_messages": [_client_message(m, zone) for m in story],
            }
        )
    return {
        **_addressed(recipient, member, zone),
        "count": len(items),
        "items": items,
        "first": items[0],
    }


def _overdue_item(
    request: Request, opener: Message | None, zone: ZoneInfo, now: datetime
) -> dict[str, Any]:
    return {
        "account": request.account,
        "subject": _one_line(request.subject),
        "sender": _sender(opener),
        "received": _local(request.received_at, zone),
        "deadline": _local(request.deadline, zone),
        "overdue_by": human_duration((request.deadline - now).total_seconds()),  # "overdue by 2h"
        "tier": request.tier,
        "message_id": request.opened_by,
        "waive_command": f"mailwatch waive {shlex.quote(request.opened_by)}",
        "reply_possibly_unseen": request.reply_possibly_unseen,
        "answered_command": f"mailwatch answered {shlex.quote(request.opened_by)} --at DATE",
    }


def _answering(request: Request, policy: Policy) -> list[str]:
    """Everyone who answers for a request: those responsible when it opened, then the
    account's manager and backups, once each."""
    account = next((a for a in policy.accounts if a.name == request.account), None)
    team = [*request.responsible, *((account.manager, *account.backups) if account else ())]
    return list(dict.fromkeys(normalise_address(a) for a in team if a))


def _client_message(message: Message, zone: ZoneInfo) -> dict[str, str]:
    arrived = arrival(message)
    return {
        "subject": _one_line(message.subject),
        "sender": _sender(message),
        "received": _local(arrived[0], zone) if arrived else "time unknown",
    }


def _addressed(recipient: str, member: StaffMember | None, zone: ZoneInfo) -> dict[str, str]:
    """Who an email greets, and the timezone its times are in: what every kind begins with."""
    name = member.name if member and member.name else recipient
    return {"recipient": recipient, "recipient_name": name, "timezone": zone.key}


def _zone_of(member: StaffMember | None, policy: Policy) -> ZoneInfo:
    return ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
