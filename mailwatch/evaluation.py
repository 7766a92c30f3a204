"""The incremental evaluation engine: the response clock over the stored mail.

After each poll or import only the threads that new mail touches are evaluated again:
the "closure" of the changed messages (everything linked to them by a stored thread, a
reference either way, a conversation key, or an equal subject within the subject
window).  Their requests replace the stored ones; reports and nudges read the stored
requests and let time pass with `status_as_of`.  A changed policy (configuration)
re-evaluates everything once.
"""

from __future__ import annotations

import json
import logging
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from mailwatch.collector import collect_young, collector_paused
from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.clock import Evaluation, thread_accounts, threads_of, timed_as_of
from mailwatch.core.conversations import is_generic_subject, stream_threads, thread_links
from mailwatch.core.model import Absence, Message, Policy, Role, policy_fingerprint
from mailwatch.core.times import SEND_TIME_SPREAD
from mailwatch.evaluation_parts import (
    MailContext,
    PartEvaluation,
    classified,
    error_text,
    evaluate_messages,
    evaluated_part,
    save_classified,
    stored_verdicts,
)
from mailwatch.evaluation_workers import Workers, worker_processes
from mailwatch.privacy_policy import UNRELATED_MAIL
from mailwatch.store.messages import Loaded
from mailwatch.store.repository import Store

log = logging.getLogger(__name__)
Value = TypeVar("Value")

POLICY_STATE = "policy"
FAILURE_STATE = "evaluation_failure"
EVALUATED_STATE = "evaluated_at"
ATTENTION_STATE = "attention"
EVALUATION_LOCK = "evaluation"

# How long an evaluation waits for another process's evaluation to end.
TURN_WAIT = timedelta(seconds=60)

# Messages classified, and evaluated, at once (whole threads; a longer thread alone): bounds
# memory after a first sync of years (20,000 full messages were ~100 MB of a peak). 5,000:
# the first evaluation of 1,000,000 took 272 s and peaked at 247 MB (10,000: 278 s, 265 MB).
EVALUATION_BATCH = 5_000
# Messages read at once while threading every stored message (whole reference groups)
GROUP_PAGE = 2_000
# Stored messages from which a first evaluation is shared with worker processes: starting
# them costs ~1 s of CPU, which a few parts of mail do not repay
WORKERS_FROM = 20_000


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
            store.set_state(FAILURE_STATE, f"at {failed_at}: {error_text(error)}")
            raise


def evaluation_failure(store: Store) -> str | None:
    """When and why the last evaluation failed, unless one succeeded since."""
    return store.state(FAILURE_STATE) or None


def _refresh(settings: Settings, store: Store, now: datetime) -> Refresh:
    fingerprint = policy_fingerprint(settings.policy)
    if store.state(POLICY_STATE) != fingerprint:
        with collector_paused():
            return _evaluate_everything(settings, store, now, fingerprint)
    changes = store.dirty_keys()
    if not changes:
        return Refresh(0, 0, False)
    for some in _pages(list(changes), EVALUATION_BATCH):
        save_classified(store, classified(settings, store.loaded_by_keys(some)))
    keys = closure(store, set(changes), settings.policy)
    # set-aside threads stay to be evaluated: this refresh tries each of them again
    run = _Run(store, now, replace(attention(store), set_aside=()))
    context = mail_context(settings, store, now)
    for part in _parts_of_whole_threads(store, keys, settings.policy, now):
        loaded = store.loaded_by_keys(part)
        # a message stored since `changes` was read has no verdict yet: found again
        verdicts = {
            row.message.key: row.automated
            for row in loaded
            if row.dirty == 0 or row.message.key in changes
        }
        run.save(
            evaluated_part(settings, now, context, loaded, verdicts, store.dialect),
            lambda row_id, key: changes.get(key, 0),
        )
    run.finish(fingerprint)
    _reduce(settings, store, keys, now)
    return Refresh(len(keys), run.requests, False)


def _evaluate_everything(
    settings: Settings, store: Store, now: datetime, fingerprint: str
) -> Refresh:
    """Evaluate every stored message (a first sync, a new policy) in bounded memory: each
    message not classified under the policy as it was stored classified a page at a time,
    then every one threaded a reference group at a time and evaluated in parts of whole
    threads, read once and with the verdicts stored.
    Years of mail share the reading, classifying and evaluating with worker processes."""
    last = store.last_row_id()
    processes = worker_processes(store, last, WORKERS_FROM)
    with Workers(settings, store, processes) as workers:
        seen = _classify_everything(store, workers, last)
        if not any(counter >= 0 for counter in seen):
            return Refresh(0, 0, False)
        run = _Run(store, now, Attention((), (), ()))
        context = mail_context(settings, store, now)
        # mail stored since it was classified (no time, no verdict yet) waits for the next
        # evaluation
        outside = [i for i in store.outside_time_order(now) if i < len(seen) and seen[i] >= 0]
        late = _known_late(store, Directory(settings.policy), now, outside)
        # rule headers only for tiers matching on them: the automation verdicts are stored
        rule_headers = any(tier.high_priority for tier in settings.policy.tiers)
        parts = _parts_of_all_threads(store, settings.policy, now, late)
        for found in workers.evaluated_parts(parts, rule_headers, now, context):
            run.save(found, _changes_seen(seen))
            collect_young()  # the collector is paused: a part's cycles, not all of memory
    threaded = {row.row_id for row, _ in late}
    # untimed mail, and mail not arrived yet, stands alone
    alone = [i for i in outside if i not in threaded]
    for ids in _pages(alone, EVALUATION_BATCH):
        part = store.loaded_by_ids(ids)
        found = evaluated_part(settings, now, context, part, stored_verdicts(part), store.dialect)
        run.save(found, _changes_seen(seen))
    run.finish(fingerprint)
    _reduce(settings, store, None, now)
    return Refresh(run.messages, run.requests, True)


def _pages(values: list[Value], size: int) -> Iterator[list[Value]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _changes_seen(seen: array[int]) -> Callable[[int, str], int]:
    """Each message's change counter as its classification read it: a change stored since
    (a row added or changed after) leaves it to be evaluated again."""
    return lambda row_id, key: seen[row_id] if row_id < len(seen) else -1


def _reduce(settings: Settings, store: Store, keys: set[str] | None, now: datetime) -> None:
    """operations.md: mail with no client participant keeps only ids, references and times."""
    directory = Directory(settings.policy)
    store.reduce_unrelated_mail(
        keys, now, lambda address: directory.role(address) is Role.CLIENT, UNRELATED_MAIL
    )


class _Run:
    """One refresh's evaluation of its parts: what it stored, and the lists a person should
    look at, grown by each part."""

    def __init__(self, store: Store, now: datetime, notice: Attention):
        self.store, self.now, self.notice = store, now, notice
        self.written: set[str] = set()  # threads whose requests this refresh already stored
        self.messages = 0
        self.requests = 0

    def save(self, found: PartEvaluation, changes_seen: Callable[[int, str], int]) -> None:
        """Store the evaluation of a union of whole threads, `changes_seen` telling each
        message's change counter as read (by row id and key)."""
        self.notice = _merged(self.notice, found)
        marks = {
            row_id: (
                found.thread_of.get(key),
                # mail stamped after `now` (a server clock ahead) was left out: it stays to
                # be evaluated
                changes_seen(row_id, key) if key in found.evaluated else -1,
            )
            for row_id, key, _ in found.kept
        }
        threads = set(found.thread_of.values())
        old = {thread for _, _, thread in found.kept if thread is not None}
        self.store.save_evaluation(marks, found.requests, (threads | old) - self.written, {})
        self.written |= threads
        self.messages += found.messages
        self.requests += len(found.requests)

    def finish(self, fingerprint: str) -> None:
        for name, value in _final_state(fingerprint, self.now, self.notice).items():
            self.store.set_state(name, value)


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
    store: Store, policy: Policy, now: datetime, late: list[tuple[Loaded, datetime]]
) -> Iterator[dict[str, str]]:
    """Every timed message known at `now` (with the `late` ones the core decided about) in
    parts of about EVALUATION_BATCH messages (a longer thread alone), each a union of whole
    threads, threading one reference group at a time in order of its first message. Memory
    holds arrays by row id and the keys of the threads active within the subject window (a
    subject that recurs keeps a thread active for years), not the mail: a part is read
    again, by key, once its threads are known. Each part is each message's thread, by key."""
    directory = Directory(policy)
    roots = store.reference_components(
        now, {row.row_id: [row.message.key, *thread_links(row.message)] for row, _ in late}
    )
    order = store.in_time_order(now, [(at, row.message.key, row.row_id) for row, at in late])
    times: dict[str, datetime] = {}  # of the messages of the page being threaded
    late_times = {row.row_id: at for row, at in late}
    groups = _reference_groups(store, roots, order, late_times, times)

    def time_of(m: Message) -> datetime:
        return times[m.key]

    thread_of: dict[str, str] = {}  # of the messages of the part being gathered
    for root, keys in stream_threads(groups, time_of, thread_accounts(directory), policy):
        if thread_of and len(thread_of) + len(keys) > EVALUATION_BATCH:
            yield thread_of
            thread_of = {}
        thread_of.update((key, root) for key in keys)
    if thread_of:
        yield thread_of


def _known_late(
    store: Store, directory: Directory, now: datetime, outside: Sequence[int]
) -> list[tuple[Loaded, datetime]]:
    """Those of the messages outside the time order (`outside`: untimed, or with some time
    after `now`) that had arrived by `now` and have a time then, with that time."""
    known = []
    for row in store.loaded_by_ids(outside):
        if found := timed_as_of(row.message, directory, now):
            known.append((row, found[1]))
    return known


def _reference_groups(
    store: Store,
    roots: array[int],
    order: array[int],
    late_times: dict[int, datetime],
    times: dict[str, datetime],
) -> Iterator[list[Message]]:
    """Each reference group's messages (copies with what threading reads), in order of
    (time, key), the groups in the `order` of their first message, read a page of groups
    at a time; each message's time (classified, or as known at `now` for the late ones in
    `late_times`) is in `times` while its page is threaded."""

    def page_of_groups(roots_of_page: list[int]) -> Iterator[list[Message]]:
        ids = [row_id for root in roots_of_page for row_id in members(root)]
        groups: dict[int, list[Message]] = {root: [] for root in roots_of_page}
        times.clear()  # the groups of the page before are threaded
        for row_id, message, at in store.threading_copies(ids):
            found = late_times.get(row_id, at)
            assert found is not None  # the store's time decided it takes part
            times[message.key] = found
            groups[roots[row_id]].append(message)
        for group in groups.values():
            yield sorted(group, key=lambda m: (times[m.key], m.key))

    members = _members_by_root(roots)
    seen = bytearray(len(roots))
    page: list[int] = []  # roots
    size = 0
    for row_id in order:
        root = roots[row_id]
        if seen[root]:
            continue
        seen[root] = 1
        page.append(root)
        size += len(members(root))
        if size >= GROUP_PAGE:
            yield from page_of_groups(page)
            page, size = [], 0
    yield from page_of_groups(page)


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


def _classify_everything(store: Store, workers: Workers, last: int) -> array[int]:
    """Classify every stored message a page of row ids at a time (what evaluating any thread
    needs to know about all the others); each one's change counter as read, by row id (-1:
    no message, or stored since)."""
    store.forget_people()
    seen = array("q", [-1]) * (last + 1)
    # up to `last`: a message stored since has no place in `seen`, and waits
    pages = (
        (after, min(after + EVALUATION_BATCH, last)) for after in range(0, last, EVALUATION_BATCH)
    )
    for changes_seen in workers.classified_pages(pages):
        for row_id, counter in changes_seen:
            seen[row_id] = counter
    return seen


def _final_state(fingerprint: str, now: datetime, notice: Attention) -> dict[str, str]:
    return {
        POLICY_STATE: fingerprint,
        # a `--now` in the future must not make the present look like the past
        EVALUATED_STATE: min(now, datetime.now(UTC)).isoformat(),
        ATTENTION_STATE: json.dumps(asdict(notice)),
        FAILURE_STATE: "",
    }


def _merged(notice: Attention, found: PartEvaluation) -> Attention:
    """Lists a person should look at, grown by each partial evaluation."""
    return Attention(
        tuple(sorted(set(notice.untimed) | set(found.untimed))),
        tuple(sorted(set(notice.unlisted_senders) | set(found.unlisted_senders))),
        tuple(sorted(set(notice.unknown_correspondents) | set(found.unknown_correspondents))),
        (*notice.set_aside, *found.set_aside),
    )


def closure(store: Store, seeds: set[str], policy: Policy) -> set[str]:
    """Every stored message whose evaluation can depend on the `seeds`."""
    keys = set(seeds)
    frontier = set(seeds)
    # every subject is looked for around every time of what may be one thread (a message
    # found late can bring an earlier subject within the window of mail not found with it):
    # a new subject over the whole span, the others over what the span grew by
    subjects: set[str] = set()
    span: tuple[datetime, datetime] | None = None
    # the store compares arrivals, the subject fallback the times the clock counts from
    window = policy.subject_window + SEND_TIME_SPREAD
    while frontier:
        new = {s for s in store.subjects_of(frontier) if not is_generic_subject(s, policy)}
        wider = _widest(span, store.arrival_span(frontier))
        searches = _searches(subjects, span, new - subjects, wider)
        found = store.related_keys(frontier, searches, window) - keys
        subjects, span = subjects | new, wider
        keys |= found
        frontier = found
    return keys


Span = tuple[datetime, datetime]


def _widest(span: Span | None, more: Span | None) -> Span | None:
    if span is None or more is None:
        return span or more
    return min(span[0], more[0]), max(span[1], more[1])


def _searches(
    searched: set[str], span: Span | None, new: set[str], wider: Span | None
) -> list[tuple[set[str], datetime, datetime]]:
    """(subjects, first, last) still to look for: the `new` subjects over the `wider` span,
    the `searched` ones over what `span` grew by."""
    if wider is None:  # none of the messages is stored
        return []
    found = [(new, *wider)] if new else []
    if searched and span is not None:
        if wider[0] < span[0]:
            found.append((searched, wider[0], span[0]))
        if wider[1] > span[1]:
            found.append((searched, span[1], wider[1]))
    return found


def mail_context(settings: Settings, store: Store, now: datetime) -> MailContext:
    absences = store_absences(store, settings.policy, datetime.min.replace(tzinfo=UTC), now)
    return MailContext(
        frozenset(store.people()), absences, store.waivers(), store.recorded_answers()
    )


def evaluate_subset(settings: Settings, store: Store, keys: set[str], now: datetime) -> Evaluation:
    """The clock over a closed set of stored messages, with the rest of the mail's context."""
    context = mail_context(settings, store, now)
    return evaluate_messages(settings, store.messages_by_keys(keys), now, context, {})


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
