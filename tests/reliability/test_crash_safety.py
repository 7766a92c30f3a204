"""SIGKILL at random points: the database ends exactly as if nothing had been interrupted.

`mailwatch poll` and `mailwatch nudge` run against a real Dovecot and a real SMTP server
and are killed with SIGKILL at random moments (seeded: MAILWATCH_CRASH_SEED replays a
run), then restarted. The killed runs are forked from one warm interpreter
(tests/reliability/forkrunner.py) so that each kill costs no import time; the runs that
finish the work and the uninterrupted runs they are compared with are the real
`python -m mailwatch`. At the end the SQLite database passes PRAGMA integrity_check and
holds the same messages, copies, checkpoints and requests, and gives the same report, as
the uninterrupted run; and no nudge reached anybody twice.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailwatch.store.repository import Store
from tests.reliability.agency import (
    NOW,
    NUDGE_ACCOUNTS,
    PASSWORD_ENV,
    ForkRunner,
    fill_mailbox,
    mailwatch,
    nudge_agency,
    write_config,
)
from tests.reliability.proxy import FaultProxy

SEED = int(os.environ.get("MAILWATCH_CRASH_SEED", "20261127"))
POLL_KILLS = 20
NUDGE_KILLS = 8
KILLED = -9


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # killed before the schema was created
            return 0


def stored(db: Path) -> tuple[list, list]:
    """Every message with its copies, and every checkpoint."""
    store = Store(f"sqlite:///{db}")
    try:
        messages = sorted(
            (m.key, sorted((c.mailbox, c.folder, c.internal_date) for c in m.copies))
            for m in store.load_messages()
        )
        checkpoints = [store.checkpoint("alice", folder) for folder in ("INBOX", "Sent")]
    finally:
        store.close()
    return messages, checkpoints


def report(config: Path, env: dict[str, str]) -> dict:
    done = mailwatch(config, "report", "--format", "json", "--now", NOW, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def runner_env() -> dict[str, str]:
    return {PASSWORD_ENV: "set by the test"}


def kill_repeatedly(
    runner: ForkRunner, config: Path, argv, kills: int, between, window: float = 1.0
) -> list[int]:
    """Run the command, SIGKILLed after a random delay below `window`, until it was killed
    `kills` times; `between()` runs before each attempt. The window follows the run's
    length: it grows while every run is killed, and shrinks to the length of a run that
    finished first. Returns the statuses."""
    rng = random.Random(SEED)
    statuses: list[int] = []
    while statuses.count(KILLED) < kills and len(statuses) < 4 * kills:
        between()
        status, elapsed = runner.run(config, *argv, kill_after=rng.uniform(0.0, window))
        window = min(3.0, window * 1.15) if status == KILLED else max(0.05, elapsed)
        statuses.append(status)
    assert statuses.count(KILLED) == kills, f"killed only {statuses} (seed {SEED})"
    return statuses


@pytest.mark.dovecot
def test_polls_killed_at_random_while_mail_arrives_end_with_the_database_of_a_calm_poll(
    dovecot, tmp_path
):
    user = dovecot.new_user("alice")
    start = datetime(2026, 9, 1, 8, tzinfo=UTC)
    fill_mailbox(dovecot, user, range(40), start)
    env = {PASSWORD_ENV: user.password}
    (tmp_path / "calm").mkdir()
    (tmp_path / "crashed").mkdir()
    crashed_db, calm_db = tmp_path / "crashed" / "mailwatch.db", tmp_path / "calm" / "mailwatch.db"
    arrived = iter(range(40, 10_000, 4))
    counts: list[int] = []

    def new_mail_arrives() -> None:
        first = next(arrived)
        fill_mailbox(dovecot, user, range(first, first + 4), start)
        counts.append(count_rows(crashed_db, "message") if crashed_db.exists() else 0)

    # Each reply held 2 ms, so that a run spends its time syncing and kills land mid-batch.
    with FaultProxy(dovecot.port, delay=0.002) as slowed:
        mailboxes = [("alice", slowed.port, user)]
        crashed = write_config(tmp_path / "crashed", mailboxes, batch_size=5)
        calm = write_config(tmp_path / "calm", mailboxes, batch_size=5)
        runner = ForkRunner(env)
        try:
            kill_repeatedly(runner, crashed, ["poll", "--now", NOW], POLL_KILLS, new_mail_arrives)
        finally:
            runner.close()
        resumed = mailwatch(crashed, "poll", "--now", NOW, env=env)
        uninterrupted = mailwatch(calm, "poll", "--now", NOW, env=env)

    assert resumed.returncode == 0, resumed.stderr
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    # Kills landed mid-sync: some runs stored part of what had arrived.
    assert len(set(counts)) >= 5, counts
    assert integrity(crashed_db) == "ok"
    total = next(arrived) * 3 // 2  # every other client message has a reply
    messages, checkpoints = stored(crashed_db)
    assert len(messages) == total
    assert (messages, checkpoints) == stored(calm_db)
    # the evaluation lock died with each killed run: the resumed poll evaluated everything
    assert report(crashed, env) == report(calm, env)


def test_nudge_runs_killed_at_random_never_send_a_nudge_twice(smtp_server, tmp_path):
    # Each SMTP reply held 10 ms: a run spends its time sending, one email after another.
    with FaultProxy(smtp_server.port, delay=0.01) as slowed:
        calm = nudge_agency(tmp_path / "calm", slowed.port)
        crashed = nudge_agency(tmp_path / "crashed", slowed.port)
        runner = ForkRunner({})
        try:
            sent_calm, calm_time = runner.run(calm, "nudge", "--now", NOW)
            calm_recipients = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
            smtp_server.messages.clear()
            sent_before_kill: list[int] = []
            kill_repeatedly(
                runner,
                crashed,
                ["nudge", "--now", NOW],
                NUDGE_KILLS,
                lambda: sent_before_kill.append(len(smtp_server.messages)),
                window=calm_time,
            )
        finally:
            runner.close()
        resumed = mailwatch(crashed, "nudge", "--now", NOW)

    assert sent_calm == 0
    assert resumed.returncode == 0, resumed.stderr
    managers = {f"m{n}@agency.test" for n in range(NUDGE_ACCOUNTS)}
    assert calm_recipients == Counter(managers)
    delivered = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert max(delivered.values()) == 1, "a nudge was sent twice"
    # Kills fell between emails: deliveries went up a few at a time.
    assert len(set(sent_before_kill)) >= 3, sent_before_kill
    # Every due nudge was sent or is held by the claim of a killed run (at most once:
    # a claim taken just before a kill is never sent again).
    db = tmp_path / "crashed" / "mailwatch.db"
    store = Store(f"sqlite:///{db}")
    try:
        claims = {claim.recipient: claim for claim in store.claims("nudge")}
    finally:
        store.close()
    assert set(claims) == managers
    assert {r for r, c in claims.items() if c.sent_at is not None} <= set(delivered)
    assert integrity(db) == "ok"
