"""What the incremental evaluation stores and reads: messages awaiting evaluation, the
messages related to them, each message's classification, the people seen sending,
out-of-office replies, the computed requests, and named state rows."""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
    update,
)

from mailwatch.core.model import Request, Status, Verdict
from mailwatch.core.periods import Period
from mailwatch.core.stats import Outcome
from mailwatch.store.db import (
    CHUNK,
    Database,
    chunks,
    dialect_insert,
    execute_many,
    read_state,
    reading,
    save_state,
    writing,
)
from mailwatch.store.privacy import retention_horizon
from mailwatch.store.rows import (
    AS_GIVEN,
    REQUEST_COLUMNS,
    STATUSES,
    VERDICT_COLUMNS,
    json_as_text,
    json_strings,
    read_requests,
    verdict_columns,
    written_insert,
    written_time,
)
from mailwatch.store.tables import COPIES, MESSAGES, PEOPLE, REFERENCES, REQUESTS


class StoredOutcome(NamedTuple):
    """A stored request read light: its outcome as stored (final when answered or waived),
    with what tells whether it must be read in full.  A tuple, as `Outcome` is."""

    outcome: Outcome
    period: int  # the index of the period it was received in
    final: bool  # answered or waived: time passing changes nothing
    waiver_seen_at: datetime | None
    messages_json: str  # its human client messages, as stored: read only when needed

    @property
    def messages(self) -> list[str]:
        return json_strings(self.messages_json)


class EvaluationStore(Database):
    # ------------------------------------------------------------ awaiting evaluation

    def dirty_keys(self) -> dict[str, int]:
        """Messages whose thread must be evaluated again, with their change counters,
        earliest arrival first."""
        query = (
            select(MESSAGES.c.key, MESSAGES.c.dirty)
            # a literal, as the partial index says it: SQLite matches the text
            .where(MESSAGES.c.dirty > literal_column("0"))
            .order_by(MESSAGES.c.arrived_at, MESSAGES.c.id)
        )
        with reading(self.engine) as conn:
            return {row.key: row.dirty for row in conn.execute(query)}

    def forget_people(self) -> None:
        """The people seen sending are found anew (the policy changed)."""
        with writing(self.engine) as conn:
            conn.execute(delete(PEOPLE))

    def related_keys(
        self,
        keys: set[str],
        searches: Sequence[tuple[set[str], datetime, datetime]],
        window: timedelta,
    ) -> set[str]:
        """Messages one link away from `keys`: the same stored thread, a reference either
        way, the same conversation key, or for each of the `searches` (normalised subjects,
        first and last arrival), one of the subjects arriving within `window` of those
        arrivals or in a thread with mail within it (as far as the subject fallback
        reaches)."""
        with reading(self.engine) as conn:
            rows = _linking_columns(conn, keys)
            found = _sharing_thread_or_reference(conn, rows)
            for subjects, first, last in searches:
                found |= _with_subjects(conn, subjects, first, last, window)
            for chunk in chunks(sorted(keys)):
                referencing = select(REFERENCES.c.message_id).where(REFERENCES.c.ref_key.in_(chunk))
                found.update(_keys_of(conn, referencing))
            for chunk in chunks([row["id"] for row in rows]):
                thrids = select(COPIES.c.gm_thrid).where(
                    COPIES.c.message_id.in_(chunk), COPIES.c.gm_thrid.is_not(None)
                )
                found.update(
                    _keys_of(conn, select(COPIES.c.message_id).where(COPIES.c.gm_thrid.in_(thrids)))
                )
        return found

    def arrival_span(self, keys: set[str]) -> tuple[datetime, datetime] | None:
        """The first and the last arrival among these stored messages (None: none stored)."""
        with reading(self.engine) as conn:
            spans = [
                conn.execute(
                    select(func.min(MESSAGES.c.arrived_at), func.max(MESSAGES.c.arrived_at)).where(
                        MESSAGES.c.key.in_(chunk)
                    )
                ).one()
                for chunk in chunks(sorted(keys))
            ]
        firsts = [first for first, _ in spans if first is not None]
        lasts = [last for _, last in spans if last is not None]
        return (min(firsts), max(lasts)) if firsts else None

    def subjects_of(self, keys: set[str]) -> set[str]:
        subjects: set[str] = set()
        with reading(self.engine) as conn:
            for chunk in chunks(sorted(keys)):
                query = select(MESSAGES.c.norm_subject).where(MESSAGES.c.key.in_(chunk))
                subjects.update(conn.scalars(query))
        return subjects

    # ------------------------------------------------------------ reference components

    def in_time_order(self, now: datetime, late: Sequence[tuple[datetime, str, int]]) -> array[int]:
        """The row ids of every timed message with no time after `now`, merged with `late`
        ((time, key, row id) of the messages the core decided about), in order of time,
        then key. Read in one stream and held as an array: 8 bytes a message, and no
        reading transaction open while the evaluation writes."""
        query = (
            select(MESSAGES.c.at, MESSAGES.c.key, MESSAGES.c.id)
            .where(MESSAGES.c.at.is_not(None), ~_time_after(now))
            .order_by(MESSAGES.c.at)
        )
        order = array("q")
        with reading(self.engine) as conn:
            stream = _by_time_then_key(conn.execute(query.execution_options(yield_per=CHUNK)))
            order.extend(row_id for _, _, row_id in heapq.merge(stream, sorted(late)))
        return order

    def outside_time_order(self, now: datetime) -> list[int]:
        """The row ids of the messages `in_time_order` leaves out: untimed, or with some time
        after `now` (among them the late ones it was given)."""
        query = select(MESSAGES.c.id).where(or_(MESSAGES.c.at.is_(None), _time_after(now)))
        with reading(self.engine) as conn:
            return list(conn.scalars(query.order_by(MESSAGES.c.id)))

    def reference_components(self, now: datetime, links_of: dict[int, list[str]]) -> array[int]:
        """The messages joined by reference links and conversation keys: the root of each
        row id's component (-1 for a message that takes no part), among every timed
        message with no time after `now`, and the row ids of `links_of` (those decided
        by the core as known at `now`) with their links. Memory: 8 bytes a message."""
        with reading(self.engine) as conn:
            size = (conn.scalar(select(func.max(MESSAGES.c.id))) or 0) + 1
            parent = array("q", [-1]) * size
            for row_id in links_of:
                parent[row_id] = row_id
            late_links: dict[str, int] = {}
            for row_id, links in links_of.items():
                for link in links:
                    _union(parent, row_id, late_links.setdefault(link, row_id))
            previous: tuple[str | None, int] = (None, -1)
            for link, row_id in conn.execute(_link_rows(now).execution_options(yield_per=CHUNK)):
                if parent[row_id] < 0:
                    parent[row_id] = row_id
                if link == previous[0]:
                    _union(parent, row_id, previous[1])
                if link in late_links:
                    _union(parent, row_id, late_links[link])
                previous = (link, row_id)
        for row_id in range(size):
            if parent[row_id] >= 0:
                parent[row_id] = _root(parent, row_id)
        return parent

    # ------------------------------------------------------------ classifications and people

    def save_classifications(
        self, verdicts: Sequence[tuple[int, Verdict, int]], policy: str, people: set[str]
    ) -> None:
        """Each message's verdict found under the policy whose fingerprint is `policy`, by
        (row id, verdict, change counter as read), and the `people` seen sending, in one
        transaction. A message changed since it was read (a copy added) keeps the verdict
        but not the policy: it is classified again."""
        if not verdicts and not people:
            return
        columns: dict[str, Any] = {
            c: bindparam(f"new_{c}", type_=AS_GIVEN) for c in VERDICT_COLUMNS
        }
        columns["classified_under"] = case(
            (MESSAGES.c.dirty == bindparam("seen"), columns["classified_under"]), else_=None
        )
        classify = update(MESSAGES).where(MESSAGES.c.id == bindparam("row_id")).values(columns)
        with writing(self.engine) as conn:
            time = written_time(conn)
            rows = [
                {f"new_{c}": v for c, v in verdict_columns(verdict, policy, time).items()}
                | {"row_id": row_id, "seen": seen}
                for row_id, verdict, seen in verdicts
            ]
            execute_many(conn, classify, rows)
            _add_people(conn, people)

    def classified_between(
        self, after: int, upto: int, policy: str
    ) -> tuple[list[tuple[int, int]], set[tuple[str | None, str | None]]]:
        """Of the messages with a row id in (after, upto] classified under the policy whose
        fingerprint is `policy`: (row id, change counter) of each, and the (From, Sender)
        addresses of those that are human mail in a Sent folder (who sent them are people,
        if staff)."""
        page = (MESSAGES.c.id > after, MESSAGES.c.id <= upto, MESSAGES.c.classified_under == policy)
        in_sent = exists().where(COPIES.c.message_id == MESSAGES.c.id, COPIES.c.sent_folder)
        senders = (
            select(MESSAGES.c.from_addr, MESSAGES.c.sender_addr)
            .distinct()
            .where(*page, MESSAGES.c.automated.is_(None), in_sent)
        )
        with reading(self.engine) as conn:
            counters = [
                (row_id, dirty)
                for row_id, dirty in conn.execute(
                    select(MESSAGES.c.id, MESSAGES.c.dirty).where(*page)
                )
            ]
            return counters, {(from_addr, sender) for from_addr, sender in conn.execute(senders)}

    def add_people(self, people: set[str]) -> None:
        with writing(self.engine) as conn:
            _add_people(conn, people)

    def people(self) -> set[str]:
        with reading(self.engine) as conn:
            return set(conn.scalars(select(PEOPLE.c.address)))

    def out_of_office_replies(self) -> list[tuple[str, datetime, str, datetime | None]]:
        """(responder, sent at, Message-ID, when they next sent human mail or None) of every
        staff out-of-office auto-reply, in one query."""
        later = MESSAGES.alias("later")
        back = (
            select(func.min(later.c.at))
            .where(
                later.c.responder == MESSAGES.c.responder,
                # a literal, as in the partial index's condition: PostgreSQL cannot prove a
                # bound parameter matches it in a generic plan
                later.c.role == literal_column("'staff'"),
                later.c.automated.is_(None),
                later.c.at > MESSAGES.c.at,
            )
            .scalar_subquery()
        )
        query = select(MESSAGES.c.responder, MESSAGES.c.at, MESSAGES.c.key, back).where(
            # "= 1" on SQLite, "= true" on PostgreSQL: the partial index's condition
            MESSAGES.c.out_of_office == true(),
            MESSAGES.c.at.is_not(None),
        )
        with reading(self.engine) as conn:
            return [(row[0], row[1], row[2], row[3]) for row in conn.execute(query)]

    # ------------------------------------------------------------ an evaluation and its requests

    def save_evaluation(
        self,
        marks: Mapping[int, tuple[str | None, int]],
        requests: Sequence[dict[str, Any]],
        threads: set[str],
        state: dict[str, str],
    ) -> None:
        """Store one evaluation of a closed set of threads, in one transaction: each
        message's thread by row id, `marks` (thread, changes seen): no longer awaiting
        evaluation unless it changed again since its counter was read; and the requests of
        `threads` (every old and new thread id involved) swapped for `requests`, as their
        rows are written (`rows.request_rows`, built where the threads were evaluated).
        """
        with writing(self.engine) as conn:
            _save_threads(conn, marks)
            _swap_requests(conn, threads, requests)
            for name, value in state.items():
                save_state(conn, name, value)

    def requests(
        self, received_since: datetime | None = None, received_until: datetime | None = None
    ) -> list[Request]:
        """The stored requests received in [received_since, received_until), oldest first."""
        query = select(*REQUEST_COLUMNS).order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        if received_since is not None:
            query = query.where(REQUESTS.c.received_at >= received_since)
        if received_until is not None:
            query = query.where(REQUESTS.c.received_at < received_until)
        with reading(self.engine) as conn:
            return read_requests(conn, query)

    def requests_in_full_from(
        self, periods: Sequence[Period], in_full: Callable[[StoredOutcome], bool]
    ) -> tuple[list[list[StoredOutcome]], list[Request], list[Request]]:
        """The stored requests received since the first of `periods` (one after the other),
        in one transaction: those received in each period as outcomes; in full, those of
        them `in_full` picks; and in full, every one received after the last period
        (stored order in each)."""
        ends = [p.end for p in periods]
        # the period of each request told by the database: a time read back from SQLite is
        # parsed from text, the larger part of reading these few columns
        period = case(*((REQUESTS.c.received_at < end, index) for index, end in enumerate(ends)))
        waived = REQUESTS.c.status == Status.WAIVED.value
        light = (
            select(
                REQUESTS.c.id,
                period.label("period"),
                REQUESTS.c.opened_by,
                REQUESTS.c.account,
                REQUESTS.c.status,
                REQUESTS.c.response_seconds,
                or_(REQUESTS.c.answered_at.is_not(None), waived).label("final"),
                # only a waived request has a waiver to read: the others hold JSON null
                case((waived, REQUESTS.c.waiver["seen_at"].as_string())).label("seen_at"),
                json_as_text(REQUESTS.c.messages),
            )
            .where(REQUESTS.c.received_at >= periods[0].start, REQUESTS.c.received_at < ends[-1])
            .order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        )
        whole = select(*REQUEST_COLUMNS).order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        with reading(self.engine) as conn:
            outcomes: list[list[StoredOutcome]] = [[] for _ in periods]
            picked = []
            for row_id, *columns in _driver_rows(conn, light):
                stored = _stored_outcome(*columns)
                outcomes[stored.period].append(stored)
                if in_full(stored):
                    picked.append(row_id)
            found = [
                request
                for ids in chunks(picked)
                for request in read_requests(conn, whole.where(REQUESTS.c.id.in_(ids)))
            ]
            later = whole.where(REQUESTS.c.received_at >= ends[-1])
            return outcomes, found, read_requests(conn, later)

    def orphaned_requests(self, received_by: datetime) -> list[Request]:
        """Stored requests whose opening message is no longer stored (a forgotten address's
        conversations carry tokens instead; mail past retention is deleted), received by
        `received_by`: evaluating the stored mail again cannot give them back."""
        opening = select(MESSAGES.c.id).where(MESSAGES.c.key == REQUESTS.c.opened_by)
        query = (
            select(*REQUEST_COLUMNS)
            .where(~exists(opening), REQUESTS.c.received_at <= received_by)
            .order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        )
        with reading(self.engine) as conn:
            return read_requests(conn, query)

    def waiting_requests(self) -> list[Request]:
        """Unanswered, unwaived requests that no later mail closed: open or overdue."""
        query = (
            select(*REQUEST_COLUMNS)
            .where(
                REQUESTS.c.answered_at.is_(None),
                REQUESTS.c.status != "waived",
                REQUESTS.c.closed_at.is_(None),
            )
            .order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        )
        with reading(self.engine) as conn:
            return read_requests(conn, query)

    # ------------------------------------------------------------ state rows

    def state(self, name: str) -> str | None:
        with reading(self.engine) as conn:
            return read_state(conn, name)

    def set_state(self, name: str, value: str) -> None:
        with writing(self.engine) as conn:
            save_state(conn, name, value)


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, held at the first or last instant a datetime can hold: a time that
    cannot be true (stored before mailwatch checked times) must not overflow the window."""
    try:
        return moment + by
    except OverflowError:
        return (datetime.max if by > timedelta(0) else datetime.min).replace(tzinfo=UTC)


def _with_subjects(
    conn: Connection, subjects: set[str], first: datetime, last: datetime, window: timedelta
) -> set[str]:
    """The messages with one of these normalised subjects arriving within `window` of
    [first, last], or in a thread with mail within it."""
    since, until = _shifted(first, -window), _shifted(last, window)
    # threads with mail within the window: the subject fallback matches a thread by any
    # subject it ever had, however long ago
    active = select(MESSAGES.c.thread_id).where(MESSAGES.c.arrived_at.between(since, until))
    found: set[str] = set()
    for chunk in chunks(sorted(subjects)):
        query = select(MESSAGES.c.key).where(
            MESSAGES.c.norm_subject.in_(chunk),
            or_(MESSAGES.c.arrived_at.between(since, until), MESSAGES.c.thread_id.in_(active)),
        )
        found.update(conn.scalars(query))
    return found


def _linking_columns(conn: Connection, keys: set[str]) -> list[RowMapping]:
    """What links these messages to others: ids, threads, references (their arrivals are
    `arrival_span`'s)."""
    rows: list[RowMapping] = []
    for chunk in chunks(sorted(keys)):
        query = select(
            MESSAGES.c.id,
            MESSAGES.c.thread_id,
            MESSAGES.c.thread_index,
            MESSAGES.c.in_reply_to,
            MESSAGES.c.references,
        ).where(MESSAGES.c.key.in_(chunk))
        rows += conn.execute(query).mappings().all()
    return rows


def _sharing_thread_or_reference(conn: Connection, rows: list[RowMapping]) -> set[str]:
    """Messages of the same stored thread or conversation key, or referenced by `rows`."""
    threads = sorted({row["thread_id"] for row in rows if row["thread_id"]})
    indexes = sorted({row["thread_index"] for row in rows if row["thread_index"]})
    referenced = sorted({r for row in rows for r in (*row["in_reply_to"], *row["references"])})
    found: set[str] = set()
    for column, values in (
        (MESSAGES.c.thread_id, threads),
        (MESSAGES.c.thread_index, indexes),
        (MESSAGES.c.key, referenced),
    ):
        for chunk in chunks(values):
            found.update(conn.scalars(select(MESSAGES.c.key).where(column.in_(chunk))))
    return found


def _keys_of(conn: Connection, message_ids: Any) -> set[str]:
    """The keys of the messages whose ids `message_ids` (a subquery) selects."""
    return set(conn.scalars(select(MESSAGES.c.key).where(MESSAGES.c.id.in_(message_ids))))


def _add_people(conn: Connection, people: set[str]) -> None:
    for chunk in chunks(sorted(people)):
        conn.execute(
            dialect_insert(conn, PEOPLE).on_conflict_do_nothing(),
            [{"address": address} for address in chunk],
        )


def _save_threads(conn: Connection, marks: Mapping[int, tuple[str | None, int]]) -> None:
    """Each message's thread; evaluated, unless it changed again since its counter was read."""
    evaluated = (
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("row_id"))
        .values(
            # a change stored while this evaluation ran stays to be evaluated
            dirty=case(
                (MESSAGES.c.dirty == bindparam("seen"), literal_column("0")),
                else_=MESSAGES.c.dirty,
            ),
            thread_id=bindparam("new_thread"),
        )
    )
    rows = [{"row_id": i, "new_thread": marks[i][0], "seen": marks[i][1]} for i in sorted(marks)]
    execute_many(conn, evaluated, rows)


def _by_time_then_key(
    rows: Iterable[Any],
) -> Iterator[tuple[datetime, str, int]]:
    """(time, key, row id) rows in order of time given, in order of time then key: keys in
    Python's order, as a database's collation may differ."""
    same_time: list[tuple[datetime, str, int]] = []
    for at, key, row_id in rows:
        if same_time and at != same_time[0][0]:
            yield from sorted(same_time)
            same_time = []
        same_time.append((at, key, row_id))
    yield from sorted(same_time)


def _swap_requests(conn: Connection, threads: set[str], requests: Sequence[dict[str, Any]]) -> None:
    """Replace the stored requests of `threads` with `requests` (their rows).  Requests
    received before the retention horizon are history: their messages are gone, so they
    are neither deleted nor replaced by an evaluation that can no longer see them."""
    horizon = retention_horizon(conn)
    for chunk in chunks(sorted(threads)):
        stale = REQUESTS.delete().where(REQUESTS.c.thread.in_(chunk))
        if horizon is not None:
            stale = stale.where(REQUESTS.c.received_at >= horizon)
        conn.execute(stale)
    # a row's time as written compares as the time does (text of one format on SQLite)
    written_horizon = written_time(conn)(horizon)
    rows = [
        row for row in requests if written_horizon is None or row["received_at"] >= written_horizon
    ]
    if rows:
        insert = written_insert(conn, REQUESTS, list(rows[0]))
        execute_many(conn, insert, rows)


def _time_after(now: datetime) -> ColumnElement[bool]:
    """Some time of the message or of a copy is after `now` (a superset of the messages
    that had not arrived by then, or had copies that had not)."""
    late_copy = (
        select(COPIES.c.id)
        .where(
            COPIES.c.message_id == MESSAGES.c.id,
            or_(
                COPIES.c.internal_date > now,
                COPIES.c.received_time > now,
                COPIES.c.envelope_time > now,
            ),
        )
        .exists()
    )
    # NULL > now is NULL, not false: its negation would leave out every message
    return or_(
        MESSAGES.c.arrived_at > now,
        and_(MESSAGES.c.received_time.is_not(None), MESSAGES.c.received_time > now),
        and_(MESSAGES.c.date.is_not(None), MESSAGES.c.date > now),
        late_copy,
    )


def _link_rows(now: datetime) -> Select[Any]:
    """(link, row id) of every timed message with no time after `now`, ordered by link:
    its own key, each Message-ID it references, its Thread-Index conversation, and each
    copy's Gmail thread in that mailbox (core/conversations.thread_links)."""
    taking_part = select(MESSAGES.c.id).where(MESSAGES.c.at.is_not(None), ~_time_after(now))
    ids = MESSAGES.c.id.in_(taking_part)
    keys = select(MESSAGES.c.key.label("link"), MESSAGES.c.id.label("row_id")).where(ids)
    references = select(REFERENCES.c.ref_key, REFERENCES.c.message_id).where(
        REFERENCES.c.message_id.in_(taking_part)
    )
    thread_index = select(literal("thread-index:") + MESSAGES.c.thread_index, MESSAGES.c.id).where(
        ids, MESSAGES.c.thread_index.is_not(None)
    )
    gmail = select(
        literal("gm-thrid:") + COPIES.c.mailbox + literal(":") + COPIES.c.gm_thrid,
        COPIES.c.message_id,
    ).where(COPIES.c.message_id.in_(taking_part), COPIES.c.gm_thrid.is_not(None))
    links = union_all(keys, references, thread_index, gmail).subquery()
    return select(links.c.link, links.c.row_id).order_by(links.c.link)


def _root(parent: array[int], item: int) -> int:
    while parent[item] != item:
        parent[item] = parent[parent[item]]  # path halving
        item = parent[item]
    return item


def _union(parent: array[int], a: int, b: int) -> None:
    root_a, root_b = _root(parent, a), _root(parent, b)
    if root_a != root_b:
        # the smaller id becomes the root, so the result never depends on input order
        parent[max(root_a, root_b)] = min(root_a, root_b)


def _driver_rows(conn: Connection, query: Select[Any]) -> Iterator[Any]:
    """The rows of `query` as the driver gives them, for tens of thousands of rows of
    columns that need no conversion: SQLAlchemy's rows cost as much again as the driver's
    (the query still bound and compiled by SQLAlchemy)."""
    with conn.execute(query) as result:
        while rows := result.cursor.fetchmany(CHUNK):
            yield from rows


def _stored_outcome(
    period: int,
    opened_by: str,
    account: str,
    status: str,
    response_seconds: int | None,
    final: bool | int,  # 1 or 0 from SQLite
    seen_at: str | None,
    messages: str,
) -> StoredOutcome:
    return StoredOutcome(
        outcome=Outcome(opened_by, account, STATUSES[status], response_seconds),
        period=period,
        final=bool(final),
        waiver_seen_at=None if seen_at is None else datetime.fromisoformat(seen_at),
        messages_json=messages,
    )
