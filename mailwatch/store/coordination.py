"""Coordination between processes: claims (send once), leases and turns (one holder at a
time), and each mailbox's sync state."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, select, update

from mailwatch.store.db import Database, dialect_insert, read_state, reading, save_state, writing
from mailwatch.store.tables import CLAIMS, LEASES, STATE, SYNC_STATES

# The state row of a mailbox whose login was refused: "login_refused:alice".
LOGIN_REFUSED = "login_refused:"


@dataclass(frozen=True)
class Claim:
    kind: str
    key: str
    recipient: str
    claimed_at: datetime  # the latest claim
    sent_at: datetime | None
    attempts: int  # how many times it was claimed
    error: str | None  # the latest failure, cleared once sent
    failed_at: datetime | None = None
    released: bool = False  # a temporary failure gave it back: the next claim retries


@dataclass(frozen=True)
class SyncState:
    mailbox: str
    folder: str | None  # None: the mailbox as a whole (login, folder list)
    last_ok_at: datetime | None
    last_error: str | None
    failures: int  # consecutive failures since the last success
    last_attempt_at: datetime | None = None
    last_error_at: datetime | None = None
    fetched: int = 0  # messages fetched by the last successful sync


@dataclass(frozen=True)
class LoginRefusal:
    """A mailbox's refused login, remembered across processes so that no run retries it
    before its time (hosts ban IPs, providers lock accounts out)."""

    at: datetime
    secret: str  # a salted fingerprint of the refused secret, never the secret


class CoordinationStore(Database):
    # ------------------------------------------------------------ claim, then act

    def claim(self, kind: str, key: str, recipient: str, now: datetime) -> bool:
        """True only for the one caller that gets to send this (kind, key, recipient).

        A claim released by a temporary failure can be taken again (by exactly one
        caller: the conditional update re-checks `released` under the row lock).
        A claim whose sender crashed before mark_sent/mark_failed stays taken: the
        email is sent at most once, never twice.
        """
        with writing(self.engine) as conn:
            first = dialect_insert(conn, CLAIMS).values(
                kind=kind, key=key, recipient=recipient, claimed_at=now, attempts=1
            )
            if _inserted(conn, first):
                return True
            retaken = conn.execute(
                update(CLAIMS)
                .where(*_claim_filter(kind, key, recipient), CLAIMS.c.released.is_(True))
                .values(released=False, claimed_at=now, attempts=CLAIMS.c.attempts + 1)
            ).rowcount
            return retaken == 1

    def mark_sent(self, kind: str, key: str, recipient: str, now: datetime) -> None:
        self._update_claim(kind, key, recipient, sent_at=now, error=None, released=False)

    def mark_failed(
        self, kind: str, key: str, recipient: str, error: str, permanent: bool, now: datetime
    ) -> None:
        """A temporary failure releases the claim for a later retry; a permanent one keeps it."""
        self._update_claim(kind, key, recipient, error=error, failed_at=now, released=not permanent)

    def claims(self, kind: str) -> list[Claim]:
        query = (
            select(CLAIMS).where(CLAIMS.c.kind == kind).order_by(CLAIMS.c.claimed_at, CLAIMS.c.id)
        )
        with reading(self.engine) as conn:
            return [
                Claim(
                    kind=row["kind"],
                    key=row["key"],
                    recipient=row["recipient"],
                    claimed_at=row["claimed_at"],
                    sent_at=row["sent_at"],
                    attempts=row["attempts"],
                    error=row["error"],
                    failed_at=row["failed_at"],
                    released=row["released"],
                )
                for row in conn.execute(query).mappings()
            ]

    def _update_claim(self, kind: str, key: str, recipient: str, **changes: Any) -> None:
        with writing(self.engine) as conn:
            changed = conn.execute(
                update(CLAIMS).where(*_claim_filter(kind, key, recipient)).values(changes)
            ).rowcount
        if not changed:
            raise LookupError(f"no {kind} claim {key!r} for {recipient}")

    # ------------------------------------------------------------ sync state

    def record_sync(
        self,
        mailbox: str,
        folder: str | None,
        ok: bool,
        error: str | None,
        at: datetime,
        fetched: int = 0,
    ) -> None:
        where = (SYNC_STATES.c.mailbox == mailbox, SYNC_STATES.c.folder == (folder or ""))
        if ok:
            changes: dict[str, Any] = {
                "last_attempt_at": at,
                "last_ok_at": at,
                "failures": 0,
                "fetched": fetched,
            }
        else:
            changes = {
                "last_attempt_at": at,
                "last_error": error,
                "last_error_at": at,
                "failures": SYNC_STATES.c.failures + 1,
            }
        with writing(self.engine) as conn:
            conn.execute(
                dialect_insert(conn, SYNC_STATES)
                .on_conflict_do_nothing()
                .values(mailbox=mailbox, folder=folder or "", last_attempt_at=at)
            )
            conn.execute(update(SYNC_STATES).where(*where).values(changes))

    def sync_states(self) -> list[SyncState]:
        query = select(SYNC_STATES).order_by(SYNC_STATES.c.mailbox, SYNC_STATES.c.folder)
        with reading(self.engine) as conn:
            return [
                SyncState(
                    mailbox=row["mailbox"],
                    folder=row["folder"] or None,
                    last_ok_at=row["last_ok_at"],
                    last_error=row["last_error"],
                    failures=row["failures"],
                    last_attempt_at=row["last_attempt_at"],
                    last_error_at=row["last_error_at"],
                    fetched=row["fetched"],
                )
                for row in conn.execute(query).mappings()
            ]

    # ------------------------------------------------------------ refused logins

    def record_login_refused(self, mailbox: str, refusal: LoginRefusal) -> None:
        value = json.dumps({"at": refusal.at.isoformat(), "secret": refusal.secret})
        with writing(self.engine) as conn:
            save_state(conn, LOGIN_REFUSED + mailbox, value)

    def login_refusal(self, mailbox: str) -> LoginRefusal | None:
        with reading(self.engine) as conn:
            value = read_state(conn, LOGIN_REFUSED + mailbox)
        if value is None:
            return None
        stored = json.loads(value)
        return LoginRefusal(datetime.fromisoformat(stored["at"]), stored["secret"])

    def clear_login_refusals(self, mailbox: str | None = None) -> None:
        """Forget the refused login of a mailbox (None: of every mailbox)."""
        names = (
            STATE.c.name.startswith(LOGIN_REFUSED, autoescape=True)
            if mailbox is None
            else STATE.c.name == LOGIN_REFUSED + mailbox
        )
        with writing(self.engine) as conn:
            conn.execute(delete(STATE).where(names))

    # ------------------------------------------------------------ leases and turns

    def acquire_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the named lease: True while `owner` holds it until now + ttl."""
        with writing(self.engine) as conn:
            lease = dialect_insert(conn, LEASES).values(
                name=name, owner=owner, expires_at=now + ttl
            )
            if _inserted(conn, lease):
                return True
            taken = conn.execute(
                update(LEASES)
                .where(
                    LEASES.c.name == name,
                    (LEASES.c.owner == owner) | (LEASES.c.expires_at <= now),
                )
                .values(owner=owner, expires_at=now + ttl)
            ).rowcount
            return taken == 1

    def leases(self, now: datetime) -> dict[str, str]:
        """The leases held at `now`: name -> owner (expired ones are free, so not listed)."""
        query = select(LEASES.c.name, LEASES.c.owner).where(LEASES.c.expires_at > now)
        with reading(self.engine) as conn:
            return {row.name: row.owner for row in conn.execute(query)}

    def release_lease(self, name: str, owner: str) -> None:
        """Give a lease back at shutdown, so another worker need not wait for it to expire."""
        with writing(self.engine) as conn:
            conn.execute(delete(LEASES).where(LEASES.c.name == name, LEASES.c.owner == owner))

    @contextmanager
    def turn(self, name: str, wait: timedelta) -> Iterator[bool]:
        """Hold the named lock across processes while the block runs; False when another
        holder kept it for `wait`.  The lock dies with its holder (a PostgreSQL session
        advisory lock, a file lock beside an SQLite database), so a crash frees it at once."""
        deadline = time.monotonic() + wait.total_seconds()
        lock = self._advisory_lock if self.dialect == "postgresql" else self._file_lock
        with lock(name) as try_lock:
            while not try_lock():
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.1)
            yield True

    @contextmanager
    def _advisory_lock(self, name: str) -> Iterator[Callable[[], bool]]:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
        with self.engine.connect() as conn:
            held = False

            def try_lock() -> bool:
                nonlocal held
                held = bool(conn.scalar(select(func.pg_try_advisory_lock(key))))
                conn.commit()
                return held

            try:
                yield try_lock
            finally:
                if held:
                    conn.scalar(select(func.pg_advisory_unlock(key)))
                    conn.commit()

    @contextmanager
    def _file_lock(self, name: str) -> Iterator[Callable[[], bool]]:
        descriptor = os.open(f"{self.url.database}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)

        def try_lock() -> bool:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            yield try_lock
        finally:
            os.close(descriptor)  # releases the lock


def _claim_filter(kind: str, key: str, recipient: str) -> tuple[ColumnElement[bool], ...]:
    return (CLAIMS.c.kind == kind, CLAIMS.c.key == key, CLAIMS.c.recipient == recipient)


def _inserted(conn: Connection, insert: Any) -> bool:
    """Run a dialect INSERT that gives way to an existing row; True if it inserted.

    (RETURNING rather than rowcount: PostgreSQL's implicit RETURNING hides the rowcount.)
    """
    table = insert.table
    statement = insert.on_conflict_do_nothing().returning(table.c.id)
    return conn.execute(statement).first() is not None
