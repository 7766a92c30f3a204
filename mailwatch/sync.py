"""Polling mailboxes into the store: one checkpointed, crash-safe pass per call.

Each batch of fetched headers is stored together with the checkpoint that is
valid after it (one transaction in the store), so a crash or a dropped
connection mid-folder loses nothing and duplicates nothing: the next poll
starts where the last stored batch ended.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from threading import Event
from typing import TYPE_CHECKING

from mailwatch.adapters.imap import (
    Batch,
    Folder,
    FolderError,
    FolderStatus,
    ImapMailbox,
    MailboxError,
    OpenFolder,
    check_mailbox,
    connect,
    open_mailbox,
)
from mailwatch.config import ConfigError
from mailwatch.core.model import Checkpoint, Policy
from mailwatch.progress import Progress, Task
from mailwatch.store.repository import LoginRefusal
from mailwatch.sync_batches import FolderBatches

if TYPE_CHECKING:
    from mailwatch.config import MailboxSettings, Settings, SyncSettings
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

# A folder whose UIDVALIDITY keeps changing is broken on the server side; re-syncing it
# forever would refetch its whole history every poll (Nylas' "endless uidvalidity loop").
MAX_RESETS = 3
RESET_WINDOW = timedelta(hours=24)
# Temporary failures: 30 s, 1 min, 2 min … at most 15 min between attempts on a host.
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)
# A refused login is retried only with a new secret, or after this long: servers lock
# accounts and ban IPs after repeated failures.
AUTH_RETRY = timedelta(hours=1)
# The refused secret is stored as a salted PBKDF2 fingerprint: enough to notice a new
# secret, too slow to guess a password from.
FINGERPRINT_ROUNDS = 100_000


@dataclass(frozen=True)
class FolderResult:
    folder: str
    fetched: int = 0
    new_messages: int = 0
    quarantined: int = 0
    waive_changes: int = 0
    uidvalidity_changed: bool = False
    error: str | None = None
    finished: bool = True  # False: the connection broke after some batches were stored


@dataclass(frozen=True)
class PollResult:
    mailbox: str
    folders: tuple[FolderResult, ...] = ()
    error: str | None = None  # the mailbox could not be read (login, connection)
    permanent: bool = False  # the error needs a person to fix it
    skipped: str | None = None  # not polled this time (backoff), and why

    @property
    def fetched(self) -> int:
        return sum(folder.fetched for folder in self.folders)

    @property
    def new_messages(self) -> int:
        return sum(folder.new_messages for folder in self.folders)

    @property
    def errors(self) -> list[str]:
        folder_errors = [f.error for f in self.folders if f.error]
        return ([self.error] if self.error else []) + folder_errors


# A kept connection is replaced after this long: a server may end a session when the OAuth2
# token it was opened with expires (Microsoft 365: about an hour), and a fresh login now and
# then costs little.
SESSION_AGE = timedelta(minutes=30)


@dataclass
class KeptSession:
    connection: ImapMailbox
    opened_with: str  # session_settings() at login
    opened_at: datetime
    folders: list[Folder]  # the folders to poll, listed when the session was opened
    reused: bool = False  # it served an earlier poll

    def usable(self, opened_with: str, now: datetime) -> bool:
        return (
            opened_with == self.opened_with
            and timedelta(0) <= now - self.opened_at < SESSION_AGE
            and self.connection.alive()
        )


@dataclass
class SyncHistory:
    """What a long-running process remembers between polls (a one-shot run starts fresh):
    per-server backoff, refused logins (by a fingerprint of the secret, never the secret)
    and UIDVALIDITY resets per folder. With `refusals` (the store), refused logins are
    shared with every other run: a restart or the next cron job waits like this one."""

    host_failures: dict[str, int] = field(default_factory=dict)
    host_retry_at: dict[str, datetime] = field(default_factory=dict)
    refused: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    refusals: Store | None = None
    resets: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    # Logged-in connections kept between polls, with what they were opened with: a poll
    # with no new mail is then a STATUS per folder, not a new login (a process and an
    # authentication on the server, every minute, per mailbox).
    sessions: dict[str, KeptSession] = field(default_factory=dict)
    keeps_sessions: bool = True  # False for a one-shot run: log out after each poll
    # Where a long first sync tells how far it is (a terminal, the daemon's log).
    progress: Progress | None = None
    # Set when the process is asked to stop: a poll ends after the batch it is storing
    # (stored with its checkpoint: the next poll goes on from there).
    stopping: Event = field(default_factory=Event)

    @contextmanager
    def session(
        self, mailbox: MailboxSettings, waive_folder: str | None, now: datetime
    ) -> Iterator[KeptSession]:
        """The kept connection to `mailbox` if it still answers, is younger than SESSION_AGE
        and was opened with today's settings, else a new one; kept afterwards unless the
        work on it failed."""
        opened_with = session_settings(mailbox)
        kept = self.sessions.pop(mailbox.name, None)
        if kept is not None and not kept.usable(opened_with, now):
            kept.connection.logout()
            kept = None
        if kept is None:
            kept = self._open(mailbox, waive_folder, opened_with, now)
        else:
            kept.reused = True
        try:
            yield kept
        except BaseException:
            kept.connection.logout()
            raise
        if self.keeps_sessions:
            self.sessions[mailbox.name] = kept
        else:
            kept.connection.logout()

    def _open(
        self, mailbox: MailboxSettings, waive_folder: str | None, opened_with: str, now: datetime
    ) -> KeptSession:
        if not self.keeps_sessions:
            connection = connect(mailbox)
            return KeptSession(connection, opened_with, now, connection.folders(waive_folder))
        # Dovecot answers STATUS of a large folder from its list index only in a session
        # that never sent LIST (after one it re-reads the folder, far slower; see
        # docs/benchmarks.md): the kept connection never lists; a short one of its own does.
        with open_mailbox(mailbox) as lister:
            folders = lister.folders(waive_folder)
        return KeptSession(connect(mailbox), opened_with, now, folders)

    def close_sessions(self, names: Iterable[str] | None = None) -> None:
        """Log out of the kept connections of these mailboxes (None: all)."""
        for name in list(self.sessions) if names is None else names:
            kept = self.sessions.pop(name, None)
            if kept is not None:
                kept.connection.logout()

    def reason_to_wait(self, mailbox: MailboxSettings, now: datetime) -> str | None:
        if refused := self.refusal(mailbox.name):
            fingerprint, at = refused
            if now - at < AUTH_RETRY and same_secret(fingerprint, mailbox):
                return (
                    f"{mailbox.name}: login was refused at {at:%H:%M}Z; waiting for a new secret "
                    f"or {at + AUTH_RETRY:%H:%M}Z (`mailwatch check` or `--force-login` tries now)"
                )
        retry_at = self.host_retry_at.get(server_of(mailbox))
        if retry_at is not None and now < retry_at:
            return (
                f"{mailbox.name}: {mailbox.host} failed recently; next try at {retry_at:%H:%M:%S}Z"
            )
        return None

    def refusal(self, name: str) -> tuple[str, datetime] | None:
        """The mailbox's refused login: (fingerprint, when). The store's, when there is one:
        another process may have been refused, or `mailwatch check` succeeded, meanwhile."""
        if self.refusals is not None:
            stored = self.refusals.login_refusal(name)
            if stored is None:
                self.refused.pop(name, None)
            else:
                self.refused[name] = (stored.secret, stored.at)
        return self.refused.get(name)

    def failed(self, mailbox: MailboxSettings, error: MailboxError, now: datetime) -> None:
        if error.permanent:
            refusal = LoginRefusal(now, secret_fingerprint(mailbox))
            self.refused[mailbox.name] = (refusal.secret, now)
            if self.refusals is not None:
                self.refusals.record_login_refused(mailbox.name, refusal)
            return
        failures = self.host_failures.get(server_of(mailbox), 0) + 1
        self.host_failures[server_of(mailbox)] = failures
        self.host_retry_at[server_of(mailbox)] = now + min(
            BACKOFF_CAP, BACKOFF_FIRST * 2 ** (failures - 1)
        )

    def succeeded(self, mailbox: MailboxSettings) -> None:
        if self.refused.pop(mailbox.name, None) is not None and self.refusals is not None:
            self.refusals.clear_login_refusals(mailbox.name)
        self.host_failures.pop(server_of(mailbox), None)
        self.host_retry_at.pop(server_of(mailbox), None)

    def allow_reset(self, mailbox: str, folder: str, now: datetime) -> bool:
        """Count a UIDVALIDITY reset; False once there were more than MAX_RESETS in a day."""
        recent = [at for at in self.resets.get((mailbox, folder), []) if now - at < RESET_WINDOW]
        recent.append(now)
        self.resets[(mailbox, folder)] = recent
        return len(recent) <= MAX_RESETS


def server_of(mailbox: MailboxSettings) -> str:
    """What backs off together: one IMAP service, host and port (another port on the same
    host is another service, which may well be up)."""
    return f"{mailbox.host}:{mailbox.port}"


def session_settings(mailbox: MailboxSettings) -> str:
    """What a connection was opened with: a change (a reload, a new secret) opens a new one."""
    where = (mailbox.host, mailbox.port, mailbox.security, str(mailbox.ca_file), mailbox.timeout)
    return f"{where}:{mailbox.username}:{hash_secret(mailbox)}"


def hash_secret(mailbox: MailboxSettings) -> str:
    return hashlib.sha256(secret_of(mailbox).encode()).hexdigest()


def secret_fingerprint(mailbox: MailboxSettings, salt: bytes | None = None) -> str:
    """A salted, slow hash of the mailbox's secret ("salt:digest", hex), fit to be stored."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", secret_of(mailbox).encode(), salt, FINGERPRINT_ROUNDS)
    return f"{salt.hex()}:{digest.hex()}"


def same_secret(fingerprint: str, mailbox: MailboxSettings) -> bool:
    """Whether the mailbox's secret today is the one `fingerprint` was made of."""
    salt, _, _ = fingerprint.partition(":")
    try:
        today = secret_fingerprint(mailbox, bytes.fromhex(salt))
    except ValueError:
        return False  # not a fingerprint of ours: treat the secret as new
    return hmac.compare_digest(today, fingerprint)


def secret_of(mailbox: MailboxSettings) -> str:
    secret = mailbox.oauth2_token or mailbox.password
    try:
        if mailbox.oauth2 is not None:
            return mailbox.oauth2.credential()
        return secret.reveal() if secret is not None else ""
    except ConfigError:
        return ""  # unreadable now: the login attempt will say why


def poll_all(
    settings: Settings, store: Store, now: datetime, history: SyncHistory | None = None
) -> list[PollResult]:
    """One pass over every mailbox; one failing never stops the others. Without a
    `history` (a one-shot run) no connection is kept open afterwards."""
    history = history if history is not None else SyncHistory(keeps_sessions=False, refusals=store)
    results = []
    for mailbox in settings.mailboxes:
        try:
            results.append(
                poll_mailbox(mailbox, settings.sync, store, now, history, settings.policy)
            )
        except Exception as error:  # a bug or a surprise must not starve the other mailboxes
            log.exception("%s: poll failed", mailbox.name, extra={"mailbox": mailbox.name})
            message = f"{mailbox.name}: unexpected {type(error).__name__}: {error}"
            store.record_sync(mailbox.name, None, False, message, now)
            results.append(PollResult(mailbox.name, error=message))
    return results


def check_login(
    mailbox: MailboxSettings, waive_folder: str | None, store: Store, now: datetime
) -> list[str]:
    """`mailwatch check` of one mailbox: how a person retries a refused login, so it logs in
    whatever the store says, and its outcome is what the polls go by from now on."""
    try:
        lines = check_mailbox(mailbox, waive_folder)
    except MailboxError as error:
        SyncHistory(keeps_sessions=False, refusals=store).failed(mailbox, error, now)
        raise
    store.clear_login_refusals(mailbox.name)
    return lines


def poll_mailbox(
    mailbox: MailboxSettings,
    sync: SyncSettings,
    store: Store,
    now: datetime,
    history: SyncHistory | None = None,
    policy: Policy | None = None,
) -> PollResult:
    """Fetch what is new in every folder of one mailbox into the store, each new message
    classified under `policy` (without one, the evaluation classifies it)."""
    history = history if history is not None else SyncHistory(keeps_sessions=False, refusals=store)
    if reason := history.reason_to_wait(mailbox, now):
        log.info("%s", reason, extra={"mailbox": mailbox.name})
        return PollResult(mailbox.name, skipped=reason)
    results: list[FolderResult] = []
    try:
        _poll_folders(mailbox, sync, store, now, history, policy, results)
    except ConfigError as error:
        return mailbox_failed(mailbox, MailboxError(str(error), True), results, store, now, history)
    except MailboxError as error:
        return mailbox_failed(mailbox, error, results, store, now, history)
    history.succeeded(mailbox)
    fetched = sum(result.fetched for result in results)
    store.record_sync(mailbox.name, None, True, None, now, fetched=fetched)
    return PollResult(mailbox.name, tuple(results))


def _poll_folders(
    mailbox: MailboxSettings,
    sync: SyncSettings,
    store: Store,
    now: datetime,
    history: SyncHistory,
    policy: Policy | None,
    results: list[FolderResult],
) -> None:
    """Poll every folder into `results`. A kept session can answer NOOP and break right
    after: then one fresh login polls the folders not yet done, before the poll fails."""
    for attempt in (1, 2):
        reused = False
        try:
            with history.session(mailbox, sync.waive_folder, now) as kept:
                reused = kept.reused
                polled = {result.folder for result in results if result.finished}
                for folder in (f for f in kept.folders if f.name not in polled):
                    if history.stopping.is_set():
                        return
                    result = poll_folder_safely(
                        kept.connection, folder, sync, store, now, history, policy, results
                    )
                    results.append(result)
            return
        except MailboxError as error:
            if error.permanent or not reused or attempt == 2:
                raise
            log.info(
                "%s: the kept session broke (%s); logging in again",
                mailbox.name,
                error,
                extra={"mailbox": mailbox.name},
            )


def mailbox_failed(
    mailbox: MailboxSettings,
    error: MailboxError,
    results: list[FolderResult],
    store: Store,
    now: datetime,
    history: SyncHistory,
) -> PollResult:
    kind = "permanent" if error.permanent else "temporary"
    log.warning("%s (%s)", error.message, kind, extra={"mailbox": mailbox.name})
    history.failed(mailbox, error, now)
    store.record_sync(mailbox.name, None, False, error.message, now)
    return PollResult(mailbox.name, tuple(results), error=error.message, permanent=error.permanent)


def poll_folder_safely(
    connection: ImapMailbox,
    folder: Folder,
    sync: SyncSettings,
    store: Store,
    now: datetime,
    history: SyncHistory,
    policy: Policy | None,
    unfinished: list[FolderResult],
) -> FolderResult:
    """A folder the server refuses (deleted meanwhile, no permission) is recorded and skipped."""
    mailbox = connection.settings.name
    try:
        result = poll_folder(connection, folder, sync, store, now, history, policy, unfinished)
    except FolderError as error:
        log.warning("%s", error.message, extra={"mailbox": mailbox, "folder": folder.name})
        store.record_sync(mailbox, folder.name, False, error.message, now)
        return FolderResult(folder.name, error=error.message)
    store.record_sync(mailbox, folder.name, result.error is None, result.error, now, result.fetched)
    return result


def poll_folder(
    connection: ImapMailbox,
    folder: Folder,
    sync: SyncSettings,
    store: Store,
    now: datetime,
    history: SyncHistory,
    policy: Policy | None = None,
    unfinished: list[FolderResult] | None = None,
) -> FolderResult:
    """Store what is new in one folder. When the connection breaks midway, what was stored
    before it is added to `unfinished` (the summary counts it), and the error raised."""
    mailbox = connection.settings.name
    checkpoint = store.checkpoint(mailbox, folder.name)
    status = connection.status(folder)
    reset = False
    if uidvalidity_changed(checkpoint, status):
        if not reset_folder(store, history, mailbox, folder, checkpoint, status, now):
            return FolderResult(folder.name, error=too_many_resets(mailbox, folder))
        checkpoint, reset = None, True
    elif unchanged(checkpoint, status):
        return FolderResult(folder.name)  # nothing new: no EXAMINE, no FETCH
    with connection.examine(folder) as opened:
        if uidvalidity_changed(checkpoint, opened.status):  # changed between STATUS and EXAMINE
            if not reset_folder(store, history, mailbox, folder, checkpoint, opened.status, now):
                return FolderResult(folder.name, error=too_many_resets(mailbox, folder))
            checkpoint, reset = None, True
        waive_changes = _rescan_waive_keyword(opened, sync, store, mailbox, checkpoint, now)
        since = now - timedelta(days=sync.history_days) if sync.history_days else None
        fetched = new = quarantined = 0
        task: Task | None = None
        finished = True
        batches = FolderBatches(opened, store, now, sync.waive_keyword, policy)
        new_batches = opened.new_messages(checkpoint, since, sync.batch_size)
        try:
            # closed on leaving, whichever way: its fetching thread is then done with the
            # connection, which the folder's close uses next
            with closing(batches.stored(new_batches)) as stored:
                for done in stored:
                    batch = done.batch
                    fetched += len(batch.messages)
                    quarantined += done.quarantined
                    new += done.new
                    if history.progress is not None:
                        task = task or history.progress.task(
                            f"{mailbox}/{folder.name}", batch.total
                        )
                        task.update(batch.done)
                    if history.stopping.is_set() and batch.done < batch.total:
                        finished = False
                        log_stop(mailbox, folder, batch)
                        break
        except MailboxError:
            if fetched and unfinished is not None:
                unfinished.append(
                    FolderResult(folder.name, fetched, new, quarantined, finished=False)
                )
            raise
        finally:
            if task is not None:
                task.finish()
    if fetched:
        where = {"mailbox": mailbox, "folder": folder.name}
        log.info("%s/%s: fetched %d, %d new", mailbox, folder.name, fetched, new, extra=where)
    return FolderResult(
        folder.name, fetched, new, quarantined, waive_changes, reset, finished=finished
    )


def log_stop(mailbox: str, folder: Folder, batch: Batch) -> None:
    log.info(
        "%s/%s: stopping after %d of %d messages; the next poll goes on from there",
        mailbox,
        folder.name,
        batch.done,
        batch.total,
        extra={"mailbox": mailbox, "folder": folder.name},
    )


def _rescan_waive_keyword(
    opened: OpenFolder,
    sync: SyncSettings,
    store: Store,
    mailbox: str,
    checkpoint: Checkpoint | None,
    now: datetime,
) -> int:
    """Store which already-synced copies now carry the waive keyword; how many changed."""
    if checkpoint is None or checkpoint.uidvalidity is None:
        return 0
    scan = opened.keyword_scan(sync.waive_keyword, checkpoint, now)
    if not scan.checked_uids:
        return 0
    flagged, checked = set(scan.flagged_uids), set(scan.checked_uids)
    folder = opened.folder.name
    return store.set_waive_keyword(mailbox, folder, checkpoint.uidvalidity, flagged, checked, now)


def uidvalidity_changed(checkpoint: Checkpoint | None, status: FolderStatus) -> bool:
    return (
        checkpoint is not None
        and checkpoint.uidvalidity is not None
        and checkpoint.uidvalidity != status.uidvalidity
    )


def unchanged(checkpoint: Checkpoint | None, status: FolderStatus) -> bool:
    """No new UID and (with CONDSTORE) no flag change since the checkpoint."""
    return (
        checkpoint is not None
        and checkpoint.uidnext == status.uidnext
        and (status.highestmodseq is None or status.highestmodseq == checkpoint.highestmodseq)
    )


def reset_folder(
    store: Store,
    history: SyncHistory,
    mailbox: str,
    folder: Folder,
    checkpoint: Checkpoint | None,
    status: FolderStatus,
    now: datetime,
) -> bool:
    """Forget the folder's UIDs (never its messages) so it is synced again from scratch."""
    if not history.allow_reset(mailbox, folder.name, now):
        return False
    old = checkpoint.uidvalidity if checkpoint else None
    dropped = store.forget_locations(mailbox, folder.name)
    log.warning(
        "%s/%s: UIDVALIDITY changed from %s to %s (folder recreated or restored on the "
        "server): forgot %d UID locations, re-syncing the history window; messages already "
        "stored are kept and not duplicated",
        mailbox,
        folder.name,
        old,
        status.uidvalidity,
        dropped,
        extra={"mailbox": mailbox, "folder": folder.name},
    )
    return True


def too_many_resets(mailbox: str, folder: Folder) -> str:
    return (
        f"{mailbox}/{folder.name}: UIDVALIDITY changed more than {MAX_RESETS} times in 24 h; "
        "not re-syncing it again today: check the server"
    )
