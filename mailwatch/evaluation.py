"""The incremental evaluation engine: the response clock over the stored mail.

After each poll or import only the threads that new mail touches are evaluated again:
the "closure" of the changed messages (everything linked to them by a stored thread, a
reference either way, a conversation key, or an equal subject within the subject
window).  Their requests replace the stored ones; reports and nudges read the stored
requests and let time pass with `status_as_of`.  A changed policy (configuration)
re-evaluates everything once.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum

from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.automated import is_out_of_office
from mailwatch.core.clock import (
    Evaluation,
    classify,
    evaluate,
    people_seen_sending,
    thread_accounts,
    threads_of,
    timed_as_of,
)
from mailwatch.core.conversations import is_generic_subject, stream_threads, thread_links
from mailwatch.core.model import (
    Absence,
    Classification,
    Message,
    Policy,
    RecordedAnswer,
    Role,
    Waiver,
)
from mailwatch.privacy_policy import UNRELATED_MAIL
from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

POLICY_STATE = "policy"
FAILURE_STATE = "evaluation_failure"
EVALUATED_STATE = "evaluated_at"
ATTENTION_STATE = "attention"
EVALUATION_LOCK = "evaluation"

# How long an evaluation waits for another process's evaluation to end.
TURN_WAIT = timedelta(seconds=60)

# Messages evaluated at once (whole threads; a longer thread alone): bounds memory after a
# first sync of years.
EVALUATION_BATCH = 20_000
# Messages read at once while threading every stored message (whole reference groups)
GROUP_PAGE = 2_000


@dataclass(frozen=True)
class Refresh:
    messages: int  # how many messages were evaluated again
    requests: int  # how many requests they hold
    rebuilt: bool  # everything was re-evaluated (first run, or the policy changed)


@dataclass(frozen=True)
class Attention:
    """What a person should look at besides the requests."""

    untimed: tuple[str, ...]
    unlisted_senders: tuple[str, ...]
    unknown_correspondents: tuple[str, ...]
    # threads whose evaluation failed, one line each: they keep their old requests and are
    # tried again at every evaluation
    set_aside: tuple[str, ...] = ()


def attention(store: Store) -> Attention:
    """The lists a person should look at, as the last evaluation stored them."""
    stored = store.state(ATTENTION_STATE)
    if stored is None:
        return Attention((), (), ())
    return Attention(**{name: tuple(values) for name, values in json.loads(stored).items()})


def policy_fingerprint(policy: Policy) -> str:
    """A digest of the policy that is the same in every process: sets are sorted (their
    order follows per-process string hashing) and a holiday calendar stands in by its
    country code (its own contents grow as years are looked up)."""
    return hashlib.sha256(json.dumps(_canonical(policy), sort_keys=True).encode()).hexdigest()


def _canonical(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(json.dumps(_canonical(v), sort_keys=True) for v in value)
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, date | time):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    # a holiday calendar (any other Container of dates)
    return f"{type(value).__name__}:{getattr(value, 'country', '')}-{getattr(value, 'subdiv', '')}"


@contextmanager
def evaluation_turn(store: Store) -> Iterator[bool]:
    """One evaluation at a time across processes (two daemons, a daemon and a command):
    concurrent ones would swap the same threads' requests in and out."""
    with store.turn(EVALUATION_LOCK, TURN_WAIT) as mine:
        yield mine


def refresh_requests(settings: Settings, store: Store, now: datetime) -> Refresh:
    """Re-evaluate what changed since the last evaluation and store the requests. A
    failure is remembered for `mailwatch health` until an evaluation succeeds."""
    with evaluation_turn(store) as mine:
        if not mine:
            log.warning(
                "another process kept evaluating for %s; using the stored requests", TURN_WAIT
            )
            return Refresh(0, 0, False)
        try:
            return _refresh(settings, store, now)
        except Exception as error:
            failed_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            store.set_state(FAILURE_STATE, f"at {failed_at}: {_error_text(error)}")
            raise


def evaluation_failure(store: Store) -> str | None:
    """When and why the last evaluation failed, unless one succeeded since."""
    return store.state(FAILURE_STATE) or None


def _refresh(settings: Settings, store: Store, now: datetime) -> Refresh:
    policy = settings.policy
    fingerprint = policy_fingerprint(policy)
    rebuilt = store.state(POLICY_STATE) != fingerprint
    if rebuilt:
        store.mark_all_dirty()
    changes = store.dirty_keys()
    if not changes:
        return Refresh(0, 0, False)
    _classify_changed(settings, store, list(changes))
    # every message changed (a first sync, a new policy): the closure is all of them
    keys = set(changes) if rebuilt else closure(store, set(changes), policy)
    if rebuilt and len(keys) > EVALUATION_BATCH:
        parts = _parts_of_all_threads(store, keys, policy, now)
    else:
        parts = _parts_of_whole_threads(store, keys, policy, now)
    # set-aside threads stay to be evaluated: this refresh tries each of them again
    notice = replace(attention(store), set_aside=()) if not rebuilt else Attention((), (), ())
    context = mail_context(settings, store, now)
    written: set[str] = set()  # threads whose requests this refresh already stored
    requests = 0
    for number, whole_part in enumerate(parts, 1):
        evaluation, set_aside = _evaluate_setting_aside(settings, store, whole_part, now, context)
        part = whole_part - {key for keys in set_aside for key in keys}
        notice = _merged(notice, evaluation, [_set_aside_line(k, e) for k, e in set_aside.items()])
        # mail stamped after `now` (a server clock ahead) was left out: it stays to be evaluated
        not_yet = {key: -1 for key in part if key not in evaluation.classifications}
        threads = set(evaluation.thread_of.values())
        store.save_evaluation(
            thread_of={key: evaluation.thread_of.get(key) for key in part},
            changes_seen={**{k: changes[k] for k in part if k in changes}, **not_yet},
            people=set(),
            requests=evaluation.requests,
            threads=(threads | store.thread_ids_of(part)) - written,
            evaluated_at=now,
            state=_final_state(fingerprint, now, notice) if number == len(parts) else {},
        )
        written |= threads
        requests += len(evaluation.requests)
    # operations.md: mail with no client participant keeps only ids, references and times
    directory = Directory(policy)
    store.reduce_unrelated_mail(
        keys, now, lambda address: directory.role(address) is Role.CLIENT, UNRELATED_MAIL
    )
    return Refresh(len(keys), requests, rebuilt)


def _evaluate_setting_aside(
    settings: Settings, store: Store, part: set[str], now: datetime, context: MailContext
) -> tuple[Evaluation, dict[tuple[str, ...], str]]:
    """The evaluation of `part`; a thread whose evaluation fails is left out of it, with
    the error, so that hostile mail or a bug in one thread costs that thread only."""
    try:
        return evaluate_subset(settings, store, part, now, context), {}
    except Exception:
        log.exception("the evaluation of %d messages failed; trying each thread alone", len(part))
    try:
        groups = threads_of(store.messages_by_keys(part), settings.policy, now)
    except Exception:  # the threading itself fails: the whole part is set aside
        groups = [sorted(part)]
    set_aside: dict[tuple[str, ...], str] = {}
    for group in groups:
        try:
            evaluate_subset(settings, store, set(group), now, context)
        except Exception as error:
            set_aside[tuple(sorted(group))] = _error_text(error)
    for keys, text in set_aside.items():
        log.warning("set aside: %s", _set_aside_line(keys, text))
    kept = part - {key for keys in set_aside for key in keys}
    return evaluate_subset(settings, store, kept, now, context), set_aside


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _set_aside_line(keys: tuple[str, ...], error: str) -> str:
    more = f" and {len(keys) - 1} more message(s)" if len(keys) > 1 else ""
    return f"the thread of {keys[0]}{more}: {error}"


def _parts_of_whole_threads(
    store: Store, keys: set[str], policy: Policy, now: datetime
) -> list[set[str]]:
    """`keys` cut into parts of at most EVALUATION_BATCH messages, each a union of whole
    threads, found by threading light copies of the messages (no rule headers)."""
    if len(keys) <= EVALUATION_BATCH:
        return [keys]
    parts: list[set[str]] = [set()]
    for thread in threads_of(store.messages_by_keys(keys, rule_headers=False), policy, now):
        if parts[-1] and len(parts[-1]) + len(thread) > EVALUATION_BATCH:
            parts.append(set())
        parts[-1].update(thread)
    return parts


def _parts_of_all_threads(
    store: Store, keys: set[str], policy: Policy, now: datetime
) -> list[set[str]]:
    """Every stored message (`keys`) cut into parts of at most EVALUATION_BATCH messages,
    each a union of whole threads, threading one reference group at a time in order of its
    first message: memory holds arrays by row id and the threads active within the subject
    window, not every message."""
    directory = Directory(policy)
    late = _known_late(store, directory, now)
    roots = store.reference_components(
        now, {row_id: [m.key, *thread_links(m)] for row_id, (m, _) in late.items()}
    )
    late_order = sorted((at, m.key, row_id) for row_id, (m, at) in late.items())
    first_members = heapq.merge(store.timed_in_order(now), late_order)
    times: dict[str, datetime] = {}  # of the messages of the threads not given out yet
    groups = _reference_groups(store, roots, first_members, directory, now, times)
    parts: list[set[str]] = [set()]
    placed: set[str] = set()

    def time_of(m: Message) -> datetime:
        return times[m.key]

    threads = stream_threads(groups, time_of, thread_accounts(directory), policy)
    for thread in threads:
        for key in thread:
            del times[key]
        if parts[-1] and len(parts[-1]) + len(thread) > EVALUATION_BATCH:
            parts.append(set())
        parts[-1].update(thread)
        placed.update(thread)
    # untimed mail, and mail not arrived yet, stands alone
    for key in sorted(keys - placed):
        if len(parts[-1]) >= EVALUATION_BATCH:
            parts.append(set())
        parts[-1].add(key)
    return parts


def _known_late(
    store: Store, directory: Directory, now: datetime
) -> dict[int, tuple[Message, datetime]]:
    """The few messages with some time after `now`, by row id, as known at `now` and with
    their time, when they had arrived by then."""
    known: dict[int, tuple[Message, datetime]] = {}
    for row_id, message in store.light_messages_by_ids(store.times_after(now)):
        if found := timed_as_of(message, directory, now):
            known[row_id] = found
    return known


def _reference_groups(
    store: Store,
    roots: array[int],
    first_members: Iterable[tuple[datetime, str, int]],
    directory: Directory,
    now: datetime,
    times: dict[str, datetime],
) -> Iterator[list[Message]]:
    """Each reference group's messages as known at `now`, in order of (time, key), the groups
    in order of their first message, read a page of groups at a time; each message's time
    is put in `times`."""
    members = _members_by_root(roots)
    seen = bytearray(len(roots))
    page: list[int] = []  # roots
    size = 0
    for _, _, row_id in first_members:
        root = roots[row_id]
        if seen[root]:
            continue
        seen[root] = 1
        page.append(root)
        size += len(members(root))
        if size >= GROUP_PAGE:
            yield from _page_of_groups(store, page, members, roots, directory, now, times)
            page, size = [], 0
    yield from _page_of_groups(store, page, members, roots, directory, now, times)


def _members_by_root(roots: array[int]) -> Callable[[int], list[int]]:
    """The row ids in the component of a root, from a chain through an array."""
    first = array("q", [-1]) * len(roots)
    following = array("q", [-1]) * len(roots)
    for row_id, root in enumerate(roots):
        if root >= 0:
            following[row_id] = first[root]
            first[root] = row_id

    def members(root: int) -> list[int]:
        found = []
        row_id = first[root]
        while row_id >= 0:
            found.append(row_id)
            row_id = following[row_id]
        return found

    return members


def _page_of_groups(
    store: Store,
    page: list[int],
    members: Callable[[int], list[int]],
    roots: array[int],
    directory: Directory,
    now: datetime,
    times: dict[str, datetime],
) -> Iterator[list[Message]]:
    ids = [row_id for root in page for row_id in members(root)]
    groups: dict[int, list[Message]] = {root: [] for root in page}
    for row_id, message in store.light_messages_by_ids(ids):
        found = timed_as_of(message, directory, now)
        if found is not None:  # always: the store's time decided it takes part
            known, times[message.key] = found
            groups[roots[row_id]].append(known)
    for group in groups.values():
        yield sorted(group, key=lambda m: (times[m.key], m.key))


def _classify_changed(settings: Settings, store: Store, keys: list[str]) -> None:
    """Store each changed message's role, responder, time and automation verdict, and the
    people seen sending: what evaluating any thread needs to know about all the others."""
    policy = settings.policy
    directory = Directory(policy)
    for start in range(0, len(keys), EVALUATION_BATCH):
        messages = store.messages_by_keys(keys[start : start + EVALUATION_BATCH])
        classes = classify(messages, policy, directory)
        store.save_classifications(_derived(messages, classes, policy))
        automated = {key: c.automated for key, c in classes.items()}
        store.add_people(people_seen_sending(messages, directory, automated))


def _derived(
    messages: Sequence[Message], classes: dict[str, Classification], policy: Policy
) -> list[dict[str, object]]:
    """The stored columns of each message's classification."""
    return [_derived_row(message, classes[message.key], policy) for message in messages]


def _derived_row(message: Message, c: Classification, policy: Policy) -> dict[str, object]:
    out_of_office = (
        c.role is Role.STAFF and c.automated is not None and is_out_of_office(message, policy)
    )
    return {
        "key": message.key,
        "role": c.role.value,
        "responder": c.responder,
        "at": c.at,
        "automated": c.automated,
        "out_of_office": out_of_office,
    }


def _final_state(fingerprint: str, now: datetime, notice: Attention) -> dict[str, str]:
    return {
        POLICY_STATE: fingerprint,
        # a `--now` in the future must not make the present look like the past
        EVALUATED_STATE: min(now, datetime.now(UTC)).isoformat(),
        ATTENTION_STATE: json.dumps(asdict(notice)),
        FAILURE_STATE: "",
    }


def _merged(notice: Attention, evaluation: Evaluation, set_aside: list[str]) -> Attention:
    """Lists a person should look at, grown by each partial evaluation."""
    return Attention(
        tuple(sorted(set(notice.untimed) | set(evaluation.untimed))),
        tuple(sorted(set(notice.unlisted_senders) | set(evaluation.unlisted_senders))),
        tuple(sorted(set(notice.unknown_correspondents) | set(evaluation.unknown_correspondents))),
        (*notice.set_aside, *set_aside),
    )


def closure(store: Store, seeds: set[str], policy: Policy) -> set[str]:
    """Every stored message whose evaluation can depend on the `seeds`."""
    keys = set(seeds)
    frontier = set(seeds)
    while frontier:
        subjects = {s for s in store.subjects_of(frontier) if not is_generic_subject(s, policy)}
        found = store.related_keys(frontier, subjects, policy.subject_window) - keys
        keys |= found
        frontier = found
    return keys


@dataclass(frozen=True)
class MailContext:
    """What evaluating some threads needs to know of all the other mail, from the store."""

    people: frozenset[str]  # staff seen sending human mail from a Sent folder
    absences: list[Absence]
    waivers: list[Waiver]
    recorded_answers: list[RecordedAnswer]


def mail_context(settings: Settings, store: Store, now: datetime) -> MailContext:
    absences = store_absences(store, settings.policy, datetime.min.replace(tzinfo=UTC), now)
    return MailContext(
        frozenset(store.people()), absences, store.waivers(), store.recorded_answers()
    )


def evaluate_subset(
    settings: Settings,
    store: Store,
    keys: set[str],
    now: datetime,
    context: MailContext | None = None,
) -> Evaluation:
    """The clock over a closed set of messages, with the rest of the mail's `context` (read
    from the store unless given: a refresh in parts reads it once)."""
    context = context or mail_context(settings, store, now)
    return evaluate(
        store.messages_by_keys(keys),
        settings.policy,
        now,
        context.waivers,
        known_people=context.people,
        absences=context.absences,
        recorded_answers=context.recorded_answers,
    )


def store_absences(store: Store, policy: Policy, since: datetime, until: datetime) -> list[Absence]:
    """Staff absences inferred from their out-of-office replies (response-clock.md:
    until their next human mail, at most `absence_max`) that overlap [since, until], as
    known at `until` (a return after it is not known yet)."""
    absences = []
    for who, start, key, back in store.out_of_office_replies():
        if start > until or start + policy.absence_max < since:
            continue
        end = start + policy.absence_max
        if back is not None and back <= until:
            end = min(end, back)
        absences.append(Absence(who=who, start=start, end=end, evidence=key))
    return sorted(absences, key=lambda a: (a.start, a.who))
