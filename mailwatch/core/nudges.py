"""Which nudges are due now, to whom, and which must wait, be skipped or be refused.

The ladder (response-clock.md, "Nudges"): at 75% of a request's target its
account manager, at 90% the manager and the backups, at 100% also the Head of
Client Management.  A manager who is away is replaced by the backups; when
nobody responsible is present, the head is told.  Quiet hours hold a nudge
until they end unless the deadline falls first, and a nudge is never sent late.

The Directors' stage (`due_escalations`) follows the same rules: a request still
waiting `directors_after` past its deadline goes once to each of `policy.directors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import domain_of, normalise_address
from mailwatch.core.calendar import instant_after
from mailwatch.core.durations import human_duration
from mailwatch.core.model import (
    Absence,
    Account,
    ClockKind,
    NudgePolicy,
    NudgeStage,
    Policy,
    Request,
    Status,
)

ClaimKey = tuple[str, str, str]

DIRECTORS_STAGE = "directors"

_NAGGABLE = (Status.OPEN, Status.OVERDUE)


@dataclass(frozen=True)
class Nudge:
    request: Request
    stage: str
    recipient: str
    due_at: datetime
    critical: bool
    reasons: tuple[str, ...]

    @property
    def claim_key(self) -> ClaimKey:
        return (self.request.opened_by, self.stage, self.recipient)


@dataclass(frozen=True)
class NudgePlan:
    send: list[Nudge] = field(default_factory=list)  # due now: claim, then send
    skipped: list[Nudge] = field(default_factory=list)  # fell due too long ago: log, digest
    held: list[Nudge] = field(default_factory=list)  # due, but the recipient's quiet hours
    refused: list[Nudge] = field(default_factory=list)  # the recipient is not safe to write to


def stage_due_at(request: Request, stage: NudgeStage, policy: Policy) -> datetime:
    """When `stage` falls due: `stage.at` of the target elapsed on the request's clock."""
    seconds = stage.at * request.target_seconds
    if request.clock is ClockKind.BUSINESS:
        account = _account(policy, request.account)
        hours = account.business_hours if account and account.business_hours else None
        return instant_after(hours or policy.business_hours, request.received_at, seconds)
    return request.received_at + timedelta(seconds=seconds)


def due_nudges(
    requests: Iterable[Request],
    policy: Policy,
    absences: Sequence[Absence],
    already_claimed: set[ClaimKey],
    now: datetime,
) -> NudgePlan:
    plan = NudgePlan()
    if not policy.nudges.enabled:
        return plan
    people = People(policy, absences, now)
    for request in requests:
        if request.status not in _NAGGABLE or (request.closed_at and request.closed_at <= now):
            continue
        for nudge in _highest_due_per_recipient(request, policy, people, now):
            if nudge.claim_key not in already_claimed:
                _file(plan, nudge, policy.nudges, people.zone(nudge.recipient), now)
    _refuse_unsafe(plan, policy)
    return plan


def directors_after(request: Request, policy: Policy) -> timedelta | None:
    """How long past its deadline a request goes to the Directors: its tier's, else the
    agency's; None when it never does."""
    tier = next((t for t in policy.tiers if t.name == request.tier), None)
    if tier is not None and tier.directors_after is not None:
        return tier.directors_after
    return policy.nudges.directors_after


def due_escalations(
    requests: Iterable[Request],
    policy: Policy,
    absences: Sequence[Absence],
    already_claimed: set[ClaimKey],
    now: datetime,
) -> NudgePlan:
    """The Directors' stage: like a ladder stage (held in quiet hours, skipped when late,
    refused to anyone not staff), but past the deadline and to `policy.directors` only."""
    plan = NudgePlan()
    if not policy.nudges.enabled or not policy.directors:
        return plan
    people = People(policy, absences, now)
    critical_tiers = {t.lower() for t in policy.nudges.critical_tiers}
    for request in requests:
        after = directors_after(request, policy)
        if (
            after is None
            or request.status not in _NAGGABLE
            or (request.closed_at and request.closed_at <= now)
            or request.deadline + after > now
        ):
            continue
        late = human_duration((now - request.deadline).total_seconds())
        limit = human_duration(after.total_seconds())
        why = f"{DIRECTORS_STAGE}: {late} past the deadline (escalated after {limit})"
        for director in dict.fromkeys(people.main(d) for d in policy.directors):
            nudge = Nudge(
                request,
                DIRECTORS_STAGE,
                director,
                request.deadline + after,
                request.tier.lower() in critical_tiers,
                (why,),
            )
            if nudge.claim_key not in already_claimed:
                _file(plan, nudge, policy.nudges, people.zone(director), now)
    _refuse_unsafe(plan, policy)
    return plan


def batch_by_recipient(nudges: Iterable[Nudge]) -> dict[str, list[Nudge]]:
    """One list per recipient, overdue requests first, then the least time left."""
    batches: dict[str, list[Nudge]] = {}
    for nudge in sorted(nudges, key=lambda n: n.recipient):
        batches.setdefault(nudge.recipient, []).append(nudge)
    for batch in batches.values():
        batch.sort(key=_urgency)
    return batches


def _urgency(nudge: Nudge) -> tuple[bool, datetime, datetime]:
    request = nudge.request
    return (request.status is not Status.OVERDUE, request.deadline, request.received_at)


# ---------------------------------------------------------------- the ladder


def _highest_due_per_recipient(
    request: Request, policy: Policy, people: People, now: datetime
) -> list[Nudge]:
    """For each recipient, the highest stage due by now that names them (lower ones are moot)."""
    account = _account(policy, request.account)
    stages = sorted(policy.nudges.stages, key=lambda s: s.at)
    critical = request.tier.lower() in {t.lower() for t in policy.nudges.critical_tiers}
    elapsed = (
        f"{human_duration(request.elapsed_seconds)} of {human_duration(request.target_seconds)}"
        f" elapsed{' (business time)' if request.clock is ClockKind.BUSINESS else ''}"
    )
    chosen: dict[str, Nudge] = {}
    for stage in stages:
        due_at = stage_due_at(request, stage, policy)
        if due_at > now:
            break
        for recipient, why in _recipients(stage, account, policy, people):
            reasons = (f"{stage.name}: {elapsed}", *why)
            chosen[recipient] = Nudge(request, stage.name, recipient, due_at, critical, reasons)
    return list(chosen.values())


def _recipients(
    stage: NudgeStage, account: Account | None, policy: Policy, people: People
) -> list[tuple[str, tuple[str, ...]]]:
    """(address, why) for one stage, after replacing whoever is away."""
    name = account.name if account else None
    manager = people.main(account.manager) if account and account.manager else None
    backups = [people.main(b) for b in account.backups] if account else []
    found: dict[str, list[str]] = {}
    responsible_named = False
    if "manager" in stage.notify:
        responsible_named = True
        away = people.away(manager) if manager else None
        if manager and away is None:
            found.setdefault(manager, []).append(f"you manage {name}")
        else:
            gone = f"manager {_short(manager, policy)} {away}" if manager else "no manager"
            for backup in backups:
                if people.away(backup) is None:
                    found.setdefault(backup, []).append(f"{gone} → backups")
    if "backups" in stage.notify:
        responsible_named = True
        for backup in backups:
            if people.away(backup) is None:
                found.setdefault(backup, []).append(f"you are a backup for {name}")
    if "head" in stage.notify or (responsible_named and not found):
        why = "Head of Client Management"
        if not found and responsible_named:
            why = f"nobody responsible for {name or 'this account'} is present → head"
        for head in policy.head_of_client_management:
            found.setdefault(people.main(head), []).append(why)
    return [(address, tuple(why)) for address, why in found.items()]


class People:
    """Staff as the ladder sees them: main address, timezone, and who is away now."""

    def __init__(self, policy: Policy, absences: Sequence[Absence], now: datetime):
        self._policy = policy
        self._now = now
        self._today = now.astimezone(ZoneInfo(policy.timezone)).date()
        self._absences = absences
        self._main = {
            normalise_address(address): normalise_address(member.email)
            for member in policy.staff
            for address in (member.email, *member.aliases)
        }
        self._zones = {
            normalise_address(member.email): member.timezone
            for member in policy.staff
            if member.timezone
        }

    def main(self, address: str) -> str:
        """A staff member's main address (aliases map to their `[[staff]]` email)."""
        address = normalise_address(address)
        return self._main.get(address, address)

    def zone(self, address: str) -> ZoneInfo:
        return ZoneInfo(self._zones.get(address, self._policy.timezone))

    def away(self, who: str) -> str | None:
        """Why `who` is away now ("on leave until 2 Jan"), or None when present."""
        for leave in self._policy.leave:
            if self.main(leave.who) == who and leave.start <= self._today <= leave.end:
                return f"on leave until {_day(leave.end)}"
        for absence in self._absences:
            if self.main(absence.who) == who and absence.start <= self._now < absence.end:
                return "away (out-of-office reply)"
        return None


# ---------------------------------------------------------------- quiet hours and lateness


def _file(plan: NudgePlan, nudge: Nudge, rules: NudgePolicy, zone: ZoneInfo, now: datetime) -> None:
    """Put one due nudge into send, held or skipped."""
    quiet = _Quiet(rules, zone)
    quiet_end = None if nudge.critical else quiet.end_of_period(now)
    if quiet_end is not None and _held_by(quiet_end, nudge):
        until = quiet_end.astimezone(zone)
        why = f"held: quiet hours ({zone.key}) until {until:%a} {until:%H:%M}"
        plan.held.append(_with_reason(nudge, why))
        return
    lateness = _lateness(nudge, quiet, now)
    if lateness > rules.max_lateness:
        due = nudge.due_at.astimezone(zone)
        limit = human_duration(rules.max_lateness.total_seconds())
        why = f"skipped: fell due {due:%a} {due:%H:%M}, more than {limit} ago"
        plan.skipped.append(_with_reason(nudge, why))
        return
    if nudge.critical:
        nudge = _with_reason(nudge, f"critical tier {nudge.request.tier}: sent at any hour")
    elif quiet_end is not None:
        nudge = _with_reason(nudge, "sent in quiet hours: the deadline falls before they end")
    plan.send.append(nudge)


def _lateness(nudge: Nudge, quiet: _Quiet, now: datetime) -> timedelta:
    """Time since the stage fell due, not counting quiet hours that held it back."""
    if nudge.critical:
        return now - nudge.due_at
    late = timedelta()
    moment = nudge.due_at
    limit = quiet.rules.max_lateness
    while moment < now and late <= limit:
        quiet_end = quiet.end_of_period(moment)
        if quiet_end is None:
            step_end = min(quiet.next_start(moment) or now, now)
            late += step_end - moment
        else:
            step_end = min(quiet_end, now)
            if not _held_by(quiet_end, nudge):
                late += step_end - moment
        moment = step_end
    return late


def _held_by(quiet_end: datetime, nudge: Nudge) -> bool:
    """Whether quiet hours that end at `quiet_end` hold a (non-critical) nudge back: unless
    the deadline falls before they end.  An escalation comes after the deadline, so there
    is nothing left to beat: the Directors hear of it when their quiet hours end."""
    return nudge.stage == DIRECTORS_STAGE or nudge.request.deadline >= quiet_end


class _Quiet:
    """The recipient's quiet hours: nights (quiet_start..quiet_end) and, optionally, weekends.

    Worked on local wall-clock times, so a DST change moves the UTC instants,
    not the hours; consecutive quiet spans (Friday night, the weekend, Sunday
    night) merge into one period that ends on Monday morning.
    """

    def __init__(self, rules: NudgePolicy, zone: ZoneInfo):
        self.rules = rules
        self._zone = zone

    def end_of_period(self, instant: datetime) -> datetime | None:
        """The end (UTC) of the quiet period around `instant`, or None when it is not quiet."""
        local = instant.astimezone(self._zone).replace(tzinfo=None)
        span = next((s for s in self._spans(local.date()) if s[0] <= local < s[1]), None)
        if span is None:
            return None
        end = span[1]
        for _ in range(7):
            following = self._spans(end.date())
            if end.time() != datetime.min.time() or not following or following[0][0] != end:
                break
            end = following[0][1]
        return self._utc(end)

    def next_start(self, instant: datetime) -> datetime | None:
        """The next instant (UTC) after `instant` at which quiet hours begin."""
        local = instant.astimezone(self._zone).replace(tzinfo=None)
        for offset in range(8):
            for start, _ in self._spans(local.date() + timedelta(days=offset)):
                if start > local:
                    return self._utc(start)
        return None

    def _spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """Quiet spans of one local day, as naive local times, merged and in order."""
        midnight = datetime.combine(day, datetime.min.time())
        next_midnight = midnight + timedelta(days=1)
        if self.rules.quiet_weekends and day.weekday() >= 5:
            return [(midnight, next_midnight)]
        start = datetime.combine(day, self.rules.quiet_start)
        end = datetime.combine(day, self.rules.quiet_end)
        if start == end:
            return []
        if start < end:
            return [(start, end)]
        return [(midnight, end), (start, next_midnight)]

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self._zone).astimezone(UTC)


# ---------------------------------------------------------------- the safety net


def _refuse_unsafe(plan: NudgePlan, policy: Policy) -> None:
    """Move every nudge whose recipient is not plainly staff, or is a client, to `refused`.

    Checked last and on its own, whatever the configuration says: mailwatch
    must never write to a client, even when an address is listed as both.
    """
    for bucket in (plan.send, plan.held):
        safe = []
        for nudge in bucket:
            problem = _unsafe_recipient(nudge.recipient, policy)
            if problem:
                plan.refused.append(_with_reason(nudge, f"refused: {problem}"))
            else:
                safe.append(nudge)
        bucket[:] = safe


def _unsafe_recipient(address: str, policy: Policy) -> str | None:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in ',;<>"' for c in address):
        return f"{address!r} is not a plain e-mail address"
    for account in policy.accounts:
        listed = {normalise_address(a) for a in account.addresses}
        if address in listed or any(_within(domain, d) for d in account.domains):
            return f"{address} is an address of client account {account.name}"
    staff = {
        normalise_address(a) for member in policy.staff for a in (member.email, *member.aliases)
    }
    if address not in staff and domain not in {d.lower() for d in policy.agency_domains}:
        return f"{address} is not a staff address"
    return None


def _within(domain: str, client_domain: str) -> bool:
    client_domain = client_domain.lower()
    return domain == client_domain or domain.endswith("." + client_domain)


# ---------------------------------------------------------------- small helpers


def _account(policy: Policy, name: str) -> Account | None:
    return next((a for a in policy.accounts if a.name == name), None)


def _with_reason(nudge: Nudge, reason: str) -> Nudge:
    return replace(nudge, reasons=(*nudge.reasons, reason))


def _short(address: str | None, policy: Policy) -> str:
    """`alice@` for agency addresses: the reader knows the domain."""
    if address and domain_of(address) in {d.lower() for d in policy.agency_domains}:
        return address.rpartition("@")[0] + "@"
    return address or ""


def _day(day: date) -> str:
    return f"{day.day} {day:%b}"
