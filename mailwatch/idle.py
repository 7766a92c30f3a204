"""Waiting for new INBOX mail with IMAP IDLE, so that a mailbox is polled as soon as
mail arrives rather than at its next poll_interval.

One `IdleWatcher` thread per mailbox, on a connection of its own (IDLE ties up
the connection and watches only the folder it opened: INBOX, read-only). It
calls `on_new_mail` when the server reports new mail, and also each time it has
opened INBOX: IDLE reports only what arrives after that, and mail may have
arrived while it was connecting or away. A server without IDLE is said so once
and left to polling. A dropped connection is normal (servers and NAT boxes close
idle ones): it reconnects after 1 s, then backs off exponentially up to
sync.BACKOFF_CAP. It respects the polls' SyncHistory: no connection while a
refused login waits for a new secret or the host is backed off, and a login
refused here is recorded there.

`IdleWatchers` keeps the daemon's watchers, one per mailbox it polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from mailwatch.adapters.imap import (
    IDLE_RENEW,
    Folder,
    IdleUnsupported,
    MailboxError,
    OpenFolder,
    open_mailbox,
)
from mailwatch.config import ConfigError, MailboxSettings
from mailwatch.sync import BACKOFF_CAP, SyncHistory

log = logging.getLogger(__name__)

RECONNECT_FIRST = timedelta(seconds=1)
# How long to wait after a stop is asked for: the wait checks its stop event
# every imap.STOP_CHECK, then ends IDLE and logs out.
STOP_TIMEOUT = 5.0  # seconds


class IdleWatcher(threading.Thread):
    def __init__(
        self,
        mailbox: MailboxSettings,
        history: SyncHistory,
        on_new_mail: Callable[[], None],
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(name=f"idle:{mailbox.name}", daemon=True)
        self.mailbox = mailbox
        self.history = history
        self.on_new_mail = on_new_mail
        self.clock = clock
        self.stopping = threading.Event()
        self.failures = 0  # connection failures in a row
        self.about = {"mailbox": mailbox.name, "folder": "INBOX"}  # for the logs

    def stop(self) -> None:
        self.stopping.set()
        # Its own poll may stop it (the lease went to another worker): no joining itself.
        if self is not threading.current_thread():
            self.join(STOP_TIMEOUT)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self.attempt():
                    return
            except Exception as error:
                # A bug, or the database failing while a refusal is read or recorded: IDLE
                # goes on, backing off as from a dropped connection.
                log.exception("%s: IDLE failed", self.mailbox.name, extra=self.about)
                self.back_off(MailboxError(f"{self.mailbox.name}: {error}", permanent=False))

    def attempt(self) -> bool:
        """One connection, or a wait while a refused login stands; False when the server
        offers no IDLE (the watcher ends)."""
        if reason := self.history.reason_to_wait(self.mailbox, self.clock()):
            log.debug("IDLE waits: %s", reason, extra=self.about)
            self.stopping.wait(self.mailbox.poll_interval.total_seconds())
            return True
        try:
            self.watch()
        except IdleUnsupported as error:
            log.info("%s", error.message, extra=self.about)
            return False
        except ConfigError as error:  # the secret cannot be read
            self.refused(MailboxError(str(error), permanent=True))
        except MailboxError as error:
            if error.permanent:
                self.refused(error)
            else:
                self.back_off(error)
        return True

    def refused(self, error: MailboxError) -> None:
        """Recorded where the polls look too: nobody retries until the secret changes."""
        log.warning("%s (IDLE)", error.message, extra=self.about)
        self.history.failed(self.mailbox, error, self.clock())

    def back_off(self, error: MailboxError) -> None:
        self.failures += 1
        delay = min(BACKOFF_CAP, RECONNECT_FIRST * 2 ** (self.failures - 1)).total_seconds()
        log.warning("%s; IDLE reconnects in %g s", error.message, delay, extra=self.about)
        self.stopping.wait(delay)

    def watch(self) -> None:
        """One connection: IDLE on INBOX until stopped or the connection fails."""
        with open_mailbox(self.mailbox) as connection:
            connection.require_idle()
            with connection.examine(Folder("INBOX")) as inbox:
                self.idle(inbox)

    def idle(self, inbox: OpenFolder) -> None:
        self.on_new_mail()  # what arrived before INBOX was open: IDLE reports only later mail
        log.info("%s: waiting for new INBOX mail with IDLE", self.mailbox.name, extra=self.about)
        while not self.stopping.is_set():
            arrived = inbox.wait_for_new_mail(self.stopping, IDLE_RENEW)
            self.failures = 0  # the connection works: a later drop starts from 1 s again
            if arrived and not self.stopping.is_set():
                self.on_new_mail()


class IdleWatchers:
    """The watchers of the mailboxes a daemon polls, by mailbox name."""

    def __init__(self, history: SyncHistory, clock: Callable[[], datetime]) -> None:
        self.history = history
        self.clock = clock
        self.threads: dict[str, IdleWatcher] = {}
        self.changing = threading.Lock()

    def watch(self, mailbox: MailboxSettings, on_new_mail: Callable[[], None]) -> None:
        """Keep a watcher on `mailbox`, a new one if its settings changed."""
        with self.changing:
            current = self.threads.get(mailbox.name)
            if current is not None and current.mailbox == mailbox:
                return  # also one that ended because the server has no IDLE
            if current is not None:
                current.stop()
            watcher = IdleWatcher(mailbox, self.history, on_new_mail, self.clock)
            self.threads[mailbox.name] = watcher
            watcher.start()

    def stop(self, names: list[str] | None = None) -> None:
        """Stop the watchers of these mailboxes (None: all), together."""
        with self.changing:
            names = list(self.threads) if names is None else names
            stopping = [self.threads.pop(name) for name in names if name in self.threads]
        for watcher in stopping:
            watcher.stopping.set()
        for watcher in stopping:
            watcher.stop()
