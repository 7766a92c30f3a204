"""Logs machines can read (`--log-format json`, `[daemon] log_format`), and no secret in
any of them: the real command line, logging to stderr as it does under systemd."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailwatch.logs import JsonFormatter
from tests.reliability.agency import PASSWORD_ENV, REPO, write_config

WRONG = "wrong-Secret-b7e2"


def mailwatch(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwatch", "--config", str(config), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, PASSWORD_ENV: WRONG},
        timeout=60,
    )


@pytest.fixture
def refused_config(dovecot, tmp_path) -> Path:
    alice = dovecot.new_user("alice")
    return write_config(tmp_path, [("alice", dovecot.port, alice)])


def json_lines(stderr: str) -> list[dict[str, object]]:
    """The log lines, without what the command itself prints on stderr ("  error: …")."""
    return [json.loads(line) for line in stderr.splitlines() if not line.startswith("  error:")]


@pytest.mark.dovecot
def test_log_format_json_writes_one_object_per_line_naming_the_mailbox_without_the_secret(
    refused_config,
):
    done = mailwatch(refused_config, "--log-format", "json", "-v", "poll")

    assert done.returncode == 1
    assert WRONG not in done.stderr and WRONG not in done.stdout
    entries = json_lines(done.stderr)
    (refusal,) = [entry for entry in entries if "login refused" in str(entry["message"])]
    assert refusal["level"] == "WARNING"
    assert refusal["logger"] == "mailwatch.sync"
    assert refusal["mailbox"] == "alice"
    assert str(refusal["time"]).endswith("+00:00")
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)


@pytest.mark.dovecot
def test_the_config_key_gives_json_logs_and_text_logs_hold_no_secret_either(refused_config):
    text = mailwatch(refused_config, "-v", "poll")
    refused_config.write_text(refused_config.read_text() + '\n[daemon]\nlog_format = "json"\n')
    from_config = mailwatch(refused_config, "-v", "poll", "--force-login")

    assert "WARNING mailwatch.sync: alice: login refused" in text.stderr
    assert WRONG not in text.stderr + text.stdout
    assert any(entry.get("mailbox") == "alice" for entry in json_lines(from_config.stderr))
    assert WRONG not in from_config.stderr + from_config.stdout


def test_a_json_log_line_carries_the_folder_and_the_exception_and_escapes_control_characters():
    try:
        raise ValueError("bad header")
    except ValueError:
        record = logging.LogRecord(
            "mailwatch.sync",
            logging.WARNING,
            __file__,
            1,
            "%s: \x1b[2J",
            ("alice",),
            sys.exc_info(),
        )
    record.mailbox, record.folder = "alice", "INBOX"

    line = JsonFormatter().format(record)

    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["message"] == "alice: \x1b[2J"
    assert (entry["mailbox"], entry["folder"]) == ("alice", "INBOX")
    assert "ValueError: bad header" in entry["exception"]
