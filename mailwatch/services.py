"""Use cases: one function per thing a person or the daemon asks mailwatch to do.

Each reads the clock at most once (callers pass `now`), calls the pure core,
and talks to the world only through the store and adapters it is given.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from pathlib import Path

from mailwatch.adapters.files import ImportedItem, read_path
from mailwatch.adapters.parse import (
    UnparsableMessage,
    body_prefix_of,
    header_block,
    parse_message,
)
from mailwatch.config import Settings
from mailwatch.core.addresses import Directory
from mailwatch.core.automated import is_out_of_office
from mailwatch.core.clock import (
    Evaluation,
    classify,
    evaluate,
    people_seen_sending,
    status_as_of,
    threads_of,
)
from mailwatch.core.conversations import is_generic_subject
from mailwatch.core.model import (
    Absence,
    Classification,
    Copy,
    Message,
    Policy,
    Request,
    Role,
    Status,
    Waiver,
)
from mailwatch.privacy_policy import UNRELATED_MAIL
from mailwatch.store.repository import Store, StoredMessage

log = logging.getLogger(__name__)

IMPORT_BATCH = 500
DEFAULT_IMPORT_MAILBOX = "import"


# ---------------------------------------------------------------- evaluation
#
# After each poll or import only the threads that new mail touches are evaluated
# again: the "closure" of the changed messages (everything linked to them by a
# stored thread, a reference either way, a conversation key, or an equal subject
# within the subject window).  Their requests replace the stored ones; reports and
# nudges read the stored requests and let time pass with `status_as_of`.  A changed
# policy (configuration) re-evaluates everything once.

POLICY_STATE = "policy"
EVALUATED_STATE = "evaluated_at"
ATTENTION_STATE = "attention"
EVALUATION_LOCK = "evaluation"


@dataclass(frozen=True)
class Refresh:
    messages: int  # how many messages were evaluated again
    requests: int  # how many requests they hold
    rebuilt: bool  # everything was re-evaluated (first run, or the policy changed)


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


def refresh_requests(settings: Settings, store: Store, now: datetime) -> Refresh:
    """Re-evaluate what changed since the last evaluation and store the requests."""
    with _evaluation_turn(store) as mine:
        if not mine:
            log.warning(
                "another process kept evaluating for %s; using the stored requests", TURN_WAIT
            )
            return Refresh(0, 0, False)
        return _refresh(settings, store, now)


# Messages evaluated at once (whole threads; a longer thread alone): bounds memory after a
# first sync of years.
EVALUATION_BATCH = 20_000


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
    parts = _parts_of_whole_threads(store, keys, policy, now)
    notice = attention(store) if not rebuilt else Attention((), (), ())
    context = mail_context(settings, store, now)
    written: set[str] = set()  # threads whose requests this refresh already stored
    requests = 0
    for number, part in enumerate(parts, 1):
        evaluation = evaluate_subset(settings, store, part, now, context)
        notice = _merged(notice, evaluation)
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


def _final_state(fingerprint: str, now: datetime, notice: Attention) -> dict[str, str]:
    return {
        POLICY_STATE: fingerprint,
        # a `--now` in the future must not make the present look like the past
        EVALUATED_STATE: min(now, datetime.now(UTC)).isoformat(),
        ATTENTION_STATE: json.dumps(asdict(notice)),
    }


def _merged(notice: Attention, evaluation: Evaluation) -> Attention:
    """Lists a person should look at, grown by each partial evaluation."""
    return Attention(
        tuple(sorted(set(notice.untimed) | set(evaluation.untimed))),
        tuple(sorted(set(notice.unlisted_senders) | set(evaluation.unlisted_senders))),
        tuple(sorted(set(notice.unknown_correspondents) | set(evaluation.unknown_correspondents))),
    )


TURN_WAIT = timedelta(seconds=60)


@contextmanager
def _evaluation_turn(store: Store) -> Iterator[bool]:
    """One evaluation at a time across processes (two daemons, a daemon and a command):
    concurrent ones would swap the same threads' requests in and out."""
    with store.turn(EVALUATION_LOCK, TURN_WAIT) as mine:
        yield mine


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


def mail_context(settings: Settings, store: Store, now: datetime) -> MailContext:
    absences = store_absences(store, settings.policy, datetime.min.replace(tzinfo=UTC), now)
    return MailContext(frozenset(store.people()), absences, store.waivers())


def evaluate_subset(settings: Settings, store: Store, keys: set[str], now: datetime,
                    context: MailContext | None = None) -> Evaluation:  # fmt: skip
    """The clock over a closed set of messages, with the rest of the mail's `context` (read
    from the store unless given: a refresh in parts reads it once)."""
    context = context or mail_context(settings, store, now)
    return evaluate(store.messages_by_keys(keys), settings.policy, now, context.waivers,
                    known_people=context.people, absences=context.absences)  # fmt: skip


def _derived(messages: Sequence[Message], classes: dict[str, Classification],
             policy: Policy) -> list[dict]:  # fmt: skip
    rows = []
    for message in messages:
        c = classes[message.key]
        rows.append({
            "key": message.key,
            "role": c.role.value,
            "responder": c.responder,
            "at": c.at,
            "automated": c.automated,
            "out_of_office": c.role is Role.STAFF and c.automated is not None
            and is_out_of_office(message, policy),
        })  # fmt: skip
    return rows


def store_absences(store: Store, policy: Policy, since: datetime, until: datetime) -> list[Absence]:
    """Staff absences inferred from their out-of-office replies (response-clock.md:
    until their next human mail, at most `absence_max`) that overlap [since, until]."""
    absences = []
    for who, start, key, back in store.out_of_office_replies():
        if start > until or start + policy.absence_max < since:
            continue
        end = start + policy.absence_max
        if back is not None:
            end = min(end, back)
        absences.append(Absence(who=who, start=start, end=end, evidence=key))
    return sorted(absences, key=lambda a: (a.start, a.who))


def current_requests(settings: Settings, store: Store, now: datetime,
                     since: datetime | None = None,
                     until: datetime | None = None) -> list[Request]:  # fmt: skip
    """The stored requests received in [since, until), their status as of `now`."""
    refresh_requests(settings, store, now)
    return [status_as_of(r, settings.policy, now) for r in store.requests(since, until)]


def waiting_requests(settings: Settings, store: Store, now: datetime) -> list[Request]:
    """Requests open or overdue at `now`, oldest first (not those closed by expiry)."""
    refresh_requests(settings, store, now)
    current = (status_as_of(r, settings.policy, now) for r in store.waiting_requests())
    return [r for r in current if r.closed_at is None and r.received_at <= now]


def historical_requests(settings: Settings, store: Store, now: datetime) -> list[Request]:
    """Every request as of an instant in the past: evaluated again from the mail that had
    arrived by then, plus the kept requests whose mail is gone (a forgotten address, mail
    past retention), as they were last evaluated."""
    found = list(evaluate_store(settings, store, now).requests)
    kept = store.orphaned_requests(received_by=now)
    return found + [status_as_of(_as_known_at(request, now), settings.policy, now)
                    for request in kept]  # fmt: skip


def _as_known_at(request: Request, now: datetime) -> Request:
    """A stored request without what happened to it after `now` (an answer, a closing)."""
    if request.answered_at is not None and request.answered_at > now:
        request = replace(request, answered_at=None, answered_by=None, responder=None,
                          response_seconds=None, status=Status.OPEN)  # fmt: skip
    if request.closed_at is not None and request.closed_at > now:
        request = replace(request, closed_at=None)
    return request


def evaluate_store(settings: Settings, store: Store, now: datetime) -> Evaluation:
    """The clock over all mail that had arrived at `now`, from scratch: the exact answer
    for an instant in the past (`--now` before the last evaluation)."""
    return evaluate(store.load_messages(arrived_before=now + timedelta(seconds=1)),
                    settings.policy, now, store.waivers())  # fmt: skip


def is_historical(store: Store, now: datetime) -> bool:
    """Is `now` before the last evaluation? Then stored requests may know the future."""
    evaluated = store.state(EVALUATED_STATE)
    return evaluated is not None and now < datetime.fromisoformat(evaluated)


# ---------------------------------------------------------------- import


@dataclass
class ImportResult:
    read: int = 0
    new: int = 0
    set_aside: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def import_paths(
    settings: Settings,
    store: Store,
    paths: Sequence[Path],
    now: datetime,
    *,
    mailbox: str | None = None,
    sent: bool = False,
) -> ImportResult:
    """Backfill mail files through the same pipeline as IMAP (idempotent)."""
    result = ImportResult()
    batch: list[StoredMessage] = []
    for path in paths:
        for item in read_path(path, sent=sent):
            if not isinstance(item, ImportedItem):
                result.warnings.append(f"{item.location}: {item.text}")
                continue
            result.read += 1
            stored = _stored(item, mailbox or DEFAULT_IMPORT_MAILBOX, store, now, result)
            if stored is not None:
                batch.append(stored)
            if len(batch) >= IMPORT_BATCH:
                result.new += store.add_messages(batch)
                batch = []
    if batch:
        result.new += store.add_messages(batch)
    refresh_requests(settings, store, now)
    return result


def _stored(
    item: ImportedItem, mailbox: str, store: Store, now: datetime, result: ImportResult
) -> StoredMessage | None:
    try:
        message = parse_message(item.raw, body_prefix=body_prefix_of(item.raw))
    except Exception as error:  # one bad file never stops an import: set it aside, go on
        reason = (
            str(error)
            if isinstance(error, UnparsableMessage)
            else f"{type(error).__name__}: {error}"
        )
        store.quarantine(item.location, reason, item.raw, now)
        result.set_aside.append(f"{item.location}: {reason}")
        return None
    copy = Copy(
        mailbox=mailbox,
        folder=item.folder,
        sent_folder=item.sent_folder,
        envelope_time=item.envelope_time,
    )
    return StoredMessage(
        replace(message, copies=(copy,)), header_block(item.raw), location=item.location
    )


# ---------------------------------------------------------------- report and status


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    requests: tuple[Request, ...]


def report(settings: Settings, store: Store, now: datetime, since: datetime | None = None,
           until: datetime | None = None) -> Report:  # fmt: skip
    """Every request received in [since, until), with its status as of `now`."""
    if is_historical(store, now):
        requests = historical_requests(settings, store, now)
        chosen = tuple(r for r in requests if _within(r, since, until))
        return Report(now, chosen)
    return Report(now, tuple(current_requests(settings, store, now, since, until)))


def _within(request: Request, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or request.received_at >= since) and (
        until is None or request.received_at < until
    )


def status(settings: Settings, store: Store, now: datetime) -> Report:
    """Requests open or overdue now, oldest first."""
    if is_historical(store, now):
        requests = historical_requests(settings, store, now)
        waiting = (
            r for r in requests if r.status in (Status.OPEN, Status.OVERDUE) and r.closed_at is None
        )
        return Report(now, tuple(sorted(waiting, key=lambda r: r.received_at)))
    return Report(now, tuple(waiting_requests(settings, store, now)))


@dataclass(frozen=True)
class Attention:
    """What a person should look at besides the requests."""

    untimed: tuple[str, ...]
    unlisted_senders: tuple[str, ...]
    unknown_correspondents: tuple[str, ...]


def attention(store: Store) -> Attention:
    stored = store.state(ATTENTION_STATE)
    if stored is None:
        return Attention((), (), ())
    return Attention(**{name: tuple(values) for name, values in json.loads(stored).items()})


# ---------------------------------------------------------------- waive and explain


class UnknownMessage(Exception):
    pass


def normalise_message_id(text: str) -> str:
    text = text.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    local, _, domain = text[1:-1].rpartition("@")
    return f"<{local}@{domain.lower()}>" if local else text


def waive(
    settings: Settings, store: Store, message_id: str, now: datetime, reason: str = ""
) -> tuple[Waiver, Request | None]:
    """Mark "no reply needed" the request this client message belongs to."""
    key = normalise_message_id(message_id)
    found = store.messages_by_keys([key])
    if not found:
        raise UnknownMessage(f"no stored message has Message-ID {key}")
    role = Directory(settings.policy).role(found[0].from_addr)
    if role is not Role.CLIENT:
        raise UnknownMessage(f"{key} is not a client message (it is {role.value} mail)")
    waiver = Waiver(key, by=f"command line ({getpass.getuser()})", seen_at=now, reason=reason)
    store.add_waiver(waiver)
    evaluation = evaluate_subset(settings, store, closure(store, {key}, settings.policy), now)
    if not is_historical(store, now):
        refresh_requests(settings, store, now)
    request = next((r for r in evaluation.requests if key in r.messages), None)
    return waiver, request


@dataclass(frozen=True)
class Explanation:
    thread: str
    lines: tuple[tuple[datetime | None, str, str, str, str], ...]  # at, key, from, role, verdict
    requests: tuple[Request, ...]


def explain(settings: Settings, store: Store, message_id: str, now: datetime) -> Explanation:
    """The messages of a request's thread, which counted, which did not, and why."""
    key = normalise_message_id(message_id)
    keys = closure(store, {key}, settings.policy)
    messages = store.messages_by_keys(keys)
    evaluation = evaluate_subset(settings, store, keys, now)
    thread = evaluation.thread_of.get(key)
    if thread is None:
        if key in evaluation.classifications:
            raise UnknownMessage(f"{key} has no usable timestamp, so it is not measured")
        raise UnknownMessage(f"no stored message has Message-ID {key}")
    members = sorted(
        (m for m in messages if evaluation.thread_of.get(m.key) == thread),
        key=lambda m: (evaluation.classifications[m.key].at, m.key),
    )
    lines = tuple(_explain_line(m.key, m.from_addr or "", evaluation) for m in members)
    requests = tuple(r for r in evaluation.requests if r.thread == thread)
    return Explanation(thread, lines, requests)


def _explain_line(key: str, sender: str, evaluation: Evaluation) -> tuple:
    c = evaluation.classifications[key]
    if c.automated:
        verdict = f"automated ({c.automated}): does not count"
    elif c.role is Role.CLIENT:
        verdict = f"client of {c.account}: counts"
    elif c.role is Role.STAFF and not c.can_answer:
        verdict = f"{c.responder} is not a listed person: cannot answer"
    elif c.role is Role.STAFF:
        verdict = f"staff ({c.responder}): can answer when addressed to the client"
    else:
        verdict = "outside sender: not measured"
    return (c.at, key, sender, c.role.value, f"{verdict}; time from {c.time_source}")
