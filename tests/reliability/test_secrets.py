"""Known secrets through real runs of check, poll, nudge, digest and backup, with logging at
DEBUG: none of them may show up in stdout, stderr, the log, an exception's text or the
database's bytes; and what mailwatch writes is readable by its owner only."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest

from mailwatch.cli import main
from tests.imap_helpers import hours_ago, mail
from tests.reliability.agency import write_config

pytestmark = pytest.mark.dovecot

IMAP_SECRET = "imap-Secret-7f3a9c"  # alice's, from the environment
COMMAND_SECRET = "cmd-Secret-41b2e8"  # bob's, from a password_command
SMTP_SECRET = "smtp-Secret-c0ffee"  # the SMTP login's, from a password_command
WRONG_SECRET = "wrong-Secret-9d9d9d"  # carol's, refused by the server
SECRETS = (IMAP_SECRET, COMMAND_SECRET, SMTP_SECRET, WRONG_SECRET)
NOW = "2026-11-02T09:00:00Z"


def leaked_forms(secret: str) -> list[bytes]:
    """The secret as text, and as it would appear in an AUTH PLAIN or LOGIN exchange."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def command_printing(directory: Path, name: str, secret: str) -> Path:
    script = directory / name
    script.write_text(f"#!/bin/sh\necho '{secret}'\n")
    script.chmod(0o700)
    return script


def mailbox(name: str, port: int, username: str, secret_line: str) -> str:
    return (
        f'\n[[mailboxes]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'security = "none"\nusername = "{username}"\n{secret_line}\nfolders = ["INBOX"]\n'
    )


@pytest.fixture
def agency(dovecot, smtp_server, tmp_path, monkeypatch):
    alice = dovecot.new_user("alice", IMAP_SECRET)
    bob = dovecot.new_user("bob", COMMAND_SECRET)
    carol = dovecot.new_user("carol", "carols-real-password")
    dovecot.append(alice, "INBOX", mail("<q1@acme.example>"), hours_ago(24 * 6))
    smtp_server.password = SMTP_SECRET
    monkeypatch.setenv("MW_ALICE", IMAP_SECRET)
    monkeypatch.setenv("MW_CAROL", WRONG_SECRET)
    bob_command = command_printing(tmp_path, "bob-secret", COMMAND_SECRET)
    smtp_command = command_printing(tmp_path, "smtp-secret", SMTP_SECRET)
    extra = (
        mailbox("alice", dovecot.port, alice.username, 'password_env = "MW_ALICE"')
        + mailbox("bob", dovecot.port, bob.username, f'password_command = "{bob_command}"')
        + mailbox("carol", dovecot.port, carol.username, 'password_env = "MW_CAROL"')
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
        f'username = "{smtp_server.username}"\npassword_command = "{smtp_command}"\n'
        'sender = "mailwatch <mailwatch@agency.test>"\n'
    )
    return write_config(tmp_path, [], extra=extra)


def run_everything(config: Path, tmp_path: Path, capsys) -> tuple[list[int], str]:
    codes = []
    for argv in (
        ["check"],
        ["poll", "--now", NOW],
        ["nudge", "--now", NOW],
        ["status", "--format", "json", "--now", NOW],
        ["digest", "--dry-run", "--output", str(tmp_path / "digests"), "--now", NOW],
        ["backup", str(tmp_path / "backup.db")],
    ):
        codes.append(main(["--config", str(config), "-v", *argv]))
    out, err = capsys.readouterr()
    return codes, out + err


def test_no_secret_appears_in_output_logs_exceptions_or_the_database(
    agency, tmp_path, capsys, caplog
):
    caplog.set_level(logging.DEBUG)

    codes, printed = run_everything(agency, tmp_path, capsys)

    assert codes[0] == 1 and "carol: FAILED: login refused" in printed  # check
    assert "smtp 127.0.0.1" in printed and "login ok" in printed
    assert codes[1] == 1 and "alice: fetched 1, 1 new" in printed  # poll
    assert caplog.records, "nothing was logged"
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in ("", ".toml")]
    written = b"".join(p.read_bytes() for p in files if "secret" not in p.name)
    for secret in SECRETS:
        for form in leaked_forms(secret):
            assert form.decode() not in printed, f"{secret} printed"
            assert form.decode() not in caplog.text, f"{secret} logged"
            assert form not in written, f"{secret} written to a file"
    assert any(p.name == "mailwatch.db" for p in files)


def test_the_database_backup_and_digests_are_readable_by_the_owner_only(agency, tmp_path, capsys):
    codes, _ = run_everything(agency, tmp_path, capsys)

    assert codes[4:] == [0, 0]  # digest, backup
    written = [
        tmp_path / "mailwatch.db",
        *tmp_path.glob("mailwatch.db-*"),  # SQLite's WAL and shared-memory files
        tmp_path / "backup.db",
        *(tmp_path / "digests").iterdir(),
    ]
    assert len(written) >= 5
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {0o600}, modes


def test_a_world_readable_config_with_a_password_command_draws_a_warning(
    agency, tmp_path, capsys, caplog
):
    agency.chmod(0o644)
    main(["--config", str(agency), "status", "--now", NOW])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("names commands that fetch secrets" in w and "chmod 600" in w for w in warnings)
