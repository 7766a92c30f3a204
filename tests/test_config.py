"""The configuration file: what loads, what is refused, and that secrets stay secret."""

from __future__ import annotations

import copy
import json
import logging
import time as clock
import tomllib
from datetime import date, time, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwatch.config import (
    ConfigError,
    DaemonSettings,
    DigestSettings,
    HealthSettings,
    Secret,
    SyncSettings,
    config_path,
    load_settings,
    parse_duration,
    public_mail_domains,
    secrets,
)
from mailwatch.config.reader import SCHEMA
from mailwatch.core.model import BusinessHours, ClockKind, NudgePolicy, Policy

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"
SECRET_VALUE = "Xq7-correct-horse-battery-staple"
FILE_NAME = "rouge-mailwatch.toml"

MINIMAL = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
"""

BASE = (
    MINIMAL
    + """
[[mailboxes]]
name = "alice"
host = "imap.rouge.example"
username = "alice@rouge.example"
password_env = "MAILWATCH_ALICE_PASSWORD"

[[staff]]
email = "alice@rouge.example"
aliases = ["a.smith@rouge.example"]

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
"""
)


def write(directory: Path, text: str, name: str = FILE_NAME) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def load_error(directory: Path, text: str) -> ConfigError:
    path = write(directory, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value


# ---------------------------------------------------------------- what loads


def test_the_example_config_loads_without_its_secrets_in_the_environment(monkeypatch):
    monkeypatch.delenv("MAILWATCH_ALICE_PASSWORD", raising=False)
    monkeypatch.delenv("MAILWATCH_SMTP_PASSWORD", raising=False)
    settings = load_settings(EXAMPLE)
    assert settings.agency_name == "Rouge"
    assert [mailbox.name for mailbox in settings.mailboxes] == ["alice", "bob"]
    assert [account.name for account in settings.policy.accounts] == [
        "Acme Ltd",
        "Globex Corporation",
    ]
    assert settings.policy.tiers[0].name == "critical"
    assert settings.policy.tiers[0].target == timedelta(hours=1)
    assert settings.smtp is not None and settings.smtp.port == 587
    with pytest.raises(ConfigError) as caught:
        settings.mailboxes[0].password.reveal()
    assert str(caught.value) == (
        f"{EXAMPLE}: mailboxes[0].password_env: "
        "environment variable MAILWATCH_ALICE_PASSWORD is not set"
    )


def _leaf_keys(schema: dict, path: str = "") -> list[str]:
    keys = []
    for key, expected in schema.items():
        if isinstance(expected, dict):
            keys += _leaf_keys(expected, f"{path}{key}.")
        elif isinstance(expected, list):
            keys += _leaf_keys(expected[0], f"{path}{key}[].")
        else:
            keys.append(f"{path}{key}")
    return keys


def test_the_example_config_shows_every_key_with_a_comment_over_it():
    lines = EXAMPLE.read_text().splitlines()
    for dotted in _leaf_keys(SCHEMA):
        name = dotted.rsplit(".", 1)[-1]
        shown = [i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{name} =")]
        assert shown, f"{dotted} is missing from config.example.toml"
        assert any(lines[i - 1].startswith("#") for i in shown), f"{dotted} has no comment"


def test_a_file_with_only_the_agency_gets_every_default(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.database_url == "sqlite:///mailwatch.db"
    assert settings.retention_days == 400
    assert settings.mailboxes == ()
    assert settings.smtp is None
    assert settings.sync == SyncSettings(90, "$NoReplyNeeded", "No reply needed", 200)
    assert settings.digests == DigestSettings(True, 0, time(8, 0), True, True)
    assert settings.daemon == DaemonSettings(timedelta(minutes=5))
    assert settings.health == HealthSettings(None, timedelta(minutes=30))
    policy = settings.policy
    assert policy.target == timedelta(hours=24)
    assert policy.clock is ClockKind.CALENDAR
    assert policy.request_expiry == timedelta(days=14)
    assert policy.subject_window == timedelta(days=14)
    assert policy.generic_subjects == Policy().generic_subjects
    assert policy.nudges == NudgePolicy()
    assert policy.business_hours == BusinessHours(timezone="Europe/London")


def test_a_mailbox_gets_its_defaults(tmp_path):
    (mailbox,) = load_settings(write(tmp_path, BASE)).mailboxes
    assert (mailbox.port, mailbox.security, mailbox.idle) == (993, "ssl", True)
    assert mailbox.poll_interval == timedelta(minutes=2)
    assert mailbox.timeout == 60.0
    assert mailbox.folders is None


def test_an_account_inherits_the_hours_it_leaves_out_holidays_and_closures_included(tmp_path):
    text = BASE.replace(
        'manager = "alice@rouge.example"',
        'manager = "alice@rouge.example"\n'
        'business_hours = { timezone = "America/New_York", end = "17:00" }',
    )
    text += """
[sla.business_hours]
days = ["mon", "tue", "wed", "thu"]
start = "08:30"
end = "17:30"
holidays = "GB-ENG"
closed = [2026-12-24]
"""
    policy = load_settings(write(tmp_path, text)).policy
    agency = policy.business_hours
    account = policy.accounts[0].business_hours
    assert account.timezone == "America/New_York"
    assert account.end == time(17, 0)
    assert account.start == time(8, 30)
    assert account.days == (0, 1, 2, 3)
    assert account.holidays is agency.holidays
    assert account.closed == frozenset({date(2026, 12, 24)})
    assert date(2026, 8, 31) in account.holidays  # England's summer bank holiday


def test_an_account_without_business_hours_keeps_none_so_the_agencys_apply(tmp_path):
    assert load_settings(write(tmp_path, BASE)).policy.accounts[0].business_hours is None


def test_business_hours_default_to_the_agency_timezone_and_take_holidays_by_region(tmp_path):
    text = MINIMAL + '[sla.business_hours]\nholidays = "gb-sct"\n'
    hours = load_settings(write(tmp_path, text)).policy.business_hours
    assert hours.timezone == "Europe/London"
    assert date(2026, 8, 3) in hours.holidays  # Scotland's summer bank holiday
    assert date(2026, 8, 31) not in hours.holidays


def test_addresses_and_domains_are_lower_cased_and_an_alias_manager_means_its_person(tmp_path):
    text = BASE.replace('"acme.example"', '"ACME.example"').replace(
        'manager = "alice@rouge.example"', 'manager = "A.Smith@Rouge.example"'
    )
    text = text.replace('email = "alice@rouge.example"', 'email = "Alice@Rouge.example"')
    policy = load_settings(write(tmp_path, text)).policy
    assert policy.staff[0].email == "alice@rouge.example"
    assert policy.accounts[0].domains == ("acme.example",)
    assert policy.accounts[0].manager == "alice@rouge.example"


def test_an_address_under_an_agency_domain_is_staff_without_being_listed(tmp_path):
    text = BASE.replace('manager = "alice@rouge.example"', 'manager = "dave@rouge.example"')
    assert load_settings(write(tmp_path, text)).policy.accounts[0].manager == "dave@rouge.example"


def test_nudge_stages_accept_percentages_and_replace_the_default_ladder(tmp_path):
    text = (
        MINIMAL
        + """
[nudges]
max_lateness = "30m"
[[nudges.stages]]
name = "heads-up"
at = "50%"
notify = ["manager"]
[[nudges.stages]]
name = "breach"
at = 1
notify = ["manager", "head"]
[nudges.quiet_hours]
start = "21:00"
end = "07:30"
weekends = false
"""
    )
    nudges = load_settings(write(tmp_path, text)).policy.nudges
    assert [(stage.name, stage.at) for stage in nudges.stages] == [
        ("heads-up", 0.5),
        ("breach", 1.0),
    ]
    assert nudges.stages[1].notify == ("manager", "head")
    assert (nudges.quiet_start, nudges.quiet_end) == (time(21, 0), time(7, 30))
    assert nudges.quiet_weekends is False
    assert nudges.max_lateness == timedelta(minutes=30)


def test_digest_weekday_and_time_are_read(tmp_path):
    text = MINIMAL + '[digests]\nweekday = "Friday"\ntime = "16:45"\nquarterly = false\n'
    digests = load_settings(write(tmp_path, text)).digests
    assert (digests.weekday, digests.at, digests.quarterly) == (4, time(16, 45), False)


# ---------------------------------------------------------------- what is refused


def _replace(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new)


MAILBOX_SECRET = 'password_env = "MAILWATCH_ALICE_PASSWORD"'


def in_mailbox(line: str) -> str:
    return _replace(MAILBOX_SECRET, f"{MAILBOX_SECRET}\n{line}")


MANAGER = 'manager = "alice@rouge.example"'
BROKEN = [
    # (what is wrong, the file, the key path, a piece of the problem)
    ("toml syntax", MINIMAL + "[sla]\ntarget = = 3\n", "line 7", "invalid TOML"),
    (
        "typo in a key",
        _replace("password_env", "pasword_env"),
        "mailboxes[0].pasword_env",
        "did you mean 'password_env'?",
    ),
    ("typo in a table", MINIMAL + "[databse]\n", "databse", "did you mean 'database'?"),
    ("unknown key", MINIMAL + "[sync]\nfrobnicate = 1\n", "sync.frobnicate", "unknown key"),
    ("a value where a table belongs", 'agency = "Rouge"\n', "agency", "expected a table"),
    ("missing agency name", _replace('name = "Rouge"\n', ""), "agency.name", "missing"),
    (
        "missing timezone",
        _replace('timezone = "Europe/London"\n', ""),
        "agency.timezone",
        "missing",
    ),
    (
        "missing mailbox host",
        _replace('host = "imap.rouge.example"\n', ""),
        "mailboxes[0].host",
        "missing",
    ),
    ("port as a string", in_mailbox('port = "993"'), "mailboxes[0].port", "expected an integer"),
    ("port out of range", in_mailbox("port = 70000"), "mailboxes[0].port", "out of range"),
    (
        "idle not a boolean",
        in_mailbox('idle = "yes"'),
        "mailboxes[0].idle",
        "expected true or false",
    ),
    ("bad duration", MINIMAL + '[sla]\ntarget = "24 hours"\n', "sla.target", "expected a duration"),
    ("zero duration", MINIMAL + '[sla]\ntarget = "0h"\n', "sla.target", "longer than 0"),
    (
        "bad poll interval",
        in_mailbox('poll_interval = "2 min"'),
        "mailboxes[0].poll_interval",
        "expected a duration",
    ),
    (
        "bad HH:MM",
        MINIMAL + '[sla.business_hours]\nstart = "9am"\n',
        "sla.business_hours.start",
        '"HH:MM"',
    ),
    (
        "hour 24",
        MINIMAL + '[nudges.quiet_hours]\nend = "24:00"\n',
        "nudges.quiet_hours.end",
        '"HH:MM"',
    ),
    (
        "hours end before start",
        MINIMAL + '[sla.business_hours]\nstart = "18:00"\nend = "09:00"\n',
        "sla.business_hours.end",
        "before they start",
    ),
    (
        "account hours end before the inherited start",
        _replace(MANAGER, MANAGER + '\nbusiness_hours = { end = "08:00" }'),
        "accounts[0].business_hours.end",
        "before they start",
    ),
    (
        "unknown timezone",
        _replace("Europe/London", "Europe/Londres"),
        "agency.timezone",
        "unknown timezone",
    ),
    (
        "unknown staff timezone",
        BASE.replace(
            'aliases = ["a.smith@rouge.example"]',
            'aliases = ["a.smith@rouge.example"]\ntimezone = "Mars/Olympus"',
        ),
        "staff[0].timezone",
        "unknown timezone",
    ),
    (
        "invalid regex",
        MINIMAL + '[[sla.tiers]]\nname = "critical"\ntarget = "1h"\nsubject = ["ok", "(down"]\n',
        "sla.tiers[0].subject[1]",
        "invalid regular expression",
    ),
    (
        "a tier that matches nothing",
        MINIMAL + '[[sla.tiers]]\nname = "x"\ntarget = "1h"\n',
        "sla.tiers[0]",
        "needs subject patterns",
    ),
    (
        "unknown weekday",
        MINIMAL + '[sla.business_hours]\ndays = ["mon", "funday"]\n',
        "sla.business_hours.days[1]",
        "unknown weekday",
    ),
    (
        "unknown digest weekday",
        MINIMAL + '[digests]\nweekday = "someday"\n',
        "digests.weekday",
        "unknown weekday",
    ),
    (
        "manager not staff",
        _replace(MANAGER, 'manager = "carol@acme.example"'),
        "accounts[0].manager",
        "not a staff address: carol@acme.example",
    ),
    (
        "backup not staff",
        BASE + 'backups = ["alice@rouge.example", "eve@elsewhere.example"]\n',
        "accounts[0].backups[1]",
        "not a staff address",
    ),
    (
        "leave for someone not staff",
        BASE + '[[leave]]\nwho = "carol@acme.example"\nstart = 2026-12-21\nend = 2027-01-02\n',
        "leave[0].who",
        "not a staff address",
    ),
    (
        "leave ending before it starts",
        BASE + '[[leave]]\nwho = "alice@rouge.example"\nstart = 2026-12-21\nend = 2026-12-20\n',
        "leave[0].end",
        "before it starts",
    ),
    (
        "leave as a date-time",
        BASE + '[[leave]]\nwho = "alice@rouge.example"\nstart = 2026-12-21T09:00:00Z\n'
        "end = 2026-12-22\n",
        "leave[0].start",
        "expected a date",
    ),
    (
        "a domain in two accounts",
        BASE + '[[accounts]]\nname = "Acme Two"\ndomains = ["acme.example"]\n',
        "accounts[1].domains[0]",
        "already a domain of account 'Acme Ltd'",
    ),
    (
        "two accounts with one name",
        BASE + '[[accounts]]\nname = "Acme Ltd"\ndomains = ["b.example"]\n',
        "accounts[1].name",
        "two accounts",
    ),
    (
        "an address both staff and client",
        BASE + 'addresses = ["A.Smith@rouge.example"]\n',
        "accounts[0].addresses[0]",
        "listed as staff",
    ),
    (
        "a public domain in an account",
        _replace('["acme.example"]', '["acme.example", "gmail.com"]'),
        "accounts[0].domains[1]",
        "public mail provider",
    ),
    (
        "a public domain in the agency",
        _replace('["rouge.example"]', '["rouge.example", "Outlook.com"]'),
        "agency.domains[1]",
        "public mail provider",
    ),
    (
        "an agency domain in an account",
        _replace('["acme.example"]', '["rouge.example"]'),
        "accounts[0].domains[0]",
        "agency domain",
    ),
    (
        "an account matching nobody",
        MINIMAL + '[[accounts]]\nname = "Nobody"\n',
        "accounts[0]",
        "needs domains or addresses",
    ),
    (
        "a password in the file",
        _replace(MAILBOX_SECRET, f'password = "{SECRET_VALUE}"'),
        "mailboxes[0].password",
        "secrets are never written in the file",
    ),
    (
        "a token in the file",
        MINIMAL + f'[smtp]\noauth2_token = "{SECRET_VALUE}"\n',
        "smtp.oauth2_token",
        "secrets are never written in the file",
    ),
    (
        "a secret anywhere",
        MINIMAL + f'[database]\nsecret = "{SECRET_VALUE}"\n',
        "database.secret",
        "secrets are never written in the file",
    ),
    (
        "a password pasted as the variable name",
        _replace(MAILBOX_SECRET, f'password_env = "{SECRET_VALUE}"'),
        "mailboxes[0].password_env",
        "not an environment variable name",
    ),
    (
        "two secret sources",
        BASE.replace(MAILBOX_SECRET, MAILBOX_SECRET + '\npassword_command = "pass show alice"'),
        "mailboxes[0].password_command",
        "two secret sources",
    ),
    ("a mailbox without a secret", _replace(MAILBOX_SECRET, ""), "mailboxes[0]", "no secret"),
    (
        "an unsplittable command",
        _replace(MAILBOX_SECRET, 'password_command = "pass \'show"'),
        "mailboxes[0].password_command",
        "cannot split the command",
    ),
    (
        "smtp in clear off loopback",
        MINIMAL
        + '[smtp]\nhost = "smtp.rouge.example"\nsecurity = "none"\nsender = "m@rouge.example"\n',
        "smtp.security",
        "only for a loopback host",
    ),
    (
        "imap in clear off loopback",
        in_mailbox('security = "none"'),
        "mailboxes[0].security",
        "only for a loopback host",
    ),
    (
        "unknown security",
        in_mailbox('security = "tls"'),
        "mailboxes[0].security",
        "expected one of ssl, starttls, none",
    ),
    (
        "smtp login without a secret",
        MINIMAL + '[smtp]\nhost = "smtp.rouge.example"\nusername = "mw@rouge.example"\n'
        'sender = "m@rouge.example"\n',
        "smtp.username",
        "no secret",
    ),
    (
        "smtp sender not an address",
        MINIMAL + '[smtp]\nhost = "smtp.rouge.example"\nsender = "Mailwatch"\n',
        "smtp.sender",
        "expected",
    ),
    (
        "duplicate mailbox names",
        BASE + '[[mailboxes]]\nname = "alice"\nhost = "h.example"\n'
        'username = "u"\npassword_env = "X"\n',
        "mailboxes[1].name",
        "two mailboxes",
    ),
    (
        "missing ca file",
        in_mailbox('ca_file = "no-such-ca.pem"'),
        "mailboxes[0].ca_file",
        "no such file",
    ),
    (
        "bad database url",
        MINIMAL + '[database]\nurl = "not a url"\n',
        "database.url",
        "not a database URL",
    ),
    (
        "unknown holidays region",
        MINIMAL + '[sla.business_hours]\nholidays = "GB-XYZ"\n',
        "sla.business_hours.holidays",
        "unknown country or subdivision",
    ),
    (
        "a stage at no fraction",
        MINIMAL + '[[nudges.stages]]\nname = "r"\nat = "75 percent"\nnotify = ["manager"]\n',
        "nudges.stages[0].at",
        "fraction",
    ),
    (
        "a stage for the ceo",
        MINIMAL + '[[nudges.stages]]\nname = "r"\nat = 0.5\nnotify = ["ceo"]\n',
        "nudges.stages[0].notify[0]",
        "expected manager, backups or head",
    ),
    (
        "stages out of order",
        MINIMAL + '[[nudges.stages]]\nname = "a"\nat = 0.9\nnotify = ["head"]\n'
        '[[nudges.stages]]\nname = "b"\nat = 0.5\nnotify = ["head"]\n',
        "nudges.stages[1].at",
        "rising order",
    ),
    (
        "a critical tier that does not exist",
        MINIMAL + '[nudges]\ncritical_tiers = ["urgent"]\n',
        "nudges.critical_tiers[0]",
        "no [[sla.tiers]] named 'urgent'",
    ),
    (
        "negative history",
        MINIMAL + "[sync]\nhistory_days = -1\n",
        "sync.history_days",
        "out of range",
    ),
    (
        "a waive keyword with a space",
        MINIMAL + '[sync]\nwaive_keyword = "No reply"\n',
        "sync.waive_keyword",
        "not an IMAP keyword",
    ),
    (
        "a ping url that is not http",
        MINIMAL + '[health]\nping_url = "ftp://hc.example/x"\n',
        "health.ping_url",
        "http",
    ),
    (
        "a staff member listed twice",
        BASE + '[[staff]]\nemail = "a.smith@rouge.example"\n',
        "staff[1].email",
        "already listed in staff[0]",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_a_broken_config_is_refused_in_one_line_naming_the_file_and_the_key(
    tmp_path, text, key, problem
):
    error = load_error(tmp_path, text)
    message = str(error)
    assert error.key == key
    assert message.startswith(f"{tmp_path / FILE_NAME}: {key}: ")
    assert FILE_NAME in message
    assert problem in error.problem
    assert "\n" not in message
    assert SECRET_VALUE not in message


def test_a_syntax_error_names_its_line_and_column(tmp_path):
    error = load_error(tmp_path, '[agency]\nname = "Rouge"\ntimezone = Europe/London\n')
    assert error.key == "line 3"
    assert "(column 12)" in error.problem


def test_a_missing_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml")
    assert str(caught.value).startswith(f"{tmp_path / 'absent.toml'}: cannot read the file")


def test_a_database_url_with_a_password_is_never_repeated_in_the_error(tmp_path):
    text = MINIMAL + f'[database]\nurl = "postgresql://mw:{SECRET_VALUE}@db:notaport/mw"\n'
    error = load_error(tmp_path, text)
    assert error.key == "database.url"
    assert SECRET_VALUE not in str(error)


# ---------------------------------------------------------------- any file at all


def _toml(value: object) -> str:
    """Just enough TOML writing for the property test: everything inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # nan, inf and -inf are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    items = (f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items())
    return "{" + ", ".join(items) + "}"


def _leaf_paths(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _leaf_paths(item, (*path, key))]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [p for index, item in enumerate(value) for p in _leaf_paths(item, (*path, index))]
    return [path]


EXAMPLE_DATA = tomllib.loads(EXAMPLE.read_text())
# Every value, table and array of the example, as a path of keys and indexes.
EXAMPLE_PATHS = sorted(
    {leaf[:end] for leaf in _leaf_paths(EXAMPLE_DATA) for end in range(1, len(leaf) + 1)}, key=str
)
TOML_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | TOML_TEXT
    | st.sampled_from(["", "24h", "0m", "09:00", "25:00", "mon", "GB-ENG", "x@y.example"])
    | st.dates(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TOML_TEXT, children, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(EXAMPLE_PATHS), value=st.none() | TOML_VALUES)
def test_any_value_in_any_key_loads_or_raises_only_a_config_error(tmp_path_factory, where, value):
    data = copy.deepcopy(EXAMPLE_DATA)
    target = data
    for step in where[:-1]:
        target = target[step]
    if value is None:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    text = "\n".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in data.items())
    path = write(tmp_path_factory.mktemp("any"), text)
    try:
        load_settings(path)
    except ConfigError as error:
        assert "\n" not in str(error)


# ---------------------------------------------------------------- secrets


def _mailbox_with(tmp_path: Path, secret_line: str) -> Secret:
    path = write(tmp_path, _replace(MAILBOX_SECRET, secret_line))
    return load_settings(path).mailboxes[0].password


def test_a_secret_is_read_from_the_environment_only_when_revealed(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILWATCH_ALICE_PASSWORD", raising=False)
    secret = load_settings(write(tmp_path, BASE)).mailboxes[0].password
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", SECRET_VALUE)
    assert secret.reveal() == SECRET_VALUE


def test_a_secret_never_shows_its_value_in_repr_or_str(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILWATCH_ALICE_PASSWORD", SECRET_VALUE)
    settings = load_settings(write(tmp_path, BASE))
    secret = settings.mailboxes[0].password
    assert secret.reveal() == SECRET_VALUE
    assert repr(secret) == "Secret(source='env MAILWATCH_ALICE_PASSWORD')"
    assert str(secret) == "env MAILWATCH_ALICE_PASSWORD"
    assert SECRET_VALUE not in repr(settings)


def test_a_password_file_is_relative_to_the_config_and_its_trailing_newline_dropped(tmp_path):
    (tmp_path / "alice.secret").write_text(SECRET_VALUE + "\n")
    secret = _mailbox_with(tmp_path, 'password_file = "alice.secret"')
    assert secret.source == f"file {tmp_path / 'alice.secret'}"
    assert secret.reveal() == SECRET_VALUE


def test_an_unreadable_password_file_names_the_key(tmp_path):
    secret = _mailbox_with(tmp_path, 'password_file = "/nonexistent/alice"')
    with pytest.raises(ConfigError) as caught:
        secret.reveal()
    assert caught.value.key == "mailboxes[0].password_file"
    assert "cannot read /nonexistent/alice" in str(caught.value)


def test_a_password_command_runs_without_a_shell(tmp_path):
    secret = _mailbox_with(tmp_path, "password_command = 'echo $HOME; id > pwned'")
    assert secret.reveal() == "$HOME; id > pwned"
    assert not (tmp_path / "pwned").exists()


def test_a_password_command_gives_its_first_line(tmp_path):
    script = tmp_path / "pass"
    script.write_text(f"#!/bin/sh\nprintf '%s\\nurl: https://x\\n' '{SECRET_VALUE}'\n")
    script.chmod(0o700)
    assert _mailbox_with(tmp_path, f'password_command = "{script} show alice"').reveal() == (
        SECRET_VALUE
    )


@pytest.mark.parametrize(
    "command",
    ["sleep 30", "sh -c 'sleep 30 & sleep 30'"],
    ids=["the command", "a grandchild holding its output"],
)
def test_a_password_command_that_hangs_is_killed_at_the_timeout(tmp_path, monkeypatch, command):
    monkeypatch.setattr(secrets, "SECRET_COMMAND_TIMEOUT", 0.5)
    secret = _mailbox_with(tmp_path, f'password_command = "{command}"')
    started = clock.monotonic()
    with pytest.raises(ConfigError) as caught:
        secret.reveal()
    assert clock.monotonic() - started < 5
    assert caught.value.key == "mailboxes[0].password_command"
    assert "timed out after 0.5 s" in caught.value.problem


def test_a_failing_command_never_shows_its_output_or_its_stderr(tmp_path, caplog):
    script = tmp_path / "leaky"
    script.write_text(f"#!/bin/sh\necho '{SECRET_VALUE}'\necho '{SECRET_VALUE}' >&2\nexit 3\n")
    script.chmod(0o700)
    secret = _mailbox_with(tmp_path, f'password_command = "{script}"')
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ConfigError) as caught:
            secret.reveal()
    assert str(caught.value) == (
        f"{tmp_path / FILE_NAME}: mailboxes[0].password_command: "
        f"command failed with exit status 3: {script}"
    )
    assert SECRET_VALUE not in caplog.text


def test_a_missing_command_is_a_config_error(tmp_path):
    secret = _mailbox_with(tmp_path, 'password_command = "no-such-helper-mailwatch show x"')
    with pytest.raises(ConfigError) as caught:
        secret.reveal()
    assert caught.value.problem == (
        "cannot run no-such-helper-mailwatch: No such file or directory"
    )


def test_an_oauth2_token_command_is_the_token_not_the_password(tmp_path):
    path = write(tmp_path, _replace(MAILBOX_SECRET, "oauth2_token_command = 'echo token-1'"))
    mailbox = load_settings(path).mailboxes[0]
    assert mailbox.password is None
    assert mailbox.oauth2_token.reveal() == "token-1"


def test_a_config_that_runs_commands_warns_when_others_can_read_it(tmp_path, caplog):
    path = write(tmp_path, _replace(MAILBOX_SECRET, "password_command = 'pass show alice'"))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mailwatch.config"):
        load_settings(path)
    assert [record.name for record in caplog.records] == ["mailwatch.config"]
    assert "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    load_settings(path)
    assert caplog.records == []


def test_a_readable_config_without_commands_does_not_warn(tmp_path, caplog):
    path = write(tmp_path, BASE)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mailwatch.config"):
        load_settings(path)
    assert caplog.records == []


# ---------------------------------------------------------------- small parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("8h30m", timedelta(hours=8, minutes=30)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("45s", timedelta(seconds=45)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_durations_are_parsed(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "30m8h", "1.5h", "24 h", "-2h", "2w", "24H"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_config_path_is_the_option_then_the_environment_then_the_working_directory(
    monkeypatch,
):
    monkeypatch.setenv("MAILWATCH_CONFIG", "/etc/mailwatch/mailwatch.toml")
    assert config_path("/tmp/x.toml") == Path("/tmp/x.toml")
    assert config_path(None) == Path("/etc/mailwatch/mailwatch.toml")
    monkeypatch.delenv("MAILWATCH_CONFIG")
    assert config_path(None) == Path("mailwatch.toml")


def test_the_public_mail_domain_list_holds_the_large_providers():
    domains = public_mail_domains()
    assert {"gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com"} <= domains
    assert 60 <= len(domains) <= 120
    assert all(domain == domain.strip().lower() and "." in domain for domain in domains)


def test_the_config_error_keeps_its_parts():
    error = ConfigError("m.toml", "accounts[2].manager", "not a staff address")
    assert (error.file, error.key, error.problem) == (
        "m.toml",
        "accounts[2].manager",
        "not a staff address",
    )
    assert str(error) == "m.toml: accounts[2].manager: not a staff address"
