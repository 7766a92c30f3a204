"""Reading the file: TOML in, every key checked against the schema, typed access out.

A bad file is refused with one line that names the file, the key and what is
wrong (`mailwatch.toml: accounts[2].manager: not a staff address: carol@rouge.example`),
so `mailwatch check` and a SIGHUP reload can print it as it is.  Entries of an
array of tables count from 0.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
import zoneinfo
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

from mailwatch.core.model import ClockKind

DEFAULT_CONFIG = "mailwatch.toml"

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


# ---------------------------------------------------------------- the known keys

_HOURS_KEYS = dict.fromkeys(["timezone", "days", "start", "end", "holidays", "closed"])
# A dict is a table, a one-element list an array of tables, None a value.
SCHEMA: dict[str, Any] = {
    "agency": dict.fromkeys(
        ["name", "domains", "timezone", "head_of_client_management", "check_in_after", "directors"]
    ),
    "database": dict.fromkeys(["url", "retention_days"]),
    "sla": {
        **dict.fromkeys(["target", "request_expiry", "clock"]),
        "business_hours": _HOURS_KEYS,
        "tiers": [
            dict.fromkeys(["name", "target", "subject", "high_priority", "clock"])
            | dict.fromkeys(["directors_after"])
        ],
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
                + ["client_report", "check_in_after"]
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
        **dict.fromkeys(["still_waiting_at", "head_overdue_after", "directors_after"]),
        "stages": [dict.fromkeys(["name", "at", "notify"])],
        "quiet_hours": dict.fromkeys(["start", "end", "weekends"]),
    },
    "digests": dict.fromkeys(["weekly", "weekday", "time", "monthly", "quarterly"]),
    "daemon": dict.fromkeys(["nudge_interval", "lease_ttl", "log_format"]),
    "health": dict.fromkeys(["ping_url", "stale_after"]),
    "alerts": dict.fromkeys(["to"]),
    "client_reports": dict.fromkeys(["day"]),
    "lessons": dict.fromkeys(["categories"]),
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

_REQUIRED: Any = object()  # the default of a key that must be given
_Default = TypeVar("_Default")
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
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


class Reader:
    """Typed access to one TOML table; every error names the key's full path."""

    def __init__(self, file: str, data: dict[str, Any], path: str, base_dir: Path) -> None:
        self.file = file
        self.data = data
        self.path = path
        self.base_dir = base_dir  # relative file names are relative to the config file

    def key_path(self, key: str) -> str:
        """`accounts[2].manager`: the key's full path, as messages name it."""
        return _join(self.path, key)

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key_path(key) if key else self.path, problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str) -> Reader:
        return Reader(self.file, self.data.get(key, {}), self.key_path(key), self.base_dir)

    def tables(self, key: str) -> list[Reader]:
        here = self.key_path(key)
        return [
            Reader(self.file, item, f"{here}[{index}]", self.base_dir)
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

    def text(self, key: str, default: _Default = _REQUIRED) -> str | _Default:
        if self._defaulted(key, default):
            return default
        value: str = self._value(key, default, (str,), "a string")
        if value == "":
            raise self.error(key, "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value: bool = self._value(key, default, (bool,), "true or false")
        return value

    def integer(self, key: str, default: Any, minimum: int, maximum: int | None = None) -> int:
        value: int = self._value(key, default, (int,), "an integer")
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

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
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

    def day(self, key: str) -> date:
        return self._date(key, self._value(key, _REQUIRED, (date, str), "a date like 2026-12-24"))

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

    def timezone(self, key: str, default: _Default = _REQUIRED) -> str | _Default:
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


def is_address(text: str) -> bool:
    """`alice@rouge.example`: one address, without a display name or brackets."""
    return _ADDRESS.fullmatch(text) is not None


def is_domain_name(text: str) -> bool:
    return _DOMAIN.fullmatch(text) is not None


# ---------------------------------------------------------------- reading the file


def read_config_file(path: Path) -> Reader:
    """The file's top-level table, with every key known; a problem raises one ConfigError."""
    file = str(path)
    data = _read_toml(path, file)
    _check_keys(file, data, SCHEMA, "")
    return Reader(file, data, "", path.parent)


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
