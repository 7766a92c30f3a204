"""Mail and mailbox settings for the tests that talk to the test Dovecot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailwatch.config import MailboxSettings, Secret, SyncSettings
from tests.fixtures.dovecot import HOST, DovecotServer, ImapUser

# The instant the tests poll at; mail is placed relative to it. In the past: Dovecot
# replaces an APPEND date later than its own clock with "now".
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def mail(
    message_id: str,
    *,
    sender: str = "carol@acme.example",
    to: str = "alice@agency.test",
    subject: str = "Homepage banner",
    body: str = "Could you change the banner?",
    extra: str = "",
) -> bytes:
    return (
        f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def mailbox_settings(
    dovecot: DovecotServer,
    user: ImapUser,
    secret_dir: Path,
    *,
    name: str | None = None,
    **changes: object,
) -> MailboxSettings:
    """Settings for a test user, its password in a file (as `password_file` would give);
    `changes` override any field (`password=Secret("env X")`, `security="ssl"`, …)."""
    name = name or user.username.split("@")[0].rstrip("0123456789")
    secret_file = secret_dir / f"{name}.password"
    secret_file.write_text(user.password)
    values: dict[str, object] = {
        "name": name,
        "host": HOST,
        "port": dovecot.port,
        "security": "none",
        "username": user.username,
        "password": Secret(f"file {secret_file}"),
        "timeout": 10.0,
    }
    values.update(changes)
    return MailboxSettings(**values)  # type: ignore[arg-type]


def sync_settings(**changes: object) -> SyncSettings:
    return SyncSettings(**{"history_days": 30, "batch_size": 200, **changes})  # type: ignore[arg-type]
