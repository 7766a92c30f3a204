"""In-memory fakes of mailwatch's own interfaces, for tests of the code around them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailwatch.core.model import Checkpoint, Message
from mailwatch.store.repository import StoredMessage


@dataclass(frozen=True)
class FakeSyncRecord:
    mailbox: str
    folder: str | None
    ok: bool
    error: str | None
    at: datetime
    fetched: int


class FakeStore:
    """The ingest and sync half of the Store contract (mailwatch/store/repository.py).

    Messages dedup by key; a copy is identified by its (mailbox, folder, uidvalidity, uid)
    location; a batch and its checkpoint are applied together, like one transaction.
    """

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.locations: dict[tuple[str, str, int | None, int | None], str] = {}
        self.checkpoints: dict[tuple[str, str], Checkpoint] = {}
        self.quarantine_rows: dict[str, tuple[str, bytes | None, datetime]] = {}
        self.sync_records: list[FakeSyncRecord] = []

    def add_messages(
        self, batch: Sequence[StoredMessage], checkpoint: Checkpoint | None = None
    ) -> int:
        new = 0
        for stored in batch:
            (copy,) = stored.message.copies
            location = (copy.mailbox, copy.folder, stored.uidvalidity, stored.uid)
            if location in self.locations:
                continue
            self.locations[location] = stored.message.key
            known = self.messages.get(stored.message.key)
            if known is None:
                self.messages[stored.message.key] = stored.message
                new += 1
            else:
                copies = known.copies + (copy,)
                self.messages[known.key] = dataclasses.replace(known, copies=copies)
        if checkpoint is not None:
            self.save_checkpoint(checkpoint)
        return new

    def load_messages(self, arrived_before: datetime | None = None) -> list[Message]:
        return list(self.messages.values())

    def checkpoint(self, mailbox: str, folder: str) -> Checkpoint | None:
        return self.checkpoints.get((mailbox, folder))

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints[(checkpoint.mailbox, checkpoint.folder)] = checkpoint

    def forget_locations(self, mailbox: str, folder: str) -> int:
        dropped = [loc for loc in self.locations if loc[:2] == (mailbox, folder)]
        for location in dropped:
            del self.locations[location]
        return len(dropped)

    def known_uids(self, mailbox: str, folder: str, uidvalidity: int) -> set[int]:
        return {
            uid
            for (box, name, validity, uid) in self.locations
            if (box, name, validity) == (mailbox, folder, uidvalidity) and uid is not None
        }

    def set_waive_keyword(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        flagged_uids: set[int],
        checked_uids: set[int],
        seen_at: datetime,
    ) -> int:
        changed = 0
        for uid in checked_uids:
            key = self.locations.get((mailbox, folder, uidvalidity, uid))
            if key is None:
                continue
            message = self.messages[key]
            copies = []
            for copy in message.copies:
                if (copy.mailbox, copy.folder) == (mailbox, folder):
                    flagged = uid in flagged_uids
                    if copy.waive_keyword != flagged:
                        changed += 1
                        first_seen = copy.waive_seen_at or seen_at if flagged else None
                        copy = dataclasses.replace(
                            copy, waive_keyword=flagged, waive_seen_at=first_seen
                        )
                copies.append(copy)
            self.messages[key] = dataclasses.replace(message, copies=tuple(copies))
        return changed

    def quarantine(self, location: str, error: str, raw: bytes | None, seen_at: datetime) -> None:
        self.quarantine_rows.setdefault(location, (error, raw, seen_at))

    def record_sync(
        self,
        mailbox: str,
        folder: str | None,
        ok: bool,
        error: str | None,
        at: datetime,
        fetched: int = 0,
    ) -> None:
        self.sync_records.append(FakeSyncRecord(mailbox, folder, ok, error, at, fetched))
