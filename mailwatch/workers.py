"""Sharing the mailboxes between workers on one PostgreSQL database.

Each mailbox is polled only by the worker holding its lease (renewed on every
poll, and while a poll runs), and a worker takes a free mailbox only while it
holds fewer than its share (mailboxes / live workers, rounded up) and hands one
back while it holds more, so the mailboxes split evenly.  A worker is live
while its own lease, renewed every lease_ttl / 3, has not expired.  A worker
that dies stops renewing: after lease_ttl its mailboxes are free and the next
poll of each by a survivor takes it over.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from mailwatch.config import MailboxSettings, Settings
from mailwatch.store.repository import Store
from mailwatch.sync import SyncHistory

log = logging.getLogger(__name__)

# A mailbox's lease outlives at least this many polls, so a live worker keeps it
# between polls however short lease_ttl is.
LEASE_POLLS = 2
MAILBOX_LEASE = "mailbox:"
WORKER_LEASE = "worker:"


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """This process among the workers sharing the database: its leases and its turns."""

    def __init__(self, store: Store, history: SyncHistory, worker_id: str | None = None) -> None:
        self.store = store
        self.history = history  # the sessions to close before another worker logs in
        self.id = worker_id or new_worker_id()
        self.deciding = threading.Lock()  # one lease decision at a time in this process
        self.polling: set[str] = set()  # mailboxes being polled now: the heartbeat keeps them

    def take_turn(self, settings: Settings, mailbox: MailboxSettings, now: datetime) -> bool:
        """Whether this worker polls `mailbox` now; takes or renews its lease if so.

        A turn taken lasts until `done(mailbox.name)`; the heartbeat renews its lease meanwhile.
        """
        lease = MAILBOX_LEASE + mailbox.name
        with self.deciding:
            self.heartbeat(settings, now)
            leases = self.store.leases(now)
            holder = leases.get(lease)
            if holder not in (None, self.id):
                log.debug("%s: worker %s holds this mailbox", mailbox.name, holder)
                return False
            share = fair_share(settings, leases)
            mine = {MAILBOX_LEASE + m.name for m in settings.mailboxes}
            held = sum(1 for name in mine if leases.get(name) == self.id)
            if holder is None and held >= share:
                return False  # a worker below its share will take it
            if holder is not None and held > share:
                self.hand_over(mailbox, held, share)
                return False
            if not self.store.acquire_lease(lease, self.id, now, lease_ttl(settings, mailbox)):
                return False  # another worker took it a moment ago
            if holder is None:
                log.info("%s: taken by worker %s", mailbox.name, self.id)
            self.polling.add(mailbox.name)
            return True

    def hand_over(self, mailbox: MailboxSettings, held: int, share: int) -> None:
        self.history.close_sessions([mailbox.name])  # before the next holder logs in
        self.store.release_lease(MAILBOX_LEASE + mailbox.name, self.id)
        log.info("%s: handed over to another worker (held %d, share %d)", mailbox.name, held, share)

    def done(self, name: str) -> None:
        """The poll of a mailbox ended: the heartbeat no longer renews its lease."""
        self.polling.discard(name)

    def heartbeat(self, settings: Settings, now: datetime) -> None:
        """Say this worker is live, and keep the leases of the mailboxes it is polling now
        (a first sync can outlast lease_ttl)."""
        try:
            ttl = settings.daemon.lease_ttl
            self.store.acquire_lease(WORKER_LEASE + self.id, self.id, now, ttl)
            for mailbox in settings.mailboxes:
                if mailbox.name in self.polling:
                    lease = MAILBOX_LEASE + mailbox.name
                    self.store.acquire_lease(lease, self.id, now, lease_ttl(settings, mailbox))
        except Exception:
            log.exception("lease heartbeat failed")

    def release(self, settings: Settings) -> None:
        """At a clean stop: the others need not wait for the leases to expire."""
        for mailbox in settings.mailboxes:
            self.store.release_lease(MAILBOX_LEASE + mailbox.name, self.id)
        self.store.release_lease(WORKER_LEASE + self.id, self.id)


def fair_share(settings: Settings, leases: dict[str, str]) -> int:
    workers = sum(1 for name in leases if name.startswith(WORKER_LEASE))
    return math.ceil(len(settings.mailboxes) / max(workers, 1))


def lease_ttl(settings: Settings, mailbox: MailboxSettings) -> timedelta:
    return max(settings.daemon.lease_ttl, mailbox.poll_interval * LEASE_POLLS)
