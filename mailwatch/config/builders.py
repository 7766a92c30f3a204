"""Loading the file: the servers, secrets' sources and the remaining tables turned into
`Settings`, with the policy built by `mailwatch.config.policy`."""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailwatch.adapters.service_account import load_service_account
from mailwatch.config.policy import build_policy
from mailwatch.config.reader import (
    CLIENT_SECRET_KEYS,
    GOOGLE_KEYS,
    MICROSOFT_KEYS,
    OAUTH2_KEYS,
    SECRET_KEYS,
    ConfigError,
    Reader,
    is_address,
    is_domain_name,
    read_config_file,
)
from mailwatch.config.secrets import Secret
from mailwatch.config.settings import (
    DEFAULT_DATABASE_URL,
    LOG_FORMATS,
    AlertSettings,
    CheckInSettings,
    ClientReportSettings,
    DaemonSettings,
    DigestSettings,
    GoogleServiceAccount,
    HealthSettings,
    LessonSettings,
    MailboxSettings,
    MicrosoftApp,
    OAuth2App,
    Settings,
    SmtpSettings,
    SyncSettings,
)
from mailwatch.core.addresses import Directory
from mailwatch.core.model import Policy, Role

log = logging.getLogger("mailwatch.config")

_SECURITY = ("ssl", "starttls", "none")
_IMAP_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
_SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
_SECRET_SOURCES = (
    "set password_env, password_file, password_command, oauth2_token_command or oauth2"
)
_OAUTH2_PROVIDERS = ("microsoft", "google")
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IMAP_ATOM = re.compile(r"[^\s(){%*\"\\\]]+")  # RFC 3501 atom: what a keyword may contain


def load_settings(path: Path) -> Settings:
    """Read and validate the file; every problem raises one ConfigError."""
    settings = _settings(read_config_file(path), path)
    _warn_when_commands_are_exposed(path, settings)
    return settings


def _settings(root: Reader, path: Path) -> Settings:
    database = root.table("database")
    policy = build_policy(root)
    return Settings(
        source=path,
        agency_name=root.table("agency").text("name"),
        policy=policy,
        database_url=_database_url(database),
        retention_days=database.integer("retention_days", 400, minimum=1),
        mailboxes=_mailboxes(root),
        smtp=_smtp(root),
        sync=_sync(root.table("sync")),
        digests=_digests(root.table("digests")),
        daemon=_daemon(root.table("daemon")),
        health=_health(root.table("health")),
        alerts=_alerts(root.table("alerts"), policy),
        client_reports=_client_reports(root),
        lessons=_lessons(root.table("lessons")),
        check_ins=_check_ins(root),
    )


# ---------------------------------------------------------------- servers


def _mailboxes(root: Reader) -> tuple[MailboxSettings, ...]:
    mailboxes: list[MailboxSettings] = []
    for entry in root.tables("mailboxes"):
        name = entry.text("name")
        if name in {mailbox.name for mailbox in mailboxes}:
            raise entry.error("name", f"two mailboxes are named {name!r}")
        host, port, security = _server(entry, "ssl", _IMAP_PORTS)
        username = entry.text("username")
        password, token, app = _credentials(entry)
        if password is None and token is None and app is None:
            raise entry.error(None, f"no secret to log in with: {_SECRET_SOURCES}")
        folders = entry.texts("folders", None)
        if folders == ():
            raise entry.error("folders", "needs a folder (omit the key to watch every folder)")
        mailboxes.append(
            MailboxSettings(
                name=name,
                host=host,
                port=port,
                security=security,
                username=username,
                password=password,
                oauth2_token=token,
                oauth2=app,
                ca_file=entry.existing_file("ca_file"),
                folders=folders,
                idle=entry.boolean("idle", True),
                poll_interval=entry.duration("poll_interval", timedelta(minutes=2)),
                timeout=entry.seconds("timeout", 60.0),
            )
        )
    return tuple(mailboxes)


def _smtp(root: Reader) -> SmtpSettings | None:
    if not root.has("smtp"):
        return None
    entry = root.table("smtp")
    host, port, security = _server(entry, "starttls", _SMTP_PORTS)
    username = entry.text("username", None)
    password, token, app = _credentials(entry)
    secret = password or token
    if username is not None and secret is None and app is None:
        raise entry.error("username", f"no secret to log in with: {_SECRET_SOURCES}")
    if secret is not None and username is None:
        raise ConfigError(secret.file, secret.key, "a secret needs smtp.username to log in with")
    if app is not None and username is None:
        raise entry.error("oauth2", "needs smtp.username: the mailbox that sends")
    sender = entry.text("sender")
    if not is_address(parseaddr(sender)[1]):
        raise entry.error("sender", f'expected "Name <address>" or an address, got {sender!r}')
    return SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        oauth2_token=token,
        oauth2=app,
        ca_file=entry.existing_file("ca_file"),
        sender=sender,
        timeout=entry.seconds("timeout", 60.0),
    )


def _server(entry: Reader, security_default: str, ports: dict[str, int]) -> tuple[str, int, str]:
    host = entry.text("host")
    security = entry.choice("security", _SECURITY, security_default)
    port = entry.integer("port", ports[security], minimum=1, maximum=65535)
    # Without TLS the password crosses the network in clear: only tests and local relays.
    if security == "none" and not _is_loopback(host):
        raise entry.error(
            "security", f'"none" sends passwords in clear: only for a loopback host, not {host}'
        )
    return host, port, security


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _credentials(entry: Reader) -> tuple[Secret | None, Secret | None, OAuth2App | None]:
    """How a server table logs in: (password, OAuth2 token command, built-in OAuth2);
    at most one of them."""
    given = [key for key in (*SECRET_KEYS, "oauth2") if entry.has(key)]
    if len(given) > 1:
        raise entry.error(given[1], f"two secret sources ({given[0]} and {given[1]}): keep one")
    if given == ["oauth2"]:
        return None, None, _oauth2_app(entry)
    for key in OAUTH2_KEYS:
        if entry.has(key):
            raise entry.error(key, 'only with oauth2 = "microsoft" or "google"')
    if not given:
        return None, None, None
    secret = _secret(entry, given[0])
    return (None, secret, None) if given[0] == "oauth2_token_command" else (secret, None, None)


def _oauth2_app(entry: Reader) -> OAuth2App:
    provider = entry.choice("oauth2", _OAUTH2_PROVIDERS)
    own, foreign = (
        (MICROSOFT_KEYS, GOOGLE_KEYS) if provider == "microsoft" else (GOOGLE_KEYS, MICROSOFT_KEYS)
    )
    for key in foreign:
        if entry.has(key):
            raise entry.error(key, f'not used with oauth2 = "{provider}"')
    for key in own:
        if key not in CLIENT_SECRET_KEYS and not entry.has(key):
            raise entry.error(key, f'missing (required with oauth2 = "{provider}")')
    if provider == "microsoft":
        return _microsoft_app(entry)
    return _google_service_account(entry)


def _microsoft_app(entry: Reader) -> MicrosoftApp:
    # Neither value is repeated in an error: a secret pasted into the wrong key must not show.
    tenant = entry.text("tenant")
    if not (_GUID.fullmatch(tenant) or is_domain_name(tenant)):
        raise entry.error(
            "tenant", "expected the Directory (tenant) ID or a domain like rouge.example"
        )
    client_id = entry.text("client_id")
    if not _GUID.fullmatch(client_id):
        raise entry.error(
            "client_id", "expected the Application (client) ID, like 00000000-0000-0000-0000-…"
        )
    given = [key for key in CLIENT_SECRET_KEYS if entry.has(key)]
    if not given:
        raise entry.error(
            None,
            'oauth2 = "microsoft" needs client_secret_env, client_secret_file '
            "or client_secret_command",
        )
    if len(given) > 1:
        raise entry.error(given[1], f"two secret sources ({given[0]} and {given[1]}): keep one")
    return MicrosoftApp(tenant=tenant, client_id=client_id, client_secret=_secret(entry, given[0]))


def _google_service_account(entry: Reader) -> GoogleServiceAccount:
    path = entry.existing_file("service_account_file")
    assert path is not None  # required: checked by _oauth2_app
    try:
        load_service_account(path)
    except ValueError as error:
        raise entry.error("service_account_file", str(error)) from None
    return GoogleServiceAccount(key_file=path)


def _secret(entry: Reader, key: str) -> Secret:
    """Where a `…_env`, `…_file` or `…_command` key says a secret lives."""
    value = entry.text(key)
    if key.endswith("_env"):
        if not _ENV_NAME.fullmatch(value):
            # Probably the secret itself pasted in: name the key, never the value.
            raise entry.error(key, "not an environment variable name")
        source = f"env {value}"
    elif key.endswith("_file"):
        source = f"file {entry.base_dir / value}"
    else:
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise entry.error(key, f"cannot split the command: {error}") from None
        if not argv:
            raise entry.error(key, "must name a command")
        source = f"command {value}"
    return Secret(source, entry.file, entry.key_path(key))


# ---------------------------------------------------------------- the other tables


def _database_url(database: Reader) -> str:
    url = database.text("url", DEFAULT_DATABASE_URL)
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        # The URL may hold a password: do not repeat it.
        raise database.error(
            "url", "not a database URL (e.g. sqlite:///mailwatch.db, postgresql+psycopg://…)"
        ) from None
    return url


def _sync(sync: Reader) -> SyncSettings:
    default = SyncSettings()
    keyword = sync.text("waive_keyword", default.waive_keyword)
    if not _IMAP_ATOM.fullmatch(keyword):
        raise sync.error(
            "waive_keyword", f'not an IMAP keyword (no spaces or ()%*"\\]): {keyword!r}'
        )
    return SyncSettings(
        history_days=sync.integer("history_days", default.history_days, minimum=0),
        waive_keyword=keyword,
        waive_folder=sync.text("waive_folder", default.waive_folder),
        batch_size=sync.integer("batch_size", default.batch_size, minimum=1),
    )


def _digests(digests: Reader) -> DigestSettings:
    default = DigestSettings()
    return DigestSettings(
        weekly=digests.boolean("weekly", default.weekly),
        weekday=digests.weekday("weekday", default.weekday),
        at=digests.clock_time("time", default.at),
        monthly=digests.boolean("monthly", default.monthly),
        quarterly=digests.boolean("quarterly", default.quarterly),
    )


def _daemon(daemon: Reader) -> DaemonSettings:
    default = DaemonSettings()
    return DaemonSettings(
        nudge_interval=daemon.duration("nudge_interval", default.nudge_interval),
        lease_ttl=daemon.duration("lease_ttl", default.lease_ttl),
        log_format=daemon.choice("log_format", LOG_FORMATS, default.log_format),
    )


def _health(health: Reader) -> HealthSettings:
    default = HealthSettings()
    url = health.text("ping_url", None)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise health.error("ping_url", "expected an http:// or https:// URL")
    return HealthSettings(
        ping_url=url, stale_after=health.duration("stale_after", default.stale_after)
    )


def _alerts(alerts: Reader, policy: Policy) -> AlertSettings:
    if not alerts.has("to"):
        return AlertSettings(to=policy.head_of_client_management)
    directory = Directory(policy)
    to = alerts.addresses("to")
    for index, address in enumerate(to):
        if directory.role(address) is not Role.STAFF:
            raise alerts.error(
                f"to[{index}]",
                f"not a staff address: {address} (list it under [[staff]] or agency.domains)",
            )
    return AlertSettings(to=to)


_REPORT_SCHEDULES = {"monthly": "month", "quarterly": "quarter"}


def _check_ins(root: Reader) -> CheckInSettings:
    after = _check_in_after(root.table("agency"), CheckInSettings.after)
    own = {
        entry.text("name"): _check_in_after(entry, after)
        for entry in root.tables("accounts")
        if entry.has("check_in_after")
    }
    return CheckInSettings(after=after, accounts=own)


def _check_in_after(reader: Reader, default: timedelta | None) -> timedelta | None:
    """A duration, or false: no check-in prompts."""
    if reader.data.get("check_in_after") is False:
        return None
    if reader.data.get("check_in_after") is True:
        raise reader.error("check_in_after", 'expected a duration like "28d", or false')
    duration: timedelta | None = reader.duration("check_in_after", default)
    return duration


def _client_reports(root: Reader) -> ClientReportSettings:
    periods = {}
    for entry in root.tables("accounts"):
        schedule = entry.choice("client_report", tuple(_REPORT_SCHEDULES), None)
        if schedule is None:
            continue
        if not entry.has("manager") and not entry.addresses("backups"):
            raise entry.error("client_report", "nobody to send it to: set manager or backups")
        periods[entry.text("name")] = _REPORT_SCHEDULES[schedule]
    day = root.table("client_reports").integer("day", ClientReportSettings.day, 1, 28)
    return ClientReportSettings(day=day, periods=periods)


def _lessons(lessons: Reader) -> LessonSettings:
    categories = lessons.texts("categories", LessonSettings.categories)
    if not categories:
        raise lessons.error("categories", "name at least one category")
    folded = [category.casefold() for category in categories]
    for index, category in enumerate(folded):
        if category in folded[:index]:
            raise lessons.error(f"categories[{index}]", f"listed twice: {categories[index]!r}")
    return LessonSettings(categories=categories)


def _warn_when_commands_are_exposed(path: Path, settings: Settings) -> None:
    """Whoever can change this file chooses the commands mailwatch runs for its secrets."""
    servers: list[MailboxSettings | SmtpSettings] = [*settings.mailboxes]
    if settings.smtp:
        servers.append(settings.smtp)
    secrets = [
        secret
        for server in servers
        for secret in (server.password, server.oauth2_token, _client_secret(server.oauth2))
        if secret
    ]
    if not any(secret.source.startswith("command ") for secret in secrets):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o066:
        log.warning(
            "%s names commands that fetch secrets, and group or others can read or write it: "
            "chmod 600 %s",
            path,
            path,
        )


def _client_secret(app: OAuth2App | None) -> Secret | None:
    return app.client_secret if isinstance(app, MicrosoftApp) else None
