"""Two `mailwatch run` workers on one PostgreSQL database, against real Dovecot and SMTP.

They split the mailboxes, never poll one mailbox at the same time (Dovecot's
rawlog shows every IMAP session's commands with their times), send every due
nudge and digest exactly once, and when one is killed the other takes its
mailboxes over within the lease TTL and a poll interval.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailwatch.store.repository import Store
from tests.fixtures.dovecot import DovecotServer, ImapUser
from tests.fixtures.smtp import SmtpSink
from tests.imap_helpers import mail

pytestmark = [pytest.mark.dovecot, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
POLL = 2  # seconds
LEASE_TTL = 6  # seconds
# A poll of a small mailbox, a Python start-up, a loaded CI machine.
SLACK = 10  # seconds
HEAD = "head@agency.test"
STAFF = ("alice", "bob", "carol", "dave")


def worker_config(path: Path, database_url: str, sink: SmtpSink, users: list[ImapUser]) -> Path:
    """Four mailboxes, each its owner's account; digests due a minute ago (so both
    workers catch them up at start); short intervals and lease TTL."""
    due = datetime.now(UTC) - timedelta(minutes=1)
    lines = [
        f'[agency]\nname = "Rouge"\ndomains = ["agency.test"]\ntimezone = "UTC"\n'
        f'head_of_client_management = ["{HEAD}"]\n',
        f'[database]\nurl = "{database_url}"\n',
        '[[sla.tiers]]\nname = "critical"\ntarget = "1h"\nsubject = ["(?i)site is down"]\n',
        f'[smtp]\nhost = "{sink.host}"\nport = {sink.port}\nsecurity = "none"\n'
        'sender = "Mailwatch <mailwatch@agency.test>"\ntimeout = 10\n',
        "[sync]\nhistory_days = 30\n",
        f'[digests]\nweekday = "{due.strftime("%a").lower()}"\ntime = "{due:%H:%M}"\n'
        "monthly = false\nquarterly = false\n",
        f'[daemon]\nnudge_interval = "{POLL}s"\nlease_ttl = "{LEASE_TTL}s"\n',
    ]
    for name, user in zip(STAFF, users, strict=True):
        secret = path.parent / f"{name}.password"
        secret.write_text(user.password)
        lines += [
            f'[[mailboxes]]\nname = "{name}"\nhost = "127.0.0.1"\nport = PORT\n'
            f'security = "none"\nusername = "{user.username}"\npassword_file = "{secret}"\n'
            # polls only: an IDLE watcher is a second session of the same worker, and this
            # test reads "one session at a time per mailbox" from Dovecot's log
            f'poll_interval = "{POLL}s"\ntimeout = 10\nidle = false\n',
            f'[[staff]]\nemail = "{user.username}"\n',
            f'[[accounts]]\nname = "Client of {name}"\ndomains = ["{name}-client.example"]\n'
            f'manager = "{user.username}"\n',
        ]
    path.write_text("\n".join(lines))
    return path


def client_mail(owner: str, user: ImapUser, number: int) -> bytes:
    return mail(
        f"<down.{number}@{owner}-client.example>",
        sender=f"jane@{owner}-client.example",
        to=user.username,
        subject=f"Our site is down ({owner}, {number})",
    )


class Worker:
    def __init__(self, config: Path, log: Path):
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailwatch", "run", "--config", str(config)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=output,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def id(self) -> str:
        found = re.search(r"mailwatch running as (\S+):", self.log.read_text())
        return found.group(1) if found else ""

    def polled(self) -> set[str]:
        """The mailboxes this worker polled, from its log."""
        return set(re.findall(r"mailwatch\.daemon: (\w+): fetched", self.log.read_text()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> float:
    """Seconds it took for `condition` to hold; fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds}s: {what}"
        time.sleep(0.2)
    return time.monotonic() - start


def sessions(dovecot: DovecotServer, user: ImapUser) -> list[tuple[float, float]]:
    """(first, last command time) of every IMAP session of this user, from the rawlog."""
    spans = []
    for path in (dovecot.home(user.username) / "rawlog").glob("*.in"):
        times = [
            float(line.split(" ", 1)[0])
            for line in path.read_text().splitlines()
            if re.match(r"^\d+\.\d+ ", line)
        ]
        if times:
            spans.append((min(times), max(times)))
    return sorted(spans)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_workers_split_the_mailboxes_send_each_nudge_once_and_take_over_a_dead_one(
    dovecot, smtp_server, store_url, tmp_path, workers
):
    users = [dovecot.new_user(name) for name in STAFF]
    now = datetime.now(UTC)
    for number, (owner, user) in enumerate(zip(STAFF, users, strict=True)):
        # 48 minutes into a 1-hour critical target: the reminder (at 75%) is due.
        dovecot.append(user, "INBOX", client_mail(owner, user, number), now - timedelta(minutes=48))
        dovecot.clear_rawlog(user)
    config = worker_config(tmp_path / "mailwatch.toml", store_url, smtp_server, users)
    config.write_text(config.read_text().replace("PORT", str(dovecot.port)))
    assert (
        subprocess.run(
            [sys.executable, "-m", "mailwatch", "migrate", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    store = Store(store_url)
    try:
        workers += [Worker(config, tmp_path / f"worker{n}.log") for n in (1, 2)]
        first, second = workers

        # Every mailbox synced; the two workers hold two mailboxes each.
        def split() -> bool:
            holders = [
                owner
                for name, owner in store.leases(datetime.now(UTC)).items()
                if name.startswith("mailbox:")
            ]
            return sorted(holders.count(w.id) for w in workers) == [2, 2]

        wait_until(lambda: all(w.id for w in workers), SLACK, "both workers running")

        def synced() -> set[str]:
            return {s.mailbox for s in store.sync_states() if s.last_ok_at is not None}

        wait_until(split, 3 * POLL + SLACK, "the mailboxes split two and two")
        wait_until(lambda: synced() == set(STAFF), SLACK, "every mailbox synced")
        wait_until(lambda: first.polled() and second.polled(), SLACK, "both workers polled")

        # Every due nudge once (one per manager), every digest once (head and managers).
        def sent(kind: str) -> list[tuple[str, ...]]:
            return [m.rcpt_tos for m in smtp_server.messages if m.message["X-Mailwatch"] == kind]

        managers = sorted((u.username,) for u in users)
        wait_until(lambda: len(sent("nudge")) >= 4, 3 * POLL + SLACK, "four nudges")
        wait_until(lambda: len(sent("digest")) >= 5, SLACK, "five digests")
        time.sleep(3 * POLL)  # several more nudge passes on both workers: nothing new
        assert sorted(sent("nudge")) == managers
        assert sorted(sent("digest")) == sorted([(HEAD,), *managers])
        for user, owner in zip(users, STAFF, strict=True):
            (nudge,) = [
                m.message
                for m in smtp_server.messages
                if m.rcpt_tos == (user.username,) and m.message["X-Mailwatch"] == "nudge"
            ]
            assert f"Our site is down ({owner}" in nudge["Subject"]

        # No mailbox was ever polled by two IMAP sessions at once (a worker keeps its
        # session between polls, and logs out before it hands a mailbox over).
        for user in users:
            spans = sessions(dovecot, user)
            assert sum(c.startswith("STATUS") for c in dovecot.commands_sent(user)) >= 2
            for (_, ended), (started, _) in zip(spans, spans[1:], strict=False):
                assert started >= ended, f"{user.username}: two sessions at once"

        # Kill one worker outright: the other takes its mailboxes over.
        leases = store.leases(datetime.now(UTC))
        orphans = [name for name in STAFF if leases[f"mailbox:{name}"] == first.id]
        assert len(orphans) == 2
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        killed = time.monotonic()
        for owner in orphans:
            user = users[STAFF.index(owner)]
            dovecot.append(
                user,
                "INBOX",
                client_mail(owner, user, 10 + STAFF.index(owner)),
                datetime.now(UTC) - timedelta(minutes=1),
            )
        keys = {f"<down.{10 + STAFF.index(owner)}@{owner}-client.example>" for owner in orphans}

        def new_mail_synced() -> bool:
            return keys <= {m.key for m in store.load_messages()}

        wait_until(new_mail_synced, LEASE_TTL + POLL + SLACK, "the new mail synced")
        took = time.monotonic() - killed
        assert took <= LEASE_TTL + POLL + SLACK
        held = store.leases(datetime.now(UTC))
        assert {held[f"mailbox:{name}"] for name in STAFF} == {second.id}
        assert second.process.poll() is None
        print(f"takeover: new mail in the dead worker's mailboxes synced {took:.1f}s after kill")
    finally:
        store.close()
