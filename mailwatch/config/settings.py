"""The settings the rest of mailwatch runs on: frozen, validated, secrets only named."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path

from mailwatch.config.secrets import Secret
from mailwatch.core.lessons import DEFAULT_CATEGORIES
from mailwatch.core.model import Policy

DEFAULT_DATABASE_URL = "sqlite:///mailwatch.db"
LOG_FORMATS = ("text", "json")

# ---------------------------------------------------------------- built-in OAuth2


@dataclass(frozen=True, kw_only=True)
class MicrosoftApp:
    """Microsoft 365 app-only access: an Entra ID app registration, and where its secret lives."""

    tenant: str
    client_id: str
    client_secret: Secret

    def credential(self) -> str:
        """Everything that decides whether a token is granted, fetched now: a refused login
        waits until this changes. Never shown."""
        return "\0".join([self.tenant, self.client_id, self.client_secret.reveal()])


@dataclass(frozen=True, kw_only=True)
class GoogleServiceAccount:
    """A Google Workspace service account with domain-wide delegation, by its JSON key file
    (read when a token is needed, so a replaced key file is used without a restart)."""

    key_file: Path

    def credential(self) -> str:
        """The key file's text, read now: a refused login waits until it changes. Never shown."""
        try:
            return self.key_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""  # unreadable now: fetching a token will say why


OAuth2App = MicrosoftApp | GoogleServiceAccount


# ---------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class MailboxSettings:
    name: str
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str
    password: Secret | None = None
    oauth2_token: Secret | None = None
    oauth2: OAuth2App | None = None  # built-in OAuth2: mailwatch fetches its own tokens
    ca_file: Path | None = None
    folders: tuple[str, ...] | None = None  # None: every folder but trash, drafts, junk
    idle: bool = True
    poll_interval: timedelta = timedelta(minutes=2)
    timeout: float = 60.0  # seconds


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str | None = None  # None: no AUTH
    password: Secret | None = None
    oauth2_token: Secret | None = None
    oauth2: OAuth2App | None = None
    ca_file: Path | None = None
    sender: str
    timeout: float = 60.0


@dataclass(frozen=True)
class SyncSettings:
    history_days: int = 90  # 0: all history
    waive_keyword: str = "$NoReplyNeeded"
    waive_folder: str = "No reply needed"
    batch_size: int = 200


@dataclass(frozen=True)
class DigestSettings:
    weekly: bool = True
    weekday: int = 0  # Monday
    at: time = time(8, 0)  # agency timezone
    monthly: bool = True
    quarterly: bool = True


@dataclass(frozen=True)
class DaemonSettings:
    nudge_interval: timedelta = timedelta(minutes=5)
    # Several workers on PostgreSQL: a worker that stops renewing its leases for this
    # long is presumed dead and its mailboxes are taken over.
    lease_ttl: timedelta = timedelta(minutes=5)
    log_format: str = "text"  # one of LOG_FORMATS; "json": one JSON object per line


@dataclass(frozen=True)
class HealthSettings:
    ping_url: str | None = None
    stale_after: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class AlertSettings:
    """Who hears when a mailbox stops syncing, sending fails or a job keeps failing:
    staff addresses; empty, nobody (health and status still say it)."""

    to: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientReportSettings:
    """Service reports sent on schedule to each account's manager and backups."""

    day: int = 1  # of the month after the period, at [digests] time
    periods: Mapping[str, str] = field(default_factory=dict)  # account -> "month" | "quarter"


@dataclass(frozen=True)
class LessonSettings:
    """The categories a lessons-learnt reason may take; the last is used when `annotate`
    names none."""

    categories: tuple[str, ...] = DEFAULT_CATEGORIES


@dataclass(frozen=True)
class CheckInSettings:
    """How long an account may go without contact before digests suggest a check-in:
    `[agency] check_in_after`, or an `[[accounts]]` entry's own; None: never."""

    after: timedelta | None = timedelta(days=28)
    accounts: Mapping[str, timedelta | None] = field(default_factory=dict)  # their own

    def after_for(self, account: str) -> timedelta | None:
        return self.accounts.get(account, self.after)


@dataclass(frozen=True)
class Settings:
    source: Path
    agency_name: str
    policy: Policy
    database_url: str = DEFAULT_DATABASE_URL
    retention_days: int = 400
    mailboxes: tuple[MailboxSettings, ...] = ()
    smtp: SmtpSettings | None = None
    sync: SyncSettings = field(default_factory=SyncSettings)
    digests: DigestSettings = field(default_factory=DigestSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    client_reports: ClientReportSettings = field(default_factory=ClientReportSettings)
    lessons: LessonSettings = field(default_factory=LessonSettings)
    check_ins: CheckInSettings = field(default_factory=CheckInSettings)
