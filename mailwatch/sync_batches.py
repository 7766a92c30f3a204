"""A folder's fetched batches into the store, in order, each with its checkpoint: headers
parsed, the first body bytes of client replies read for the "thanks!" check, unparsable
mail quarantined.

A long first sync parses in a process of its own, a few batches ahead of the storing
(docs/benchmarks.md: parsing and the "thanks!" check are a third of a poll's work, and
CPython runs one core per process): the polling process fetches and stores while the
other parses. A poll of a few new messages does it all itself, through the same calls.
Parsing is pure (raw bytes in, a core `Message` and its classification out), so the
parsing process needs no connection and no database. The fetching (mostly waiting for the
server) runs in a thread of the polling process, a batch ahead of the storing (in good part
SQLite's, which lets go of the interpreter): only that thread uses the connection until the
folder's batches are stored. A batch parsed ahead when the poll stops is fetched again by
the next poll, as its checkpoint was not stored; when the server fails, the batches fetched
before the failure are stored first, so that a batch that always fails holds back no other.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailwatch.adapters.imap import Batch, FetchedMessage, MailboxError, OpenFolder
from mailwatch.core.addresses import Directory
from mailwatch.core.model import Message, Policy, Role, policy_fingerprint
from mailwatch.header_parsing import Arrived, Parsed, courteous_uids, parsed_batch
from mailwatch.processes import InThisProcess, leave_stopping_to_the_starter, usable_cores
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
_ONE_PARSING_PROCESS = threading.Lock()
# the batches fetched, each with its parse to come, in the order fetched
Parsing = deque[tuple[Batch, Future[Parsed]]]


@dataclass(frozen=True)
class StoredBatch:
    batch: Batch
    new: int  # messages not stored before
    quarantined: int


class FolderBatches:
    """Stores a folder's batches as they are fetched: `stored(batches)` yields each batch
    once it is stored, in order. Under a `policy` each new message is stored classified
    (none: the evaluation classifies it)."""

    def __init__(
        self,
        opened: OpenFolder,
        store: Store,
        now: datetime,
        waive_keyword: str,
        policy: Policy | None,
    ) -> None:
        self.opened, self.store, self.now = opened, store, now
        self.waive_keyword = waive_keyword
        self.policy = policy
        self.fingerprint = None if policy is None else policy_fingerprint(policy)
        self.wants_body = is_reply if policy is None else client_reply(policy)

    def stored(self, batches: Iterable[Batch]) -> Generator[StoredBatch, None, None]:
        """Each batch stored with its checkpoint, in the order fetched. From the first batch
        of a long first sync the parsing runs in a process of its own, AHEAD batches ahead;
        the fetching and checking of the next batch runs in a thread while one is stored. A
        caller leaving early (a stop, Ctrl-C) waits for that batch, which is not stored."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        with (
            _parser(first.total) as executor,
            _one_ahead(self._checked(executor, itertools.chain([first], batches))) as checked,
        ):
            for batch in checked:
                yield self._store(batch)

    def _checked(
        self, executor: Executor, batches: Iterator[Batch]
    ) -> Generator[_Checked, None, None]:
        """Each batch parsed and checked, in the order fetched. When the server fails, the
        batches fetched before are still checked while it answers (none after one it does
        not), then the failure raised: one batch that always fails (a server refusing a
        range of UIDs) must not hold back the ones before it."""
        ahead = AHEAD if isinstance(executor, ProcessPoolExecutor) else 0
        # a checked batch is handed on once the next one is checked: its "thanks!" check,
        # queued in the parsing process behind the batches parsed ahead, is done by then
        lag = min(ahead, 1)
        parsing: Parsing = deque()
        checked: deque[_Checked] = deque()

        def checked_beyond(parsed_ahead: int) -> Iterator[_Checked]:
            while len(parsing) > parsed_ahead:
                checked.append(self._check_next(executor, parsing))
                while len(checked) > lag:
                    yield checked.popleft()

        try:
            for batch in batches:
                parsing.append((batch, self._parse(executor, batch)))
                yield from checked_beyond(ahead)
            yield from checked_beyond(0)
        except MailboxError:
            with suppress(MailboxError):
                while parsing:
                    checked.append(self._check_next(executor, parsing))
            yield from checked
            raise
        yield from checked

    def _check_next(self, executor: Executor, parsing: Parsing) -> _Checked:
        """The first parsed batch on, checked. When its check fails, neither it nor any
        later batch is stored (nor tried again): the next poll fetches them again."""
        try:
            checked = self._check(executor, *parsing[0])
        except MailboxError:
            parsing.clear()
            raise
        parsing.popleft()
        return checked

    def _parse(self, executor: Executor, batch: Batch) -> Future[Parsed]:
        seen = max(self.now, datetime.now(UTC))
        arrived = [
            Arrived(m.raw_headers, m.internal_date, m.flags, m.sent, m.waive_folder, m.gm_thrid)
            for m in batch.messages
        ]
        return executor.submit(
            parsed_batch, arrived, batch.checkpoint, self.waive_keyword, self.now, seen, self.policy
        )

    def _check(self, executor: Executor, batch: Batch, parsing: Future[Parsed]) -> _Checked:
        """Read the first body bytes of client replies (a second, small FETCH) and have them
        checked for a "thanks!"."""
        parsed: list[StoredMessage] = []
        unparsable: list[tuple[str, str, FetchedMessage]] = []
        replies: dict[int, bytes] = {}  # a client's reply may be a "thanks!": its header block
        checkpoint = batch.checkpoint
        found = parsing.result()
        for fetched, message, verdict in zip(
            batch.messages, found.messages, found.verdicts, strict=True
        ):
            location = f"{checkpoint.mailbox}/{checkpoint.folder} uid {fetched.uid}"
            if isinstance(message, str):
                unparsable.append((location, message, fetched))
                continue
            parsed.append(
                StoredMessage(
                    message,
                    fetched.raw_headers,
                    checkpoint.uidvalidity,
                    fetched.uid,
                    location,
                    verdict,
                )
            )
            if not fetched.sent and self.wants_body(message):
                replies[fetched.uid] = fetched.raw_headers
        prefixes = self.opened.body_prefixes(sorted(replies))
        check = [(uid, headers, prefixes.get(uid, b"")) for uid, headers in replies.items()]
        return _Checked(batch, parsed, unparsable, executor.submit(courteous_uids, check))

    def _store(self, checked: _Checked) -> StoredBatch:
        """Quarantine what could not be parsed, and store the rest with the checkpoint."""
        checkpoint = checked.batch.checkpoint
        where = {"mailbox": checkpoint.mailbox, "folder": checkpoint.folder}
        for location, reason, fetched in checked.unparsable:
            log.warning("%s: quarantined: %s", location, reason, extra=where)
            self.store.quarantine(location, reason, fetched.raw_headers, self.now)
        courteous = checked.courteous.result()
        marked = [
            dataclasses.replace(item, message=dataclasses.replace(item.message, courtesy=True))
            if item.uid in courteous
            else item
            for item in checked.parsed
        ]
        new = self.store.add_messages(marked, checkpoint, self.fingerprint)
        return StoredBatch(checked.batch, new, len(checked.unparsable))


def is_reply(message: Message) -> bool:
    return bool(message.in_reply_to or message.references)


def client_reply(policy: Policy) -> Callable[[Message], bool]:
    """Only a client's reply can be a "thanks!" after an answer: the messages whose first
    body bytes are worth fetching."""
    directory = Directory(policy)
    return lambda message: is_reply(message) and directory.role(message.from_addr) is Role.CLIENT


@dataclass(frozen=True)
class _Checked:
    """A batch parsed, its client replies' first bytes being checked for a "thanks!"."""

    batch: Batch
    parsed: list[StoredMessage]
    unparsable: list[tuple[str, str, FetchedMessage]]  # (location, why, the message)
    courteous: Future[set[int]]  # the UIDs of the replies that only thank


@contextmanager
def _one_ahead(items: Generator[_Checked, None, None]) -> Iterator[Iterator[_Checked]]:
    """`items`, the next one made in a thread of its own while the caller handles the one
    before: the fetching (mostly waiting for the server) and the storing (in part SQLite,
    which lets go of the interpreter) overlap. The connection is used by that thread only
    until the caller leaves; the item in the making is finished first."""
    with ThreadPoolExecutor(1, thread_name_prefix="fetching") as thread:

        def handed() -> Iterator[_Checked]:
            coming = thread.submit(next, items, None)
            while (item := coming.result()) is not None:
                coming = thread.submit(next, items, None)
                yield item

        try:
            yield handed()
        finally:
            thread.shutdown(wait=True)
            items.close()


@contextmanager
def _parser(new_messages: int) -> Iterator[Executor]:
    """A process of its own for the parsing of a long first sync on two cores or more, one
    at a time (a daemon's first polls of many mailboxes run in threads at once); else this
    process."""
    apart = new_messages >= PARSE_APART_FROM and usable_cores() >= 2
    if not apart or not _ONE_PARSING_PROCESS.acquire(blocking=False):
        yield InThisProcess()
        return
    try:
        with ProcessPoolExecutor(
            1,
            # a fresh interpreter: forking a daemon's threads could copy a lock one of them held
            mp_context=multiprocessing.get_context("spawn"),
            initializer=leave_stopping_to_the_starter,
        ) as pool:
            try:
                yield pool
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        _ONE_PARSING_PROCESS.release()
