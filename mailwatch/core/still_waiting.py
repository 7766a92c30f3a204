"""Who gets a "still waiting" list this morning, and what is on it.

A reminder is never sent late, but an overdue request must not fall silent:
on a working day, from `[nudges] still_waiting_at` in the recipient's
timezone, each person responsible for an overdue request who is present gets
one list of all of them, and each Head of Client Management one of every
request overdue by more than `head_overdue_after`.  The list is the morning's:
what was overdue at `still_waiting_at` and still is (a request that breaches
later that day had its breach nudge, and is on the next morning's list).  At
most one a day per person: a list is claimed under the recipient's local date.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from mailwatch.core.calendar import is_open_day
from mailwatch.core.model import Absence, Policy, Request, Status
from mailwatch.core.nudges import People

# (recipient, their local date as YYYY-MM-DD): one list a day
ListKey = tuple[str, str]


@dataclass(frozen=True)
class Responsibility:
    """One overdue request on a person's list, and why it is theirs."""

    request: Request
    why: str  # "you manage Acme Ltd", "manager alice@ on leave until 2 Dec → backups"


@dataclass(frozen=True)
class StillWaitingList:
    recipient: str
    day: date  # the recipient's local date: the list's claim key
    mine: tuple[Responsibility, ...]  # the overdue requests they answer for, most overdue first
    # as a Head: overdue by more than head_overdue_after, but for those already in `mine`
    for_head: tuple[Request, ...]

    @property
    def key(self) -> ListKey:
        return (self.recipient, self.day.isoformat())


def due_lists(
    requests: Iterable[Request],
    policy: Policy,
    absences: Sequence[Absence],
    already_sent: set[ListKey],
    now: datetime,
) -> list[StillWaitingList]:
    """The lists due now and not yet claimed, by recipient; none that would be empty."""
    if not policy.nudges.enabled:
        return []
    people = People(policy, absences, now)
    overdue = sorted(
        (r for r in requests if _overdue(r, now)), key=lambda r: (r.deadline, r.received_at)
    )
    mine: dict[str, list[Responsibility]] = {}
    for request in overdue:
        for person, why in _answering_for(request, policy, people):
            mine.setdefault(person, []).append(Responsibility(request, why))
    heads = {people.main(head) for head in policy.head_of_client_management}
    lists = []
    for recipient in sorted(set(mine) | heads):
        zone = people.zone(recipient)
        day = now.astimezone(zone).date()
        morning = datetime.combine(day, policy.nudges.still_waiting_at, zone)
        if now < morning or not is_open_day(policy.business_hours, day):
            continue
        # This morning's list: what was overdue then (the breach nudge told of the rest).
        own = tuple(r for r in mine.get(recipient, ()) if r.request.deadline < morning)
        listed = {r.request.opened_by for r in own}  # a Head's own are not listed twice
        entry = StillWaitingList(
            recipient,
            day,
            own,
            tuple(
                r
                for r in overdue
                if recipient in heads
                and r.deadline + policy.nudges.head_overdue_after < morning
                and r.opened_by not in listed
            ),
        )
        if (entry.mine or entry.for_head) and entry.key not in already_sent:
            if people.away(recipient) is None:
                lists.append(entry)
    return lists


def _overdue(request: Request, now: datetime) -> bool:
    closed = request.closed_at is not None and request.closed_at <= now
    return request.status is Status.OVERDUE and not closed


def _answering_for(request: Request, policy: Policy, people: People) -> list[tuple[str, str]]:
    """(person, why) for those present who answer for the request today: whoever was
    responsible when it opened and the account's manager; the backups when all are away."""
    account = next((a for a in policy.accounts if a.name == request.account), None)
    name = account.name if account else request.account
    named = {people.main(a): "you were responsible when it arrived" for a in request.responsible}
    if account and account.manager:
        named[people.main(account.manager)] = f"you manage {name}"
    present = [(person, why) for person, why in named.items() if people.away(person) is None]
    if present or account is None:
        return present
    gone = "; ".join(f"{person} {people.away(person)}" for person in named) or "no manager"
    return [
        (backup, f"{gone} → you are a backup for {name}")
        for backup in dict.fromkeys(people.main(b) for b in account.backups)
        if people.away(backup) is None
    ]
