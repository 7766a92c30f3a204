"""Who answers for a request: the account manager, or the backups while the manager is away
(on configured leave, or absent as their own out-of-office auto-reply says)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import Directory, normalise_address
from mailwatch.core.automated import is_out_of_office
from mailwatch.core.model import Absence, Classification, Message, Policy, Role


def _local_day(instant: datetime, timezone: str) -> date:
    return instant.astimezone(ZoneInfo(timezone)).date()


class AbsenceIndex:
    """Absences by person and start: which of them cover an instant, without reading them
    all (a first evaluation of years of mail knows tens of thousands)."""

    def __init__(self, absences: Sequence[Absence]) -> None:
        self._of: dict[str, list[tuple[datetime, int, Absence]]] = {}
        for position, absence in enumerate(absences):
            self._of.setdefault(absence.who, []).append((absence.start, position, absence))
        for spans in self._of.values():
            spans.sort(key=lambda span: (span[0], span[1]))
        self._starts = {who: [span[0] for span in spans] for who, spans in self._of.items()}
        self._longest = {
            who: max(span[2].end - span[2].start for span in spans)
            for who, spans in self._of.items()
        }

    def covering(self, who: str, at: datetime) -> Absence | None:
        """The first absence (in the order given) of `who` that covers `at`."""
        spans = self._of.get(who)
        if not spans:
            return None
        starts = self._starts[who]
        low = bisect_left(starts, at - self._longest[who])
        covering = [span for span in spans[low : bisect_right(starts, at)] if at < span[2].end]
        return min(covering, key=lambda span: span[1])[2] if covering else None


def is_away(who: str, at: datetime, policy: Policy, absences: AbsenceIndex) -> str | None:
    """Why `who` is away at `at` (leave or an auto-reply), or None when present."""
    who = normalise_address(who)
    day = _local_day(at, policy.timezone)
    for leave in policy.leave:
        if normalise_address(leave.who) == who and leave.start <= day <= leave.end:
            return f"on leave {leave.start.isoformat()} to {leave.end.isoformat()}"
    absence = absences.covering(who, at)
    return f"out-of-office auto-reply {absence.evidence}" if absence else None


def responsible_for(
    account_name: str,
    at: datetime,
    policy: Policy,
    directory: Directory,
    absences: AbsenceIndex,
) -> tuple[tuple[str, ...], str]:
    """Who answers for a request opened at `at`, and why."""
    account = directory.account(account_name)
    if account.manager is None:
        return tuple(account.backups), "no manager configured"
    manager = normalise_address(account.manager)
    away = is_away(manager, at, policy, absences)
    if away is None or not account.backups:
        return (manager,), "account manager" if away is None else f"manager {away}, no backups"
    present = tuple(b for b in account.backups if is_away(b, at, policy, absences) is None)
    return (present or tuple(account.backups)), f"manager {away}: backups cover"


# ---------------------------------------------------------------- absences


def infer_absences(
    messages: Sequence[Message],
    classes: dict[str, Classification],
    policy: Policy,
    now: datetime,
) -> tuple[Absence, ...]:
    """A staff out-of-office auto-reply: absent until their next human sent mail (≤ 7 days)."""
    human_sent: dict[str, list[datetime]] = {}
    auto_replies = []
    for message in messages:
        c = classes[message.key]
        if c.role is not Role.STAFF or c.at is None or c.responder is None:
            continue
        if c.automated is None:
            human_sent.setdefault(c.responder, []).append(c.at)
        elif is_out_of_office(message, policy):
            auto_replies.append((c.at, c.responder, message.key))
    absences = []
    for start, who, key in sorted(auto_replies):
        end = start + policy.absence_max
        later = [t for t in human_sent.get(who, ()) if t > start]
        if later:
            end = min(end, min(later))
        if start <= now:
            absences.append(Absence(who=who, start=start, end=end, evidence=key))
    return tuple(absences)
