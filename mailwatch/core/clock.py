"""The response clock: from messages to measured requests (response-clock.md).

`evaluate` is the whole of it: classify every message, thread them, walk each
thread per client account to open, join, answer, waive and expire requests,
and give each request its status as of `now`.  It is a pure function of its
inputs, so processing order, re-runs and late mail cannot change a result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache

from mailwatch.core.addresses import Directory
from mailwatch.core.calendar import business_seconds, instant_after
from mailwatch.core.classification import classify, counted_from, people_seen_sending
from mailwatch.core.conversations import thread_messages
from mailwatch.core.correspondents import unknown_correspondents, unlisted_senders
from mailwatch.core.model import (
    Absence,
    BusinessHours,
    Classification,
    ClockKind,
    Copy,
    Message,
    Policy,
    RecordedAnswer,
    Request,
    Role,
    Status,
    Tier,
    Waiver,
    WaiverVia,
)
from mailwatch.core.responsibility import AbsenceIndex, infer_absences, responsible_for
from mailwatch.core.times import arrival, copy_arrival
from mailwatch.core.unseen import with_unseen_replies

STANDARD_TIER = "standard"


@dataclass(frozen=True)
class Evaluation:
    now: datetime
    requests: tuple[Request, ...]
    classifications: dict[str, Classification]
    thread_of: dict[str, str]
    absences: tuple[Absence, ...]
    people: frozenset[str]  # staff seen sending human mail from a Sent folder: persons
    untimed: tuple[str, ...]  # keys of messages with no usable timestamp at all
    unlisted_senders: tuple[str, ...]  # agency addresses that wrote to clients but cannot answer
    unknown_correspondents: tuple[str, ...]  # outside senders staff replied to: missing accounts?


# ---------------------------------------------------------------- inputs


def merge_copies(messages: Iterable[Message]) -> list[Message]:
    """One message per key, with the copies of every duplicate (a CC'd colleague, Sent + inbox)."""
    merged: dict[str, Message] = {}
    for message in messages:
        seen = merged.get(message.key)
        if seen is None:
            merged[message.key] = message
        else:
            copies = seen.copies + tuple(c for c in message.copies if c not in seen.copies)
            merged[message.key] = replace(seen, copies=copies)
    return sorted(merged.values(), key=lambda m: m.key)


def _as_of(message: Message, now: datetime) -> Message | None:
    """The message as it was known at `now`: copies that had not yet arrived are dropped."""
    copies = []
    for copy in message.copies:
        single = copy_arrival(message, copy)
        if single is not None and single[0] > now:
            continue
        if copy.waive_seen_at is not None and copy.waive_seen_at > now:
            copy = replace(copy, waive_keyword=False, waive_folder=False, waive_seen_at=None)
        copies.append(copy)
    if message.copies and not copies:
        return None
    # nearly always unchanged: no copy made (a first evaluation reads every message)
    known = message if tuple(copies) == message.copies else replace(message, copies=tuple(copies))
    arrived = arrival(known)
    if arrived is not None and arrived[0] > now:
        return None
    return known


# ---------------------------------------------------------------- tiers and deadlines


@dataclass(frozen=True)
class _Proposal:
    tier: str
    clock: ClockKind
    hours: BusinessHours
    deadline: datetime


_PRIORITY_HEADERS = (
    ("importance", re.compile(r"^\s*high\b", re.I)),
    ("x-priority", re.compile(r"^\s*[12]\b")),
    ("priority", re.compile(r"^\s*urgent\b", re.I)),
)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_high_priority(message: Message) -> bool:
    return any(
        (value := message.header(name)) is not None and pattern.search(value)
        for name, pattern in _PRIORITY_HEADERS
    )


def matching_tier(message: Message, policy: Policy) -> Tier | None:
    """The first tier whose rules match this client message."""
    for tier in policy.tiers:
        if any(_compiled(p).search(message.subject) for p in tier.subject_patterns):
            return tier
        if tier.high_priority and _is_high_priority(message):
            return tier
    return None


def _deadline(
    clock: ClockKind, hours: BusinessHours, start: datetime, target: timedelta
) -> datetime:
    if clock is ClockKind.BUSINESS:
        return instant_after(hours, start, target.total_seconds())
    return start + target


def on_clock(clock: ClockKind, hours: BusinessHours, start: datetime, end: datetime) -> int:
    """Seconds between two instants on a clock (never negative)."""
    if clock is ClockKind.BUSINESS:
        return round(business_seconds(hours, start, end))
    return max(0, round((end - start).total_seconds()))


def _propose(
    message: Message, received_at: datetime, account_name: str, policy: Policy, directory: Directory
) -> _Proposal:
    account = directory.account(account_name)
    clock = account.clock or policy.clock
    hours = account.business_hours or policy.business_hours
    target = account.target or policy.target
    name = STANDARD_TIER
    tier = matching_tier(message, policy)
    if tier is not None:
        name, target, clock = tier.name, tier.target, tier.clock or clock
    return _Proposal(name, clock, hours, _deadline(clock, hours, received_at, target))


# ---------------------------------------------------------------- requests


@dataclass
class _Open:
    account: str
    thread: str
    subject: str
    opened_by: str
    received_at: datetime
    proposal: _Proposal
    responsible: tuple[str, ...]
    messages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    waiver: Waiver | None = None  # the earliest waiver of any of its client messages
    waived_at: datetime | None = None  # from then on it is closed: later mail is not its own
    recorded_answer: RecordedAnswer | None = None  # given outside email, not yet reached

    @property
    def deadline(self) -> datetime:
        return self.proposal.deadline

    def ends_at(self, policy: Policy) -> datetime:
        """When it closes unless answered first: waived, or expired unanswered."""
        expiry = self.deadline + policy.request_expiry
        return min(expiry, self.waived_at) if self.waived_at else expiry


def _ordered(thread: list[Message], classes: dict[str, Classification]) -> list[Message]:
    """Thread messages in time order, where a reply never precedes what it quotes.

    A skewed `Date` can put a reply before the client message it answers;
    ordering by "not before anything it references" keeps it after.
    """
    by_key = {m.key: m for m in thread}
    effective: dict[str, datetime] = {}

    def settle(key: str, visiting: frozenset[str]) -> datetime:
        if key in effective:
            return effective[key]
        message = by_key[key]
        at = classes[key].at
        assert at is not None
        for ref in (*message.in_reply_to, *message.references):
            if ref in by_key and ref not in visiting:
                at = max(at, settle(ref, visiting | {key}))
        effective[key] = at
        return at

    rank = {Role.CLIENT: 0, Role.STAFF: 1, Role.OTHER: 2}
    return sorted(
        thread,
        key=lambda m: (
            settle(m.key, frozenset()),
            rank[classes[m.key].role],
            classes[m.key].at,
            m.key,
        ),
    )


def _waiver_for(message: Message, waivers: dict[str, Waiver]) -> Waiver | None:
    if message.key in waivers:
        return waivers[message.key]
    flagged: list[Copy] = [c for c in message.copies if c.waive_keyword or c.waive_folder]
    if not flagged:
        return None
    first = min(flagged, key=lambda c: (c.waive_seen_at is None, c.waive_seen_at))
    via = WaiverVia.KEYWORD if first.waive_keyword else WaiverVia.FOLDER
    arrived = arrival(message)
    seen = first.waive_seen_at or (arrived[0] if arrived else None)
    assert seen is not None  # only timed messages reach the request walk
    return Waiver(message.key, by=first.mailbox, seen_at=seen, via=via)


@dataclass
class _Chain:
    """The request chain of one account in one thread."""

    account: str
    open: _Open | None = None
    answered_before: bool = False
    done: list[Request] = field(default_factory=list)


def _close(
    chain: _Chain,
    *,
    now: datetime,
    answer: tuple[Message, Classification] | None = None,
    waiver: Waiver | None = None,
    closed_at: datetime | None = None,
) -> None:
    request = chain.open
    assert request is not None
    chain.done.append(_finish(request, now=now, answer=answer, waiver=waiver, closed_at=closed_at))
    chain.open = None


def _finish(
    request: _Open,
    *,
    now: datetime,
    answer: tuple[Message, Classification] | None = None,
    waiver: Waiver | None = None,
    closed_at: datetime | None = None,
) -> Request:
    proposal = request.proposal
    target = on_clock(proposal.clock, proposal.hours, request.received_at, proposal.deadline)
    unanswered = Request(
        account=request.account,
        thread=request.thread,
        subject=request.subject,
        opened_by=request.opened_by,
        received_at=request.received_at,
        messages=tuple(request.messages),
        tier=proposal.tier,
        clock=proposal.clock,
        target_seconds=target,
        deadline=proposal.deadline,
        responsible=request.responsible,
        notes=tuple(request.notes),
        status=Status.OPEN,
        closed_at=closed_at,
    )
    if answer is not None:
        message, c = answer
        assert c.at is not None
        response = on_clock(proposal.clock, proposal.hours, request.received_at, c.at)
        answered = replace(
            unanswered,
            status=Status.MET if response <= target else Status.BREACHED,
            answered_by=message.key,
            answered_at=c.at,
            answered_via="email",
            responder=c.responder,
            response_seconds=response,
            elapsed_seconds=response,
            closed_at=c.at,
        )
        # a forced waiver: the answer stays visible, the figures leave it out
        return (
            answered if waiver is None else replace(answered, status=Status.WAIVED, waiver=waiver)
        )
    end = min(now, closed_at) if closed_at else now
    elapsed = on_clock(proposal.clock, proposal.hours, request.received_at, end)
    if waiver is not None:
        return replace(unanswered, status=Status.WAIVED, waiver=waiver, elapsed_seconds=elapsed)
    status = Status.OVERDUE if elapsed > target else Status.OPEN
    return replace(unanswered, status=status, elapsed_seconds=elapsed)


@dataclass(frozen=True)
class _Context:
    """What every step of a thread walk needs to know."""

    policy: Policy
    directory: Directory
    classes: dict[str, Classification]
    waivers: dict[str, Waiver]
    absences: AbsenceIndex
    now: datetime
    recorded_answers: dict[str, RecordedAnswer] = field(default_factory=dict)


def _requests_of_thread(thread_id: str, thread: list[Message], ctx: _Context) -> list[Request]:
    ordered = _ordered(thread, ctx.classes)
    accounts = sorted(
        {
            c.account
            for m in thread
            if (c := ctx.classes[m.key]).role is Role.CLIENT and c.automated is None and c.account
        }
    )
    results = []
    for account in accounts:
        chain = _Chain(account)
        for message in ordered:
            _step(chain, message, thread_id, ctx)
        _answer_recorded_by(chain, ctx.now, ctx)
        if chain.open is not None:
            ends = chain.open.ends_at(ctx.policy)
            closed_at = ends if ends <= ctx.now else None
            _close(chain, now=ctx.now, waiver=chain.open.waiver, closed_at=closed_at)
        results.extend(chain.done)
    return results


def _step(chain: _Chain, message: Message, thread_id: str, ctx: _Context) -> None:
    c = ctx.classes[message.key]
    assert c.at is not None
    _answer_recorded_by(chain, c.at, ctx)
    if chain.open is not None and (ends := chain.open.ends_at(ctx.policy)) <= c.at:
        if ends != chain.open.waived_at:
            chain.open.notes.append(f"closed unanswered at {ends:%Y-%m-%d %H:%M}Z (expiry)")
        _close(chain, now=ctx.now, waiver=chain.open.waiver, closed_at=ends)
    if c.automated is not None:
        return
    if c.role is Role.CLIENT and c.account == chain.account:
        _client_message(chain, message, c, thread_id, ctx)
        _take_recorded_answer(chain, message.key, ctx)
    elif c.role is Role.STAFF and chain.open is not None:
        _staff_message(chain, message, c, ctx.directory, ctx.now)


def _client_message(
    chain: _Chain, message: Message, c: Classification, thread_id: str, ctx: _Context
) -> None:
    assert c.at is not None
    now = ctx.now
    proposal = _propose(message, c.at, chain.account, ctx.policy, ctx.directory)
    if chain.open is None:
        responsible, why = responsible_for(
            chain.account, c.at, ctx.policy, ctx.directory, ctx.absences
        )
        chain.open = _Open(
            chain.account,
            thread_id,
            message.subject,
            message.key,
            c.at,
            proposal,
            responsible,
            notes=[f"opened by {message.key} from {message.from_addr}", f"responsible: {why}"],
        )
        if ctx.policy.courtesy and message.courtesy and chain.answered_before:
            chain.open.messages.append(message.key)
            courtesy = Waiver(
                message.key,
                by="mailwatch (courtesy)",
                seen_at=c.at,
                reason="only thanks or acknowledges an answer",
                via=WaiverVia.COURTESY,
            )
            _close(chain, now=now, waiver=courtesy, closed_at=c.at)
            return
    elif c.at < chain.open.received_at:
        # only reachable with skewed times (it quotes a later message): the clock still
        # runs from the earliest unanswered client message
        chain.open.notes.append(f"{message.key} arrived earlier: the clock starts there")
        chain.open.received_at, chain.open.opened_by = c.at, message.key
        chain.open.proposal = min(chain.open.proposal, proposal, key=lambda p: p.deadline)
    elif proposal.deadline < chain.open.deadline:
        chain.open.notes.append(f"{message.key} tightened the deadline ({proposal.tier})")
        chain.open.proposal = proposal
    chain.open.messages.append(message.key)
    waiver = _waiver_for(message, ctx.waivers)
    if waiver is not None:
        _waive(chain.open, waiver, max(waiver.seen_at, c.at))


def _waive(request: _Open, waiver: Waiver, waived_at: datetime) -> None:
    """The request is waived: every client message of it up to `waived_at`, whichever was
    marked; the earliest waiver of its messages is the one that counts."""
    request.notes.append(f"{waiver.message_key} waived ({waiver.via}) by {waiver.by}")
    if request.waived_at is None or waived_at < request.waived_at:
        request.waiver, request.waived_at = waiver, waived_at


def _staff_message(
    chain: _Chain, message: Message, c: Classification, directory: Directory, now: datetime
) -> None:
    request = chain.open
    assert request is not None and c.at is not None
    if chain.account not in directory.accounts_addressed(message.recipients):
        return
    if not c.can_answer:
        request.notes.append(
            f"{message.key} from {c.responder} does not count: not a listed person"
        )
        return
    quotes = set(message.in_reply_to) | set(message.references)
    if c.at >= request.received_at or quotes & set(request.messages):
        request.notes.append(f"answered by {c.responder} with {message.key}")
        chain.answered_before = True
        _close(chain, now=now, answer=(message, c), waiver=_after_the_answer(request))


def _after_the_answer(request: _Open) -> Waiver | None:
    """A waiver made after the answer counts only from `waive --force` (the command refuses
    otherwise): a keyword or folder copy on old mail must not hide how it was answered."""
    waiver = request.waiver
    if waiver is None or waiver.via is WaiverVia.COMMAND:
        return waiver
    request.notes.append(f"the {waiver.via} waiver came after the answer: the answer stands")
    return None


def _take_recorded_answer(chain: _Chain, key: str, ctx: _Context) -> None:
    """A recorded answer on this client message answers its request, when it was given
    after the request opened; the earliest of several counts."""
    request, answer = chain.open, ctx.recorded_answers.get(key)
    if request is None or answer is None:
        return
    if answer.at < request.received_at:
        request.notes.append(f"answer recorded on {key} predates this request: ignored")
    elif request.recorded_answer is None or answer.at < request.recorded_answer.at:
        request.recorded_answer = answer


def _answer_recorded_by(chain: _Chain, until: datetime, ctx: _Context) -> None:
    """Close the open request with its recorded answer if that was given by `until` (and
    before the request expired: then it had closed unanswered already)."""
    request = chain.open
    answer = request.recorded_answer if request is not None else None
    if request is None or answer is None or answer.at > until:
        return
    if answer.at >= request.ends_at(ctx.policy):  # it had closed: expired, or waived
        return
    who = f" by {answer.responder}" if answer.responder else ""
    note = f": {answer.note}" if answer.note else ""
    request.notes.append(
        f"answered{who} by {answer.via} at {answer.at:%Y-%m-%d %H:%M}Z, recorded by "
        f"{answer.recorded_by} on {answer.recorded_at:%Y-%m-%d %H:%M}Z{note}"
    )
    chain.answered_before = True
    chain.done.append(_answered_outside_email(request, answer, ctx.now))
    chain.open = None


def _answered_outside_email(request: _Open, answer: RecordedAnswer, now: datetime) -> Request:
    """The request measured to a recorded answer, as to a staff email sent at that instant."""
    proposal = request.proposal
    unanswered = _finish(request, now=now)
    response = on_clock(proposal.clock, proposal.hours, request.received_at, answer.at)
    return replace(
        unanswered,
        status=Status.MET if response <= unanswered.target_seconds else Status.BREACHED,
        answered_at=answer.at,
        answered_via=answer.via,
        responder=answer.responder,
        response_seconds=response,
        elapsed_seconds=response,
        closed_at=answer.at,
    )


def status_as_of(request: Request, policy: Policy, now: datetime) -> Request:
    """A stored request's status at a later `now`: time passes for unanswered requests.

    Answered and waived requests are final; an unanswered one turns overdue when more
    than its target has elapsed, and closes unanswered `request_expiry` after its deadline.
    """
    if request.answered_at is not None or request.status is Status.WAIVED:
        return request
    closed_at = request.closed_at
    expiry = request.deadline + policy.request_expiry
    if closed_at is None and expiry <= now:
        closed_at = expiry
    end = min(now, closed_at) if closed_at else now
    elapsed = on_clock(request.clock, _hours_of(request.account, policy), request.received_at, end)
    status = Status.OVERDUE if elapsed > request.target_seconds else Status.OPEN
    return replace(request, status=status, elapsed_seconds=elapsed, closed_at=closed_at)


def _hours_of(account_name: str, policy: Policy) -> BusinessHours:
    for account in policy.accounts:
        if account.name == account_name and account.business_hours is not None:
            return account.business_hours
    return policy.business_hours


# ---------------------------------------------------------------- the whole pipeline


def evaluate(
    messages: Iterable[Message],
    policy: Policy,
    now: datetime,
    waivers: Iterable[Waiver] = (),
    *,
    known_people: frozenset[str] = frozenset(),
    absences: Sequence[Absence] | None = None,
    recorded_answers: Iterable[RecordedAnswer] = (),
    verdicts: Mapping[str, str | None] | None = None,
    thread_of: Mapping[str, str] | None = None,
) -> Evaluation:
    """Every request in these messages, with its status as of `now`.

    Given whole threads (every message linked to them), the result for those threads
    is the same as over all mail, provided `known_people` and `absences` describe the
    rest of the mail: that is how the store re-evaluates only what new mail touches.
    `recorded_answers` made, or given, after `now` are not known yet; `verdicts`, the
    automation verdicts already found, save finding them again (see `classify`), and
    `thread_of`, each message's thread found by `stream_threads` over all the mail, threading
    them again.
    """
    directory = Directory(policy)
    known = [m for m in (_as_of(m, now) for m in merge_copies(messages)) if m is not None]
    classes = classify(known, policy, directory, known_people, verdicts)
    untimed = tuple(sorted(k for k, c in classes.items() if c.at is None))
    timed = [m for m in known if classes[m.key].at is not None]
    if absences is None:
        absences = infer_absences(timed, classes, policy, now)
    automated = {m.key: classes[m.key].automated for m in timed}
    people = frozenset(people_seen_sending(timed, directory, automated))
    at = {m.key: time for m in timed if (time := classes[m.key].at) is not None}
    if thread_of is None:
        thread_of = thread_messages(
            timed,
            time_of=lambda m: at[m.key],
            accounts_of=thread_accounts(directory),
            policy=policy,
        ).thread_of
    threads: dict[str, list[Message]] = {}
    for message in timed:
        threads.setdefault(thread_of[message.key], []).append(message)
    current_waivers = {w.message_key: w for w in waivers if w.seen_at <= now}
    requests = []
    known_answers = {a.message_key: a for a in recorded_answers if a.known_at(now) and a.at <= now}
    ctx = _Context(
        policy, directory, classes, current_waivers, AbsenceIndex(absences), now, known_answers
    )
    for thread_id in sorted(threads):
        requests.extend(_requests_of_thread(thread_id, threads[thread_id], ctx))
    requests = with_unseen_replies(requests, timed, policy.agency_domains)
    requests.sort(key=lambda r: (r.received_at, r.opened_by, r.account))
    return Evaluation(
        now=now,
        requests=tuple(requests),
        classifications=classes,
        thread_of={m.key: thread_of[m.key] for m in timed},
        absences=tuple(absences),
        people=people,
        untimed=untimed,
        unlisted_senders=unlisted_senders(timed, classes, directory),
        unknown_correspondents=unknown_correspondents(timed, classes, directory),
    )


def threads_of(messages: Iterable[Message], policy: Policy, now: datetime) -> list[list[str]]:
    """The keys of each thread `evaluate` finds in these messages; a message with no time
    as of `now` (untimed, or not arrived yet) stands alone. Evaluating any union of these
    groups gives the requests evaluating all of them would: the store evaluates years of
    mail a bounded part at a time. Needs no rule headers (no automation is decided)."""
    directory = Directory(policy)
    merged = merge_copies(messages)
    at: dict[str, datetime] = {}
    timed = []
    for message in merged:
        if found := timed_as_of(message, directory, now):
            known, at[message.key] = found
            timed.append(known)
    threading = thread_messages(
        timed, time_of=lambda m: at[m.key], accounts_of=thread_accounts(directory), policy=policy
    )
    groups: dict[str, list[str]] = {}
    for message in merged:
        groups.setdefault(threading.thread_of.get(message.key, message.key), []).append(message.key)
    return list(groups.values())


def timed_as_of(
    message: Message, directory: Directory, now: datetime
) -> tuple[Message, datetime] | None:
    """The message as known at `now` and the time threading orders it by; None for a
    message that stands alone (untimed, or not arrived yet)."""
    known = _as_of(message, now)
    timing = counted_from(known, directory.identify(known.from_addr).role) if known else None
    return (known, timing[0]) if known is not None and timing is not None else None


def thread_accounts(directory: Directory) -> Callable[[Message], frozenset[str]]:
    """The accounts a message belongs to for the subject fallback: its sender's and
    recipients'."""
    return lambda m: frozenset(directory.accounts_addressed(tuple(m.participants)))
