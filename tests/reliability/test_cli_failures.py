"""Every failure is one line: each command, with each broken database and each broken file
argument, ends with one line on stderr naming what is wrong and what to do (never a
traceback, never a password), and exit status 2 where only the operator can fix it (the
systemd unit stops restarting on 2) or 1 where trying again may help."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailwatch.cli import main
from mailwatch.config import load_settings
from mailwatch.store.repository import Store

PASSWORD = "Db-pa55-never-shown"
NOBODY = 65534
CONFIG = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"

[database]
url = "{url}"

[[mailboxes]]
name = "alice"
host = "imap.rouge.example"
username = "alice@rouge.example"
password_env = "MAILWATCH_ALICE_PASSWORD"

[[mailboxes]]
name = "bob"
host = "imap.rouge.example"
username = "bob@rouge.example"
password_env = "MAILWATCH_BOB_PASSWORD"

[[staff]]
email = "alice@rouge.example"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
"""
MAIL = "From: Jane <jane@acme.example>\nTo: alice@rouge.example\nSubject: Hi\n\nHello.\n"

# Every command that opens the database, with arguments that are fine.
COMMANDS = [
    ["poll"],
    ["import", "{dir}/mail.eml"],
    ["status"],
    ["report"],
    ["waive", "<a@acme.example>"],
    ["explain", "<a@acme.example>"],
    ["nudge", "--dry-run"],
    ["digest", "--dry-run"],
    ["run"],
    ["health"],
    ["retention"],
    ["export", "jane@acme.example"],
    ["forget", "jane@acme.example", "--yes"],
    ["backup", "{dir}/backup.db"],
    ["migrate"],
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_at(postgres_url: str, user: str, database: str) -> str:
    server = make_url(postgres_url)
    return f"postgresql+psycopg://{user}:{PASSWORD}@{server.host}:{server.port}/{database}"


def newer_schema(directory: Path) -> str:
    url = f"sqlite:///{directory}/newer.db"
    store = Store(url)
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d_from_the_future'"))
    store.close()
    return url


def not_a_database(directory: Path) -> str:
    (directory / "notes.db").write_text("shopping list\n")
    return f"sqlite:///{directory}/notes.db"


# (the broken database, its URL, the exit status, what the line says)
DATABASES = [
    (
        "a missing directory",
        lambda d, pg: f"sqlite:///{d}/absent/mailwatch.db",
        2,
        "does not exist",
    ),
    (
        "a file that is not a database",
        lambda d, pg: not_a_database(d),
        2,
        "is not an SQLite database",
    ),
    (
        "an unknown dialect",
        lambda d, pg: f"mysql://mailwatch:{PASSWORD}@db.example/mw",
        2,
        "unsupported database 'mysql'",
    ),
    (
        "an unreachable server",
        lambda d, pg: f"postgresql+psycopg://mw:{PASSWORD}@127.0.0.1:{closed_port()}/mw",
        1,
        "cannot reach the server",
    ),
    (
        "a server that refuses the role",
        lambda d, pg: postgres_at(pg(), "nosuchrole", "postgres"),
        2,
        'role "nosuchrole"',
    ),
    (
        "a server without the database",
        lambda d, pg: postgres_at(pg(), "postgres", "nosuchdb"),
        2,
        'database "nosuchdb"',
    ),
    ("a schema from a newer mailwatch", lambda d, pg: newer_schema(d), 1, "newer mailwatch"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mail.eml").write_text(MAIL)
    return tmp_path


def write_config(directory: Path, url: str) -> Path:
    config = directory / "mailwatch.toml"
    config.write_text(CONFIG.format(url=url))
    return config


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert PASSWORD not in out + err
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("mailwatch: ")
    return line


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize(
    ("make_url_of", "status", "says"), [d[1:] for d in DATABASES], ids=[d[0] for d in DATABASES]
)
def test_a_database_that_cannot_be_used_gives_one_line_naming_it_without_its_password(
    request, workdir, capsys, command, make_url_of, status, says
):
    url = make_url_of(workdir, lambda: request.getfixturevalue("postgres_url"))
    config = write_config(workdir, url)
    argv = [part.format(dir=workdir) for part in command]

    code = main(["--config", str(config), *argv])

    line = one_line(capsys)
    assert code == status, line
    assert says in line
    assert make_url(url).render_as_string(hide_password=True) in line


def test_migrate_refuses_a_schema_from_a_newer_mailwatch_and_leaves_it_as_it_was(workdir, capsys):
    url = newer_schema(workdir)
    config = write_config(workdir, url)

    assert main(["--config", str(config), "migrate"]) == 1
    assert "`mailwatch migrate` cannot take a schema back" in one_line(capsys)
    store = Store(url)
    assert store.unknown_revisions() == {"f00d_from_the_future"}
    store.close()


# (the broken argument, the command, what the line says)
ARGUMENTS = [
    (
        "digest --output onto a file",
        ["digest", "--dry-run", "--output", "{dir}/mail.eml"],
        "is a file, not a folder",
    ),
    (
        "backup into a missing folder",
        ["backup", "{dir}/absent/backup.db"],
        "the folder {dir}/absent does not exist",
    ),
    ("backup onto a folder", ["backup", "{dir}"], "is a folder; name the backup file"),
    (
        "import into a mailbox not configured",
        ["import", "{dir}/mail.eml", "--mailbox", "alcie"],
        "--mailbox alcie: no such mailbox; configured: alice, bob",
    ),
]


@pytest.mark.parametrize(
    ("command", "says"), [a[1:] for a in ARGUMENTS], ids=[a[0] for a in ARGUMENTS]
)
def test_a_file_argument_that_cannot_work_gives_one_line_and_exit_2_before_anything_runs(
    workdir, capsys, command, says
):
    config = write_config(workdir, f"sqlite:///{workdir}/mailwatch.db")
    argv = [part.format(dir=workdir) for part in command]

    code = main(["--config", str(config), *argv])

    line = one_line(capsys)
    assert code == 2, line
    assert says.format(dir=workdir) in line
    assert not (workdir / "mailwatch.db").exists()


# ---------------------------------------------------------------- check


def check(workdir: Path, url: str, capsys) -> tuple[int, list[str]]:
    config = write_config(workdir, url)
    text = (
        CONFIG.format(url=url).split("[[mailboxes]]")[0]
        + "\n[[staff]]"
        + (CONFIG.split("[[staff]]")[1])
    )
    config.write_text(text)  # no mailboxes: only the database is checked
    code = main(["--config", str(config), "check"])
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    return code, out.splitlines()


def test_check_says_the_database_schema_is_current(workdir, capsys):
    url = f"sqlite:///{workdir}/mailwatch.db"
    assert main(["--config", str(write_config(workdir, url)), "migrate"]) == 0
    capsys.readouterr()
    code, lines = check(workdir, url, capsys)
    assert code == 0
    assert f"database {url}: ok, the schema is current" in lines


def test_check_names_an_outdated_schema_and_the_command_that_fixes_it(workdir, capsys):
    url = f"sqlite:///{workdir}/mailwatch.db"
    store = Store(url)
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    store.close()
    code, lines = check(workdir, url, capsys)
    assert code == 1
    (line,) = [line for line in lines if line.startswith("database")]
    assert line.startswith("database: FAILED: ") and "run `mailwatch migrate`" in line


@pytest.mark.parametrize(
    ("make_url_of", "says"),
    [(d[1], d[3]) for d in DATABASES if "server" not in d[0]],
    ids=[d[0] for d in DATABASES if "server" not in d[0]],
)
def test_check_opens_the_database_and_says_in_one_line_why_it_cannot_be_used(
    workdir, capsys, make_url_of, says
):
    code, lines = check(workdir, make_url_of(workdir, None), capsys)
    assert code == 1
    (line,) = [line for line in lines if line.startswith("database")]
    assert line.startswith("database: FAILED: ") and says in line
    assert PASSWORD not in "\n".join(lines)


# ---------------------------------------------------------------- as an ordinary user


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder under /tmp that the unprivileged user `nobody` can enter but not write."""
    directory = Path(tempfile.mkdtemp(prefix="mailwatch-nobody-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def run_as_nobody(*argv: str) -> tuple[int, str]:
    """`mailwatch ARGV` in a forked child that runs as `nobody`: its exit status and stderr.
    Forked, not executed: the interpreter's own files may be out of nobody's reach."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 70
        try:
            os.close(read)
            sys.stderr = open(write, "w", closefd=False)  # noqa: SIM115 (the child exits)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            # What the commands load lazily, loaded while the interpreter's files can be read.
            for module in ("sqlite3", "sqlalchemy.dialects.sqlite", "mailwatch.digests"):
                importlib.import_module(module)
            load_settings(Path(argv[1]))
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            status = main(list(argv))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write)
    with open(read) as pipe:
        err = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), err


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["status"], "permission denied"),
        (["digest", "--dry-run", "--output", "{dir}/digests"], "cannot write there"),
        (["import", "{dir}/private.eml"], "cannot be read"),
    ],
    ids=[
        "a database in a folder it cannot write",
        "digests into such a folder",
        "a file it cannot read",
    ],
)
def test_a_user_without_permission_gets_one_line_and_exit_2(shared_dir, command, says):
    # it runs the command as nobody: `make test` and CI run as root, and anything else must fail
    assert os.geteuid() == 0, "this test runs a command as nobody, which needs root"
    config = shared_dir / "mailwatch.toml"
    config.write_text(CONFIG.format(url=f"sqlite:///{shared_dir}/mailwatch.db"))
    config.chmod(0o644)
    private = shared_dir / "private.eml"
    private.write_text(MAIL)
    private.chmod(0o600)

    code, err = run_as_nobody("--config", str(config), *(p.format(dir=shared_dir) for p in command))

    assert "Traceback" not in err, err
    (line,) = err.splitlines()
    assert code == 2, line
    assert line.startswith("mailwatch: ") and says in line


def test_a_reader_that_stops_reading_ends_the_output_quietly(workdir, monkeypatch, capsys):
    config = write_config(workdir, f"sqlite:///{workdir / 'mw.db'}")
    assert main(["--config", str(config), "import", str(workdir / "mail.eml")]) == 0
    capsys.readouterr()
    read_end, write_end = os.pipe()
    os.close(read_end)  # `mailwatch report | head -0`
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        status = main(["--config", str(config), "report", "--since", "2000-01-01"])
        monkeypatch.undo()
    assert status == 141
    assert capsys.readouterr().err == ""
