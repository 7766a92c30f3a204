"""A folder's fetched batches into the store, in order, each with its checkpoint: headers
parsed, the first body bytes of client replies read for the "thanks!" check, unparsable
mail quarantined.

A long first sync parses in a process of its own, a few batches ahead of the storing
(docs/benchmarks.md: parsing and the "thanks!" check are a third of a poll's work, and
CPython runs one core per process): the polling process fetches and stores while the
other parses. A poll of a few new messages does it all itself, through the same calls.
Parsing is pure (raw bytes in, a core `Message` out), so the parsing process needs no
connection and no database; a batch fetched but not yet stored when the poll stops or
fails is simply fetched again by the next poll, as its checkpoint was not stored.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailwatch.adapters.imap import Batch, FetchedMessage, OpenFolder
from mailwatch.core.model import Checkpoint, Message
from mailwatch.header_parsing import Arrived, courteous_uids, parsed_batch
from mailwatch.processes import InThisProcess, ignore_ctrl_c, usable_cores
from mailwatch.store.repository import StoredMessage

if TYPE_CHECKING:
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

# New messages in a folder from which the parsing gets a process of its own: starting one
# costs a few tenths of a second, parsing a thousand messages about as much.
PARSE_APART_FROM = 2_000
# Batches parsed ahead of the one being stored: enough for the parsing process never to
# wait for the fetching, few enough to hold a few hundred messages.
AHEAD = 2


@dataclass(frozen=True)
class StoredBatch:
    batch: Batch
    new: int  # messages not stored before
    quarantined: int


class FolderBatches:
    """Stores a folder's batches as they are fetched: `stored(batches)` yields each batch
    once it is stored, in order."""

    def __init__(
        self,
        opened: OpenFolder,
        store: Store,
        now: datetime,
        waive_keyword: str,
        wants_body: Callable[[Message], bool],
    ) -> None:
        self.opened, self.store, self.now = opened, store, now
        self.waive_keyword = waive_keyword
        self.wants_body = wants_body

    def stored(self, batches: Iterable[Batch]) -> Iterator[StoredBatch]:
        """Each batch stored with its checkpoint, in the order fetched. From the first batch
        of a long first sync the parsing runs in a process of its own, AHEAD batches ahead."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        executor = _parser(first.total)
        try:
            ahead = AHEAD if isinstance(executor, ProcessPoolExecutor) else 0
            parsing: deque[tuple[Batch, Future[list[Message | str]]]] = deque()
            checking: deque[tuple[Batch, list[StoredMessage], int, Future[set[int]]]] = deque()
            for batch in _chained(first, batches):
                parsing.append((batch, self._parse(executor, batch)))
                if len(parsing) > ahead:
                    checking.append(self._check(executor, *parsing.popleft()))
                if len(checking) > min(ahead, 1):
                    yield self._store(*checking.popleft())
            checking.extend(self._check(executor, *parsed) for parsed in parsing)
            while checking:
                yield self._store(*checking.popleft())
        finally:
            # a stop or a failure leaves the batches not stored to be fetched again
            executor.shutdown(wait=True, cancel_futures=True)

    def _parse(self, executor: Executor, batch: Batch) -> Future[list[Message | str]]:
        seen = max(self.now, datetime.now(UTC))
        arrived = [
            Arrived(m.raw_headers, m.internal_date, m.flags, m.sent, m.waive_folder, m.gm_thrid)
            for m in batch.messages
        ]
        return executor.submit(
            parsed_batch, arrived, batch.checkpoint, self.waive_keyword, self.now, seen
        )

    def _check(
        self, executor: Executor, batch: Batch, parsing: Future[list[Message | str]]
    ) -> tuple[Batch, list[StoredMessage], int, Future[set[int]]]:
        """Quarantine what could not be parsed; read the first body bytes of client replies
        (a second, small FETCH) and have them checked for a "thanks!"."""
        stored, quarantined = [], 0
        replies: dict[int, bytes] = {}  # a client's reply may be a "thanks!": its header block
        checkpoint = batch.checkpoint
        for fetched, parsed in zip(batch.messages, parsing.result(), strict=True):
            location = f"{checkpoint.mailbox}/{checkpoint.folder} uid {fetched.uid}"
            if isinstance(parsed, str):
                self._quarantine(checkpoint, location, parsed, fetched)
                quarantined += 1
                continue
            stored.append(
                StoredMessage(
                    parsed, fetched.raw_headers, checkpoint.uidvalidity, fetched.uid, location
                )
            )
            if not fetched.sent and self.wants_body(parsed):
                replies[fetched.uid] = fetched.raw_headers
        prefixes = self.opened.body_prefixes(sorted(replies))
        check = [(uid, headers, prefixes.get(uid, b"")) for uid, headers in replies.items()]
        return batch, stored, quarantined, executor.submit(courteous_uids, check)

    def _quarantine(
        self, checkpoint: Checkpoint, location: str, reason: str, fetched: FetchedMessage
    ) -> None:
        where = {"mailbox": checkpoint.mailbox, "folder": checkpoint.folder}
        log.warning("%s: quarantined: %s", location, reason, extra=where)
        self.store.quarantine(location, reason, fetched.raw_headers, self.now)

    def _store(
        self,
        batch: Batch,
        stored: list[StoredMessage],
        quarantined: int,
        checking: Future[set[int]],
    ) -> StoredBatch:
        courteous = checking.result()
        marked = [
            dataclasses.replace(item, message=dataclasses.replace(item.message, courtesy=True))
            if item.uid in courteous
            else item
            for item in stored
        ]
        return StoredBatch(batch, self.store.add_messages(marked, batch.checkpoint), quarantined)


def _chained(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    yield first
    yield from rest


def _parser(new_messages: int) -> Executor:
    """A process of its own for the parsing of a long first sync on two cores or more;
    else this process."""
    if new_messages < PARSE_APART_FROM or usable_cores() < 2:
        return InThisProcess()
    return ProcessPoolExecutor(
        1,
        # a fresh interpreter: forking a daemon's threads could copy a lock one of them held
        mp_context=multiprocessing.get_context("spawn"),
        initializer=ignore_ctrl_c,
    )
