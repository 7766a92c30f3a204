"""Worker processes for a first evaluation of years of mail: they classify and store
pages of the messages not classified as they were stored, then read and evaluate parts of
whole threads while the evaluating process threads the mail and stores what they found
(docs/benchmarks.md: reading mail back and the clock are most of a first evaluation, and
CPython runs one core per process).

A page's classification is its own transaction, in any order; the threads and requests of
the parts are stored by the evaluating process alone (one transaction a part), which knows
the threads already written; a worker encodes its part's requests as their rows. The
workers are forked from a forkserver that imports their modules once, and the evaluating
process classifies pages and evaluates parts itself while it does. A small store, an
in-memory database or a single core evaluates in the evaluating process itself, through
the same calls.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from mailwatch.collector import collector_paused
from mailwatch.config import Settings
from mailwatch.evaluation_parts import (
    MailContext,
    PartEvaluation,
    classified_page,
    evaluated_part,
    stored_verdicts,
)
from mailwatch.processes import InThisProcess, leave_stopping_to_the_starter, usable_cores
from mailwatch.store.repository import Store

Result = TypeVar("Result")

# Worker processes at most: the evaluating process's own work (threading, writing) is
# about a core's worth, so more cores than this would mostly wait for it.
MOST_WORKERS = 2


@dataclass(frozen=True)
class _Work:
    settings: Settings
    store: Store

    def classify_ids(self, after: int, upto: int) -> list[tuple[int, int]]:
        """Classify and store the messages with row ids in (after, upto] that were not
        classified under the policy as they were stored: each one's row id and change
        counter as read."""
        with collector_paused():
            return classified_page(self.settings, self.store, after, upto)

    def evaluate_keys(
        self, now: datetime, context: MailContext, thread_of: dict[str, str], rule_headers: bool
    ) -> PartEvaluation:
        """Read and evaluate a part: each message's thread, by key."""
        with collector_paused():
            part = self.store.loaded_by_keys(thread_of, rule_headers)
            verdicts = stored_verdicts(part)
            return evaluated_part(
                self.settings, now, context, part, verdicts, self.store.dialect, thread_of
            )


_worker: _Work | None = None  # in a worker process: its work, opened by `_start`
# in a worker process: (`now`, context) of the evaluation, and the bytes they came as
_circumstances: tuple[bytes, datetime, MailContext] | None = None


def _start(settings: Settings, database_url: str) -> None:
    global _worker
    leave_stopping_to_the_starter()
    _worker = _Work(settings, Store(database_url))


def _classify_ids(after: int, upto: int) -> list[tuple[int, int]]:
    assert _worker is not None
    return _worker.classify_ids(after, upto)


def _evaluate_keys(
    circumstances: bytes, thread_of: dict[str, str], rule_headers: bool
) -> PartEvaluation:
    """`circumstances`: `now` and the context, pickled once for every part and decoded once
    by each worker (the context holds every absence of years of mail)."""
    global _circumstances
    assert _worker is not None
    if _circumstances is None or _circumstances[0] != circumstances:
        _circumstances = (circumstances, *pickle.loads(circumstances))
    _, now, context = _circumstances
    return _worker.evaluate_keys(now, context, thread_of, rule_headers)


class Workers:
    """Runs the classification of pages and the evaluation of parts in worker processes,
    or in this one (`processes` 0)."""

    def __init__(self, settings: Settings, store: Store, processes: int):
        self.processes = processes
        self.work = _Work(settings, store)
        self.starter = ThreadPoolExecutor(1)
        self.started: Future[None] | None = None
        self.executor: Executor
        if processes:
            self.executor = ProcessPoolExecutor(
                processes,
                mp_context=_forkserver(),
                initializer=_start,
                initargs=(settings, store.url.render_as_string(hide_password=False)),
            )
        else:
            self.executor = InThisProcess()

    def __enter__(self) -> Workers:
        if self.processes:
            # in a thread: starting the first worker waits for the forkserver, while this
            # process classifies and evaluates itself
            self.started = self.starter.submit(self._first_worker_started)
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.starter.shutdown(wait=True)
        if self.processes:
            _stop_forkserver()

    def _start_settled(self) -> bool:
        """The first worker started, or failed to: a failure is raised as the workers are
        given work (and ignored if this process did all of it)."""
        return self.started is not None and self.started.done()

    def classified_pages(
        self, ranges: Iterable[tuple[int, int]]
    ) -> Iterator[list[tuple[int, int]]]:
        """Each range of row ids (after, upto] classified and stored, in the order they end:
        each message's row id and change counter as read."""
        if not self.processes:
            return self._unordered(self.work.classify_ids, ranges)
        return self._classified_while_starting(iter(ranges))

    def _classified_while_starting(
        self, ranges: Iterator[tuple[int, int]]
    ) -> Iterator[list[tuple[int, int]]]:
        """This process classifies pages while the workers start (the forkserver importing
        their modules takes about as long as classifying 10,000 messages), then the
        workers classify the rest."""
        for after, upto in ranges:
            yield self.work.classify_ids(after, upto)
            if self._start_settled():
                break
        yield from self._unordered(_classify_ids, ranges)

    def _first_worker_started(self) -> None:
        """Once one worker runs, the forkserver forks the others in milliseconds."""
        self.executor.submit(os.getpid).result()

    def evaluated_parts(
        self,
        parts: Iterable[dict[str, str]],
        rule_headers: bool,
        now: datetime,
        context: MailContext,
    ) -> Iterator[PartEvaluation]:
        """Each part (each message's thread, by key) evaluated, in the order they end."""
        if not self.processes:
            return self._unordered(
                self.work.evaluate_keys, ((now, context, part, rule_headers) for part in parts)
            )
        return self._evaluated_while_starting(iter(parts), rule_headers, now, context)

    def _evaluated_while_starting(
        self,
        parts: Iterator[dict[str, str]],
        rule_headers: bool,
        now: datetime,
        context: MailContext,
    ) -> Iterator[PartEvaluation]:
        """This process evaluates parts while the workers start (when most mail was
        classified as it was stored, they are still starting), then the workers the rest."""
        for part in parts:
            if self._start_settled():
                parts = itertools.chain([part], parts)
                break
            yield self.work.evaluate_keys(now, context, part, rule_headers)
        circumstances = pickle.dumps((now, context))
        yield from self._unordered(
            _evaluate_keys, ((circumstances, part, rule_headers) for part in parts)
        )

    def _unordered(
        self, function: Callable[..., Result], arguments: Iterable[tuple[Any, ...]]
    ) -> Iterator[Result]:
        """The results as they come; a few tasks ahead of them, so that memory holds a few
        parts whatever the number of parts (and `arguments` is drawn as they are done)."""
        pending: set[Future[Result]] = set()
        for args in arguments:
            pending.add(self.executor.submit(function, *args))
            if len(pending) > self.processes:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)


def worker_processes(store: Store, messages: int, from_size: int) -> int:
    """How many worker processes a first evaluation of `messages` uses: none for a small
    store (starting them costs ~1 s of CPU, and they gain nothing on one part of mail),
    an in-memory database (another process cannot open it) or one core."""
    in_memory = store.dialect == "sqlite" and store.url.database in (None, "", ":memory:")
    if messages < from_size or in_memory:
        return 0
    cores = usable_cores()
    return min(cores, MOST_WORKERS) if cores > 1 else 0


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """Workers forked from a forkserver: a fresh single-threaded interpreter (forking a
    daemon's threads, the scheduler's or a database pool's, could copy a lock another
    thread held) that imports the workers' modules once. A spawned worker imported them
    itself (0.9 s of CPU each; 1.05 s under the `mailwatch` command, whose main module
    every child runs again) and tore its interpreter down at the end (~0.45 s before the
    pool had shut down); a forked one starts in milliseconds (~0.1 s running that main
    module) and ends with `os._exit`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _stop_forkserver() -> None:
    """End the forkserver with its pool: idle, it would keep ~60 MB of modules for the
    life of a daemon, and until it ends the CPU time of the workers it forked is not
    counted among this process's children's (`RUSAGE_CHILDREN`). The standard library
    has no public call for this; its own tests stop it so. Its workers have ended with the
    pool, so it is killed first: asked to stop, it tore down an interpreter holding every
    module they use, 0.25-0.3 s at the end of each first evaluation."""
    server: Any = multiprocessing.forkserver._forkserver
    with server._lock:  # the one `_stop` takes: no other thread starts it meanwhile
        if server._forkserver_pid is not None:
            os.kill(server._forkserver_pid, signal.SIGKILL)
        server._stop_unlocked()
