"""A refused login is tried at most once an hour, whatever runs: cron's `mailwatch poll`,
daemon restarts, `mailwatch check`. Counted in Dovecot's own log, not mailwatch's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailwatch.cli import main
from tests.fixtures.dovecot import DovecotServer, ImapUser
from tests.reliability.agency import PASSWORD_ENV, REPO, write_config
from tests.test_daemon import wait_for

pytestmark = pytest.mark.dovecot

WRONG = "wrong-password-5e1f"


def failed_logins(dovecot: DovecotServer, user: ImapUser) -> int:
    """Dovecot's "auth failed" lines for this user: what a host that bans IPs counts."""
    log = (dovecot.root / "dovecot.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "auth failed" in line and user.username in line)


def restart_daemon(config: Path) -> str:
    """Start `mailwatch run`, let it poll once and IDLE settle, stop it; its log."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailwatch", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        seen = wait_for(process, "fetched 0, 0 new")
        time.sleep(1)  # time for an IDLE watcher to log in, were it to
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        return seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def poll(config: Path, *options: str) -> int:
    return main(["--config", str(config), "poll", *options])


@pytest.fixture
def refused(dovecot, tmp_path, monkeypatch) -> tuple[Path, ImapUser]:
    """A configuration whose one mailbox has the wrong password in the environment."""
    alice = dovecot.new_user("alice")
    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    return write_config(tmp_path, [("alice", dovecot.port, alice)]), alice


def test_repeated_polls_and_daemon_restarts_try_a_refused_login_once_an_hour(
    dovecot, refused, capsys
):
    config, alice = refused

    codes = [poll(config) for _ in range(4)]
    logs = [restart_daemon(config) for _ in range(2)]

    assert codes == [1, 1, 1, 1]
    assert failed_logins(dovecot, alice) == 1
    out = capsys.readouterr().out
    assert out.count("alice: skipped (alice: login was refused at") == 3
    assert "(`mailwatch check` or `--force-login` tries now)" in out
    assert all("login was refused at" in log for log in logs)

    an_hour_later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    assert poll(config, "--now", an_hour_later.isoformat()) == 1
    assert poll(config) == 1
    assert failed_logins(dovecot, alice) == 2


def test_force_login_and_check_try_at_once_and_a_new_secret_ends_the_wait(
    dovecot, refused, monkeypatch, capsys
):
    config, alice = refused
    poll(config)

    assert poll(config, "--force-login") == 1
    assert main(["--config", str(config), "check"]) == 1
    assert failed_logins(dovecot, alice) == 3
    assert poll(config) == 1  # the refusal check recorded is waited out too
    assert failed_logins(dovecot, alice) == 3

    monkeypatch.setenv(PASSWORD_ENV, alice.password)
    assert poll(config) == 0
    assert "alice: fetched 0, 0 new" in capsys.readouterr().out


def test_a_check_that_logs_in_ends_the_wait_of_the_polls(dovecot, refused, monkeypatch, capsys):
    config, alice = refused
    poll(config)
    monkeypatch.setenv(PASSWORD_ENV, alice.password)
    assert main(["--config", str(config), "check"]) == 0
    monkeypatch.setenv(PASSWORD_ENV, WRONG)  # refused again: the polls may try once more

    assert poll(config) == 1

    assert failed_logins(dovecot, alice) == 2
