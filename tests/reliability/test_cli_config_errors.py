"""A broken configuration, through the real command line: one line on stderr naming the
file and the key, exit status 2, and nothing runs (no database is even created)."""

from __future__ import annotations

import pytest

from mailwatch.cli import main

SECRET = "Pa55-never-echo-this"
GOOD = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"

[database]
url = "sqlite:///{db}"

[sync]
batch_size = 200

[[mailboxes]]
name = "alice"
host = "imap.rouge.example"
username = "alice@rouge.example"
password_env = "MAILWATCH_ALICE_PASSWORD"
timeout = 60

[[staff]]
email = "alice@rouge.example"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"

[smtp]
host = "smtp.rouge.example"
sender = "mailwatch <mailwatch@rouge.example>"
"""


def edit(old: str, new: str):
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return apply


def append(extra: str):
    return lambda text: text + extra


# (what is broken, how, the key the line names, the command run)
CASES = [
    ("agency without a name", edit('name = "Rouge"\n', ""), "agency.name", "report"),
    ("unknown timezone", edit('"Europe/London"', '"Mars/Olympus"'), "agency.timezone", "status"),
    ("unknown key", append("\n[health]\ncolour = 1\n"), "health.colour", "check"),
    ("misspelt table", append("\n[nudge]\nreminder = 1\n"), "nudge", "poll"),
    (
        "mailbox without a host",
        edit('host = "imap.rouge.example"\n', ""),
        "mailboxes[0].host",
        "poll",
    ),
    (
        "port out of range",
        edit("timeout = 60", "timeout = 60\nport = 70000"),
        "mailboxes[0].port",
        "check",
    ),
    (
        "unknown security",
        edit("timeout = 60", 'timeout = 60\nsecurity = "tls-ish"'),
        "mailboxes[0].security",
        "poll",
    ),
    (
        "no TLS to a remote host",
        edit("timeout = 60", 'timeout = 60\nsecurity = "none"'),
        "mailboxes[0].security",
        "check",
    ),
    (
        "a password in the file",
        edit("timeout = 60", f'timeout = 60\npassword = "{SECRET}"'),
        "mailboxes[0].password",
        "poll",
    ),
    (
        "two secret sources",
        edit("timeout = 60", 'timeout = 60\npassword_file = "x"'),
        "mailboxes[0].password_file",
        "poll",
    ),
    (
        "a password pasted as an env name",
        edit('"MAILWATCH_ALICE_PASSWORD"', f'"{SECRET}"'),
        "mailboxes[0].password_env",
        "check",
    ),
    ("zero timeout", edit("timeout = 60", "timeout = 0"), "mailboxes[0].timeout", "poll"),
    (
        "timeout as text",
        edit("timeout = 60", 'timeout = "1 minute"'),
        "mailboxes[0].timeout",
        "poll",
    ),
    (
        "bad poll interval",
        edit("timeout = 60", 'timeout = 60\npoll_interval = "soon"'),
        "mailboxes[0].poll_interval",
        "report",
    ),
    (
        "missing ca_file",
        edit("timeout = 60", 'timeout = 60\nca_file = "/nonexistent/ca.pem"'),
        "mailboxes[0].ca_file",
        "check",
    ),
    (
        "two mailboxes with one name",
        append(
            '\n[[mailboxes]]\nname = "alice"\nhost = "h.example"\nusername = "b"\npassword_env = "B"\n'
        ),
        "mailboxes[1].name",
        "poll",
    ),
    ("zero batch size", edit("batch_size = 200", "batch_size = 0"), "sync.batch_size", "poll"),
    (
        "waive keyword with a space",
        edit("batch_size = 200", 'batch_size = 200\nwaive_keyword = "no reply"'),
        "sync.waive_keyword",
        "poll",
    ),
    ("not a database URL", edit('url = "sqlite:///', 'url = "nonsense:'), "database.url", "report"),
    (
        "manager who is not staff",
        edit('manager = "alice@rouge.example"', 'manager = "carol@elsewhere.example"'),
        "accounts[0].manager",
        "status",
    ),
    (
        "a client as head of client management",
        edit(
            'timezone = "Europe/London"\n',
            'timezone = "Europe/London"\nhead_of_client_management = ["jane@acme.example"]\n',
        ),
        "agency.head_of_client_management[0]",
        "digest",
    ),
    (
        "a public mailbox as head of client management",
        edit(
            'timezone = "Europe/London"\n',
            'timezone = "Europe/London"\n'
            'head_of_client_management = ["head@rouge.example", "boss@gmail.com"]\n',
        ),
        "agency.head_of_client_management[1]",
        "check",
    ),
    (
        "tier target not a duration",
        append('\n[[sla.tiers]]\nname = "critical"\ntarget = "soon"\n'),
        "sla.tiers[0].target",
        "report",
    ),
    (
        "smtp sender not an address",
        edit('sender = "mailwatch <mailwatch@rouge.example>"', 'sender = "nobody"'),
        "smtp.sender",
        "nudge",
    ),
    (
        "smtp login without a secret",
        append('username = "mailwatch@rouge.example"\n'),
        "smtp.username",
        "nudge",
    ),
    (
        "health ping not http",
        append('\n[health]\nping_url = "ftp://ping.example"\n'),
        "health.ping_url",
        "check",
    ),
    (
        "digest weekday unknown",
        append('\n[digests]\nweekday = "funday"\n'),
        "digests.weekday",
        "digest",
    ),
    ("TOML syntax error", append("\n[agency\n"), "line ", "report"),
]


@pytest.mark.parametrize(
    ("broken", "key", "command"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_broken_config_gives_one_line_naming_file_and_key_exit_2_and_nothing_runs(
    tmp_path, capsys, broken, key, command
):
    db = tmp_path / "mailwatch.db"
    config = tmp_path / "mailwatch.toml"
    config.write_text(broken(GOOD.format(db=db)))

    code = main(["--config", str(config), command])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"mailwatch: {config}: ")
    assert key in line
    assert SECRET not in line
    assert not db.exists()


def test_a_file_that_is_not_utf8_names_the_file(tmp_path, capsys):
    config = tmp_path / "mailwatch.toml"
    config.write_bytes(b'[agency]\nname = "R\xe9n\xe9"\n')
    assert main(["--config", str(config), "report"]) == 2
    assert capsys.readouterr().err == f"mailwatch: {config}: not UTF-8 text\n"


def test_a_missing_file_names_the_file(tmp_path, capsys):
    config = tmp_path / "absent.toml"
    assert main(["--config", str(config), "poll"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mailwatch: {config}: cannot read the file")
