"""The configuration file: read, validated and turned into frozen settings.

A bad file is refused before anything runs, with one line that names the file,
the key and what is wrong (`mailwatch.toml: accounts[2].manager: not a staff
address: carol@rouge.example`), so `mailwatch check` and a SIGHUP reload can
print it as it is.  Entries of an array of tables count from 0.

Secrets are never written in the file.  It names where they live (an
environment variable, a file, a command) and `Secret.reveal()` fetches them
only when a connection needs them, so a file can be checked on a machine that
does not hold them, and no secret value ever reaches a message or a log.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import tomllib
import zoneinfo
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.utils import parseaddr
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import holidays
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailwatch.adapters.oauth import load_service_account
from mailwatch.core.model import (
    Account,
    BusinessHours,
    ClockKind,
    Leave,
    NudgePolicy,
    NudgeStage,
    Policy,
    StaffMember,
    Tier,
)

log = logging.getLogger("mailwatch.config")

DEFAULT_CONFIG = "mailwatch.toml"
DEFAULT_DATABASE_URL = "sqlite:///mailwatch.db"
SECRET_COMMAND_TIMEOUT = 30.0  # seconds; a hung `pass` or token helper must not hang the daemon

SECRET_KEYS = ("password_env", "password_file", "password_command", "oauth2_token_command")
CLIENT_SECRET_KEYS = ("client_secret_env", "client_secret_file", "client_secret_command")
MICROSOFT_KEYS = ("tenant", "client_id", *CLIENT_SECRET_KEYS)
GOOGLE_KEYS = ("service_account_file",)
OAUTH2_KEYS = ("oauth2", *MICROSOFT_KEYS, *GOOGLE_KEYS)  # built-in OAuth2
SECRETS_NOT_IN_FILE = (
    "secrets are never written in the file: use password_env, password_file or password_command"
)
_SECRET_LOOKING_KEY = re.compile(r"(?:^|_)(?:password|passwd|secret|token)$")


class ConfigError(Exception):
    """A problem with the configuration, as one line: `<file>: <key.path>: <what is wrong>`."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.file, self.key, self.problem] if self.key else [self.file, self.problem]
        # Quoted TOML keys may hold line breaks; the message must stay on one line.
        return ": ".join(parts).replace("\r", "\\r").replace("\n", "\\n")


def config_path(explicit: str | None) -> Path:
    """`--config PATH`, else `$MAILWATCH_CONFIG`, else `./mailwatch.toml`."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("MAILWATCH_CONFIG")
    return Path(from_env) if from_env else Path(DEFAULT_CONFIG)


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """`"90m"`, `"8h30m"`, `"24h"`, `"2d"`, `"1d12h"`, `"45s"`: d, h, m, s, in that order."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a duration: {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


# ---------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secret:
    """Where a secret lives: `env NAME`, `file PATH` or `command ARGV`; never the value."""

    source: str
    file: str = field(default="", repr=False)  # the config file and key that named it,
    key: str = field(default="", repr=False)  # for the error when it cannot be fetched

    def __str__(self) -> str:
        return self.source

    def reveal(self) -> str:
        """Fetch the value now. Raises ConfigError naming the key, never the value."""
        kind, _, argument = self.source.partition(" ")
        if kind == "env":
            return self._from_env(argument)
        if kind == "file":
            return self._from_file(Path(argument))
        return self._from_command(argument)

    def _error(self, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key, problem)

    def _from_env(self, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise self._error(f"environment variable {name} is not set")
        return value

    def _from_file(self, path: Path) -> str:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise self._error(f"cannot read {path}: {error.strerror}") from None
        return self._first_line(raw, f"{path} is empty")

    def _from_command(self, command: str) -> str:
        argv = shlex.split(command)
        try:
            # No shell: the file names a program and its arguments, nothing else.
            # stderr is dropped: helpers like `pass` may echo what they were asked.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            raise self._error(f"cannot run {argv[0]}: {error.strerror}") from None
        try:
            output, _ = process.communicate(timeout=SECRET_COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Kill the whole session: a grandchild holding stdout would block us.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise self._error(
                f"command timed out after {SECRET_COMMAND_TIMEOUT:g} s: {argv[0]}"
            ) from None
        if process.returncode != 0:
            raise self._error(f"command failed with exit status {process.returncode}: {argv[0]}")
        return self._first_line(output, f"command printed nothing: {argv[0]}")

    def _first_line(self, raw: bytes, empty_problem: str) -> str:
        """The secret is the first line (`pass show` prints notes after it)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error("the secret is not UTF-8 text") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise self._error(empty_problem)
        return lines[0]


# ---------------------------------------------------------------- built-in OAuth2


@dataclass(frozen=True, kw_only=True)
class MicrosoftApp:
    """Microsoft 365 app-only access: an Entra ID app registration, and where its secret lives."""

    provider: ClassVar[str] = "microsoft"
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

    provider: ClassVar[str] = "google"
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


@dataclass(frozen=True)
class HealthSettings:
    ping_url: str | None = None
    stale_after: timedelta = timedelta(minutes=30)


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


# ---------------------------------------------------------------- the known keys

_HOURS_KEYS = dict.fromkeys(["timezone", "days", "start", "end", "holidays", "closed"])
# A dict is a table, a one-element list an array of tables, None a value.
_SCHEMA: dict[str, Any] = {
    "agency": dict.fromkeys(["name", "domains", "timezone", "head_of_client_management"]),
    "database": dict.fromkeys(["url", "retention_days"]),
    "sla": {
        **dict.fromkeys(["target", "request_expiry", "clock"]),
        "business_hours": _HOURS_KEYS,
        "tiers": [dict.fromkeys(["name", "target", "subject", "high_priority", "clock"])],
    },
    "mailboxes": [
        dict.fromkeys(
            ["name", "host", "port", "security", "username", *SECRET_KEYS, *OAUTH2_KEYS]
            + ["ca_file"]
            + ["folders", "idle", "poll_interval", "timeout"]
        )
    ],
    "staff": [dict.fromkeys(["email", "name", "aliases", "timezone"])],
    "accounts": [
        {
            **dict.fromkeys(
                ["name", "domains", "addresses", "manager", "backups", "target", "clock"]
            ),
            "business_hours": _HOURS_KEYS,
        }
    ],
    "leave": [dict.fromkeys(["who", "start", "end"])],
    "smtp": dict.fromkeys(
        ["host", "port", "security", "username", *SECRET_KEYS, *OAUTH2_KEYS, "ca_file"]
        + ["sender", "timeout"]
    ),
    "sync": dict.fromkeys(["history_days", "waive_keyword", "waive_folder", "batch_size"]),
    "automation": dict.fromkeys(["human_lists", "courtesy"]),
    "threading": dict.fromkeys(["subject_window", "generic_subjects"]),
    "nudges": {
        **dict.fromkeys(["enabled", "max_lateness", "critical_tiers"]),
        "stages": [dict.fromkeys(["name", "at", "notify"])],
        "quiet_hours": dict.fromkeys(["start", "end", "weekends"]),
    },
    "digests": dict.fromkeys(["weekly", "weekday", "time", "monthly", "quarterly"]),
    "daemon": dict.fromkeys(["nudge_interval", "lease_ttl"]),
    "health": dict.fromkeys(["ping_url", "stale_after"]),
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_keys(file: str, data: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    """Reject unknown keys anywhere, and tables where a value belongs (and the reverse)."""
    for key, value in data.items():
        here = _join(path, key)
        if key not in schema:
            raise ConfigError(file, here, _unknown_key_problem(key, schema))
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(file, here, f"expected a table, got {_kind(value)}")
            _check_keys(file, value, expected, here)
        elif isinstance(expected, list):
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ConfigError(file, here, f"expected an array of tables ([[{key}]])")
            for index, item in enumerate(value):
                _check_keys(file, item, expected[0], f"{here}[{index}]")


def _unknown_key_problem(key: str, schema: dict[str, Any]) -> str:
    if key.lower().startswith("client_secret") and "client_id" in schema:
        return "secrets are never written in the file: use " + ", ".join(CLIENT_SECRET_KEYS)
    if _SECRET_LOOKING_KEY.search(key.lower()):
        return SECRETS_NOT_IN_FILE
    nearest = difflib.get_close_matches(key, list(schema), n=1)
    if nearest:
        return f"unknown key {key!r} (did you mean {nearest[0]!r}?)"
    return f"unknown key {key!r} (known keys: {', '.join(schema)})"


def _kind(value: object) -> str:
    """A value's TOML type, for messages; never the value itself (it could be a secret)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    if isinstance(value, list):
        return "an array"
    return "a table"


# ---------------------------------------------------------------- typed reading

_REQUIRED: Any = object()
_WEEKDAYS = {
    name: index
    for index, names in enumerate(
        [
            ("mon", "monday"),
            ("tue", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
            ("sun", "sunday"),
        ]
    )
    for name in names
}
_CLOCK_TIME = re.compile(r"(\d{2}):(\d{2})")
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IMAP_ATOM = re.compile(r"[^\s(){%*\"\\\]]+")  # RFC 3501 atom: what a keyword may contain
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


class _Reader:
    """Typed access to one TOML table; every error names the key's full path."""

    def __init__(self, file: str, data: dict[str, Any], path: str, base_dir: Path) -> None:
        self.file = file
        self.data = data
        self.path = path
        self.base_dir = base_dir  # relative file names are relative to the config file

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.file, _join(self.path, key) if key else self.path, problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str) -> _Reader:
        return _Reader(self.file, self.data.get(key, {}), _join(self.path, key), self.base_dir)

    def tables(self, key: str) -> list[_Reader]:
        here = _join(self.path, key)
        return [
            _Reader(self.file, item, f"{here}[{index}]", self.base_dir)
            for index, item in enumerate(self.data.get(key, []))
        ]

    def _value(self, key: str, default: Any, types: tuple[type, ...], expected: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing (required)")
            return default
        value = self.data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.error(key, f"expected {expected}, got {_kind(value)}")
        return value

    def _defaulted(self, key: str, default: Any) -> bool:
        """The key is absent and optional: the caller returns `default` as it is."""
        return key not in self.data and default is not _REQUIRED

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        if self._defaulted(key, default):
            return default
        value = self._value(key, default, (str,), "a string")
        if value == "":
            raise self.error(key, "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return self._value(key, default, (bool,), "true or false")

    def integer(self, key: str, default: Any, minimum: int, maximum: int | None = None) -> int:
        value = self._value(key, default, (int,), "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(key, f"out of range: {value} (must be {bound})")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self._value(key, default, (int, float), "a number of seconds")
        if not (value > 0 and math.isfinite(value)):
            raise self.error(key, "must be more than 0 seconds")
        return float(value)

    def texts(self, key: str, default: Any = _REQUIRED) -> Any:
        if self._defaulted(key, default):
            return default
        values = self._value(key, default, (list,), "an array of strings")
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value:
                got = "an empty string" if value == "" else _kind(value)
                raise self.error(f"{key}[{index}]", f"expected a non-empty string, got {got}")
        return tuple(values)

    def choice(self, key: str, options: tuple[str, ...], default: Any) -> Any:
        if self._defaulted(key, default):
            return default
        value = self.text(key)
        if value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def clock(self, key: str, default: Any) -> Any:
        value = self.choice(key, tuple(ClockKind), default)
        return value if value is None else ClockKind(value)

    def duration(self, key: str, default: Any = _REQUIRED) -> Any:
        if self._defaulted(key, default):
            return default
        value = self._value(key, default, (str,), 'a duration like "90m", "8h30m" or "2d"')
        try:
            duration = parse_duration(value)
        except ValueError:
            raise self.error(
                key, f'expected a duration like "90m", "8h30m" or "2d", got {value!r}'
            ) from None
        if not duration:
            raise self.error(key, "must be longer than 0")
        return duration

    def clock_time(self, key: str, default: time) -> time:
        if self._defaulted(key, default):
            return default
        value = self._value(key, default, (str, time), 'a time "HH:MM"')
        if isinstance(value, time):
            return value
        match = _CLOCK_TIME.fullmatch(value)
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise self.error(key, f'expected a time "HH:MM" (00:00 to 23:59), got {value!r}')
        return time(int(match[1]), int(match[2]))

    def weekday(self, key: str, default: int) -> int:
        if self._defaulted(key, default):
            return default
        return self._weekday_number(key, self._value(key, default, (str,), 'a weekday like "mon"'))

    def weekdays(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        if key not in self.data:
            return default
        names = self.texts(key)
        if not names:
            raise self.error(key, "needs at least one day")
        numbers = {self._weekday_number(f"{key}[{i}]", name) for i, name in enumerate(names)}
        return tuple(sorted(numbers))

    def _weekday_number(self, key: str, name: str) -> int:
        number = _WEEKDAYS.get(name.lower())
        if number is None:
            raise self.error(key, f"unknown weekday {name!r} (mon, tue, … sun)")
        return number

    def day(self, key: str, default: Any = _REQUIRED) -> date:
        if self._defaulted(key, default):
            return default
        return self._date(key, self._value(key, default, (date, str), "a date like 2026-12-24"))

    def days(self, key: str, default: frozenset[date]) -> frozenset[date]:
        if self._defaulted(key, default):
            return default
        values = self._value(key, default, (list,), "an array of dates")
        return frozenset(self._date(f"{key}[{index}]", value) for index, value in enumerate(values))

    def _date(self, key: str, value: Any) -> date:
        # A TOML date-time is a `datetime`, which is also a `date`: refuse it explicitly.
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.error(key, "expected a date like 2026-12-24")

    def timezone(self, key: str, default: Any = _REQUIRED) -> str:
        if self._defaulted(key, default):
            return default
        name = self.text(key)
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise self.error(key, f"unknown timezone {name!r} (e.g. Europe/London)") from None
        return name

    def address(self, key: str, default: Any = _REQUIRED) -> Any:
        if self._defaulted(key, default):
            return default
        value = self.text(key)
        if not _ADDRESS.fullmatch(value):
            raise self.error(key, f"not an email address: {value!r}")
        return value.lower()

    def addresses(self, key: str) -> tuple[str, ...]:
        values = self.texts(key, ())
        for index, value in enumerate(values):
            if not _ADDRESS.fullmatch(value):
                raise self.error(f"{key}[{index}]", f"not an email address: {value!r}")
        return tuple(value.lower() for value in values)

    def domains(self, key: str) -> tuple[str, ...]:
        values = self.texts(key, ())
        for index, value in enumerate(values):
            if not _DOMAIN.fullmatch(value):
                raise self.error(f"{key}[{index}]", f"not a domain name: {value!r}")
        return tuple(value.lower() for value in values)

    def existing_file(self, key: str) -> Path | None:
        value = self.text(key, None)
        if value is None:
            return None
        path = self.base_dir / value
        if not path.is_file():
            raise self.error(key, f"no such file: {path}")
        return path

    def fraction(self, key: str) -> float:
        value = self._value(key, _REQUIRED, (int, float, str), 'a fraction like 0.75 or "75%"')
        if isinstance(value, str):
            match = _PERCENT.fullmatch(value)
            if match is None:
                raise self.error(key, f'expected a fraction like 0.75 or "75%", got {value!r}')
            value = float(match[1]) / 100
        if not (value > 0 and math.isfinite(value)):
            raise self.error(key, "must be more than 0")
        return float(value)


# ---------------------------------------------------------------- loading


def load_settings(path: Path) -> Settings:
    """Read and validate the file; every problem raises one ConfigError."""
    file = str(path)
    data = _read_toml(path, file)
    _check_keys(file, data, _SCHEMA, "")
    settings = _settings(_Reader(file, data, "", path.parent), path)
    _warn_when_commands_are_exposed(path, settings)
    return settings


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _read_toml(path: Path, file: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(file, "", f"cannot read the file: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise ConfigError(file, "end of file", f"invalid TOML: {message}") from None
        reason = message[: position.start()]
        raise ConfigError(
            file, f"line {position[1]}", f"invalid TOML: {reason} (column {position[2]})"
        ) from None


def _settings(root: _Reader, path: Path) -> Settings:
    database = root.table("database")
    return Settings(
        source=path,
        agency_name=root.table("agency").text("name"),
        policy=_policy(root),
        database_url=_database_url(database),
        retention_days=database.integer("retention_days", 400, minimum=1),
        mailboxes=_mailboxes(root),
        smtp=_smtp(root),
        sync=_sync(root.table("sync")),
        digests=_digests(root.table("digests")),
        daemon=_daemon(root.table("daemon")),
        health=_health(root.table("health")),
    )


# ---------------------------------------------------------------- the policy

_DEFAULT_POLICY = Policy()
_STANDARD_TIER = "standard"  # the tier of mail that no [[sla.tiers]] entry matches


def _policy(root: _Reader) -> Policy:
    agency = root.table("agency")
    timezone = agency.timezone("timezone")
    agency_domains = agency.domains("domains")
    for index, domain in enumerate(agency_domains):
        _refuse_public_domain(agency, f"domains[{index}]", domain)
    staff = _staff(root)
    people = _People(agency_domains, staff)
    head = tuple(
        people.staff_address(address) or address
        for address in agency.addresses("head_of_client_management")
    )
    sla = root.table("sla")
    hours = _business_hours(sla.table("business_hours"), BusinessHours(timezone=timezone))
    tiers = _tiers(sla)
    automation = root.table("automation")
    threading = root.table("threading")
    return Policy(
        agency_domains=agency_domains,
        timezone=timezone,
        staff=staff,
        accounts=_accounts(root, people, hours),
        head_of_client_management=head,
        target=sla.duration("target", _DEFAULT_POLICY.target),
        clock=sla.clock("clock", _DEFAULT_POLICY.clock),
        business_hours=hours,
        tiers=tiers,
        request_expiry=sla.duration("request_expiry", _DEFAULT_POLICY.request_expiry),
        subject_window=threading.duration("subject_window", _DEFAULT_POLICY.subject_window),
        generic_subjects=frozenset(
            subject.strip().lower()
            for subject in threading.texts("generic_subjects", _DEFAULT_POLICY.generic_subjects)
        ),
        human_lists=tuple(_list_id(value) for value in automation.texts("human_lists", ())),
        courtesy=automation.boolean("courtesy", _DEFAULT_POLICY.courtesy),
        leave=_leave(root, people),
        nudges=_nudges(root.table("nudges"), {tier.name for tier in tiers}),
    )


class _People:
    """Who counts as staff while the file is read: [[staff]] addresses and agency domains."""

    def __init__(self, agency_domains: tuple[str, ...], staff: tuple[StaffMember, ...]) -> None:
        self.agency_domains = frozenset(agency_domains)
        self.listed = {
            address: member.email for member in staff for address in (member.email, *member.aliases)
        }

    def staff_address(self, address: str) -> str | None:
        """The staff member's main address (an alias maps to its email), or None."""
        if address in self.listed:
            return self.listed[address]
        return address if address.rpartition("@")[2] in self.agency_domains else None

    def require(self, reader: _Reader, key: str, address: str) -> str:
        main = self.staff_address(address)
        if main is None:
            raise reader.error(
                key, f"not a staff address: {address} (list it under [[staff]] or agency.domains)"
            )
        return main


@functools.cache
def public_mail_domains() -> frozenset[str]:
    """The large public mail providers, whose domains never identify one client or agency."""
    listing = resources.files("mailwatch").joinpath("data/public_mail_domains.txt")
    lines = (line.strip().lower() for line in listing.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _refuse_public_domain(reader: _Reader, key: str, domain: str) -> None:
    if domain in public_mail_domains():
        raise reader.error(
            key,
            f"{domain} is a public mail provider: list those people's exact addresses instead",
        )


def _staff(root: _Reader) -> tuple[StaffMember, ...]:
    members = []
    listed_at: dict[str, str] = {}
    for entry in root.tables("staff"):
        email = entry.address("email")
        aliases = entry.addresses("aliases")
        keyed = [("email", email), *((f"aliases[{i}]", alias) for i, alias in enumerate(aliases))]
        for key, address in keyed:
            if address in listed_at:
                raise entry.error(key, f"{address} is already listed in {listed_at[address]}")
            listed_at[address] = entry.path
        members.append(
            StaffMember(
                email=email,
                name=entry.text("name", ""),
                aliases=aliases,
                timezone=entry.timezone("timezone", None),
            )
        )
    return tuple(members)


def _business_hours(reader: _Reader, base: BusinessHours) -> BusinessHours:
    """Hours from a table; keys it leaves out come from `base` (accounts inherit the agency's)."""
    timezone = reader.timezone("timezone", base.timezone)
    days = reader.weekdays("days", base.days)
    start = reader.clock_time("start", base.start)
    end = reader.clock_time("end", base.end)
    if end <= start:
        raise reader.error(
            "end" if reader.has("end") else "start",
            f"hours end ({end:%H:%M}) before they start ({start:%H:%M})",
        )
    return BusinessHours(
        timezone=timezone,
        days=days,
        start=start,
        end=end,
        holidays=_holidays(reader, base.holidays),
        closed=reader.days("closed", base.closed),
    )


def _holidays(reader: _Reader, default: Container[date]) -> Container[date]:
    name = reader.text("holidays", None)
    if name is None:
        return default
    country, _, subdivision = name.upper().partition("-")
    # Check against the library's own list: it looks codes up as module attributes,
    # so an unlisted one can resolve to something that is not a country at all.
    subdivisions = holidays.list_supported_countries().get(country)
    if subdivisions is None or (subdivision and subdivision not in subdivisions):
        raise reader.error(
            "holidays", f"unknown country or subdivision {name!r} (e.g. GB-ENG, US-NY, FR)"
        )
    return holidays.country_holidays(country, subdiv=subdivision or None)


def _tiers(sla: _Reader) -> tuple[Tier, ...]:
    tiers: list[Tier] = []
    for entry in sla.tables("tiers"):
        name = entry.text("name")
        if name == _STANDARD_TIER or name in {tier.name for tier in tiers}:
            raise entry.error("name", f"tier name {name!r} is taken")
        target = entry.duration("target")
        patterns = entry.texts("subject", ())
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise entry.error(
                    f"subject[{index}]", f"invalid regular expression: {error}"
                ) from None
        high_priority = entry.boolean("high_priority", False)
        if not patterns and not high_priority:
            raise entry.error(None, "a tier needs subject patterns or high_priority = true")
        tiers.append(Tier(name, target, patterns, high_priority, entry.clock("clock", None)))
    return tuple(tiers)


def _accounts(root: _Reader, people: _People, agency_hours: BusinessHours) -> tuple[Account, ...]:
    accounts: list[Account] = []
    owner: dict[str, str] = {}  # a domain or listed address -> the account it belongs to
    for entry in root.tables("accounts"):
        name = entry.text("name")
        if name in {account.name for account in accounts}:
            raise entry.error("name", f"two accounts are named {name!r}")
        domains = entry.domains("domains")
        addresses = entry.addresses("addresses")
        if not domains and not addresses:
            raise entry.error(None, "an account needs domains or addresses")
        for index, domain in enumerate(domains):
            key = f"domains[{index}]"
            _refuse_public_domain(entry, key, domain)
            if domain in people.agency_domains:
                raise entry.error(key, f"{domain} is an agency domain")
            if domain in owner:
                raise entry.error(key, f"{domain} is already a domain of account {owner[domain]!r}")
            owner[domain] = name
        for index, address in enumerate(addresses):
            key = f"addresses[{index}]"
            if address in people.listed:
                raise entry.error(key, f"{address} is listed as staff too")
            if address in owner:
                raise entry.error(key, f"{address} is already listed in account {owner[address]!r}")
            owner[address] = name
        manager = entry.address("manager", None)
        backups = entry.addresses("backups")
        accounts.append(
            Account(
                name=name,
                domains=domains,
                addresses=addresses,
                manager=manager and people.require(entry, "manager", manager),
                backups=tuple(
                    people.require(entry, f"backups[{index}]", backup)
                    for index, backup in enumerate(backups)
                ),
                target=entry.duration("target", None),
                clock=entry.clock("clock", None),
                business_hours=(
                    _business_hours(entry.table("business_hours"), agency_hours)
                    if entry.has("business_hours")
                    else None
                ),
            )
        )
    return tuple(accounts)


def _leave(root: _Reader, people: _People) -> tuple[Leave, ...]:
    leave = []
    for entry in root.tables("leave"):
        who = people.require(entry, "who", entry.address("who"))
        start = entry.day("start")
        end = entry.day("end")
        if end < start:
            raise entry.error("end", f"leave ends ({end}) before it starts ({start})")
        leave.append(Leave(who, start, end))
    return tuple(leave)


def _list_id(value: str) -> str:
    """`Support <support.acme.example>` and `support.acme.example` name the same list."""
    bracketed = re.search(r"<([^<>]+)>", value)
    return (bracketed[1] if bracketed else value).strip().lower()


_NOTIFY = ("manager", "backups", "head")


def _nudges(nudges: _Reader, tier_names: set[str]) -> NudgePolicy:
    default = NudgePolicy()
    critical = nudges.texts("critical_tiers", default.critical_tiers)
    if nudges.has("critical_tiers"):
        for index, name in enumerate(critical):
            if name not in tier_names:
                raise nudges.error(f"critical_tiers[{index}]", f"no [[sla.tiers]] named {name!r}")
    quiet = nudges.table("quiet_hours")
    return NudgePolicy(
        enabled=nudges.boolean("enabled", default.enabled),
        stages=_stages(nudges, default.stages),
        quiet_start=quiet.clock_time("start", default.quiet_start),
        quiet_end=quiet.clock_time("end", default.quiet_end),
        quiet_weekends=quiet.boolean("weekends", default.quiet_weekends),
        critical_tiers=critical,
        max_lateness=nudges.duration("max_lateness", default.max_lateness),
    )


def _stages(nudges: _Reader, default: tuple[NudgeStage, ...]) -> tuple[NudgeStage, ...]:
    if not nudges.has("stages"):
        return default
    entries = nudges.tables("stages")
    if not entries:
        raise nudges.error("stages", "needs a stage (to send no nudges: enabled = false)")
    stages: list[NudgeStage] = []
    for entry in entries:
        name = entry.text("name")
        if name in {stage.name for stage in stages}:
            raise entry.error("name", f"two stages are named {name!r}")
        at = entry.fraction("at")
        if stages and at <= stages[-1].at:
            raise entry.error("at", f"stages go in rising order: {at:g} follows {stages[-1].at:g}")
        notify = entry.texts("notify")
        if not notify:
            raise entry.error("notify", "needs one or more of manager, backups, head")
        for index, who in enumerate(notify):
            if who not in _NOTIFY:
                raise entry.error(f"notify[{index}]", f"expected manager, backups or head: {who!r}")
        stages.append(NudgeStage(name, at, notify))
    return tuple(stages)


# ---------------------------------------------------------------- servers and the rest

_SECURITY = ("ssl", "starttls", "none")
_IMAP_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
_SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
_SECRET_SOURCES = (
    "set password_env, password_file, password_command, oauth2_token_command or oauth2"
)
_OAUTH2_PROVIDERS = ("microsoft", "google")
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _mailboxes(root: _Reader) -> tuple[MailboxSettings, ...]:
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


def _smtp(root: _Reader) -> SmtpSettings | None:
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
    if not _ADDRESS.fullmatch(parseaddr(sender)[1]):
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


def _server(entry: _Reader, security_default: str, ports: dict[str, int]) -> tuple[str, int, str]:
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


def _credentials(entry: _Reader) -> tuple[Secret | None, Secret | None, OAuth2App | None]:
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


def _oauth2_app(entry: _Reader) -> OAuth2App:
    provider = entry.choice("oauth2", _OAUTH2_PROVIDERS, _REQUIRED)
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


def _microsoft_app(entry: _Reader) -> MicrosoftApp:
    # Neither value is repeated in an error: a secret pasted into the wrong key must not show.
    tenant = entry.text("tenant")
    if not (_GUID.fullmatch(tenant) or _DOMAIN.fullmatch(tenant)):
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


def _google_service_account(entry: _Reader) -> GoogleServiceAccount:
    path = entry.existing_file("service_account_file")
    assert path is not None  # required: checked by _oauth2_app
    try:
        load_service_account(path)
    except ValueError as error:
        raise entry.error("service_account_file", str(error)) from None
    return GoogleServiceAccount(key_file=path)


def _secret(entry: _Reader, key: str) -> Secret:
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
    return Secret(source, entry.file, _join(entry.path, key))


def _database_url(database: _Reader) -> str:
    url = database.text("url", DEFAULT_DATABASE_URL)
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        # The URL may hold a password: do not repeat it.
        raise database.error(
            "url", "not a database URL (e.g. sqlite:///mailwatch.db, postgresql+psycopg://…)"
        ) from None
    return url


def _sync(sync: _Reader) -> SyncSettings:
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


def _digests(digests: _Reader) -> DigestSettings:
    default = DigestSettings()
    return DigestSettings(
        weekly=digests.boolean("weekly", default.weekly),
        weekday=digests.weekday("weekday", default.weekday),
        at=digests.clock_time("time", default.at),
        monthly=digests.boolean("monthly", default.monthly),
        quarterly=digests.boolean("quarterly", default.quarterly),
    )


def _daemon(daemon: _Reader) -> DaemonSettings:
    default = DaemonSettings()
    return DaemonSettings(
        nudge_interval=daemon.duration("nudge_interval", default.nudge_interval),
        lease_ttl=daemon.duration("lease_ttl", default.lease_ttl),
    )


def _health(health: _Reader) -> HealthSettings:
    default = HealthSettings()
    url = health.text("ping_url", None)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise health.error("ping_url", "expected an http:// or https:// URL")
    return HealthSettings(
        ping_url=url, stale_after=health.duration("stale_after", default.stale_after)
    )


def _warn_when_commands_are_exposed(path: Path, settings: Settings) -> None:
    """Whoever can change this file chooses the commands mailwatch runs for its secrets."""
    servers = [*settings.mailboxes, *([settings.smtp] if settings.smtp else [])]
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
