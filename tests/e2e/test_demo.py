"""`mailwatch demo`, run in-process in a scratch folder against the real Dovecot.

Without Dovecot the demo exits 1, so the first test fails: it never skips.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from freezegun import freeze_time

from mailwatch import demo, devserver
from mailwatch.cli import main

STATUSES = ("met", "breached", "overdue", "open", "waived")
SERVER_LINE = re.compile(r"Dovecot answers on 127\.0\.0\.1:(\d+) \(scratch folder (\S+)\)")


def emails_in(folder: Path) -> list[Path]:
    return sorted((folder / "demo-run" / "emails").glob("*.html"))


def without_server(output: str) -> str:
    """The demo's output without what differs between any two runs: its port and scratch folder."""
    output = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", output)
    return re.sub(r"/tmp/mailwatch-demo-dovecot-\w+", "SCRATCH", output)


def rerun_dry_nudge(folder: Path, output: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`nudge --dry-run` again, on the database the demo left, at the demo's `--now`."""
    found = re.search(r"^== \$ mailwatch status --now (\S+)$", output, re.MULTILINE)
    assert found, output
    config = str(folder / "demo-run" / "mailwatch.toml")
    assert main(["--config", config, "nudge", "--dry-run", "--now", found.group(1)]) == 0
    return capsys.readouterr().out


def section(output: str, heading: str) -> str:
    """The lines printed between `== <heading>` and the next `== ` heading."""
    start = output.index(f"== {heading}")
    end = output.find("\n== ", start + 1)
    return output[start : end if end != -1 else None]


def server_of(output: str) -> tuple[int, Path]:
    found = SERVER_LINE.search(output)
    assert found, output
    return int(found.group(1)), Path(found.group(2))


def processes_using(folder: Path) -> list[str]:
    """Command lines of running processes that name `folder` (Dovecot's take -c <conf>)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if str(folder) in text:
            found.append(text)
    return found


def assert_stopped(port: int, scratch: Path) -> None:
    assert not devserver.port_in_use(port)
    assert not scratch.exists()
    assert processes_using(scratch) == []


def test_the_demo_polls_a_real_dovecot_and_reports_every_kind_of_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo-run").mkdir()
    (tmp_path / "demo-run" / "left-from-last-time.db").write_text("stale")

    status = main(["demo"])

    output, errors = capsys.readouterr()
    assert status == 0, errors
    assert re.search(r"^alice: fetched [1-9]\d*, [1-9]\d* new$", output, re.MULTILINE)
    report = section(output, "$ mailwatch report --since")
    for request_status in STATUSES:
        assert re.search(rf"\s{request_status}\s", report), f"no {request_status} in\n{report}"
    assert "breached, tier standard" in section(output, "$ mailwatch explain")
    # the database, its evaluation lock file, the configuration, the emails: nothing else
    assert sorted(p.name for p in (tmp_path / "demo-run").iterdir()) == [
        "emails",
        "mailwatch.db",
        "mailwatch.db.evaluation.lock",
        "mailwatch.toml",
    ]
    assert_stopped(*server_of(output))


def test_the_demo_ends_by_writing_the_nudges_and_digests_it_would_send_as_html_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    status = main(["demo"])

    output, errors = capsys.readouterr()
    assert status == 0, errors
    listed = re.findall(r"^  (demo-run/emails/\S+\.html): the ", output, re.MULTILINE)
    assert {"demo-run/emails/nudge-bob.html", "demo-run/emails/digest-head.html"} <= set(listed)
    assert sorted(listed) == sorted(str(p.relative_to(tmp_path)) for p in emails_in(tmp_path))
    nudge = (tmp_path / "demo-run/emails/nudge-bob.html").read_text()
    assert "Copy for the new landing page" in nudge and "<html" in nudge
    digest = (tmp_path / "demo-run/emails/digest-head.html").read_text()
    assert "Invoice 4471 looks wrong" in digest  # the week's breach
    # what is written is not sent: the demo's own database has claimed no nudge
    assert "would send to bob@rouge.example: 1 nudge(s)" in rerun_dry_nudge(
        tmp_path, output, capsys
    )
    # it ends in sentences for a person, not in the rules' words
    last_lines = [line for line in output.splitlines() if line][-2:]
    assert all(line.endswith(".") and "[" not in line for line in last_lines), last_lines


def test_the_demo_shows_the_same_whatever_the_time_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with freeze_time("2026-12-07 03:15:00", tick=True):  # Monday night
        assert main(["demo"]) == 0
    first = without_server(capsys.readouterr().out)
    first_emails = {p.name: p.read_text() for p in emails_in(tmp_path)}

    with freeze_time("2026-12-09 22:40:00", tick=True):  # Wednesday evening, the same week
        assert main(["demo"]) == 0
    again = without_server(capsys.readouterr().out)

    assert again == first
    assert {p.name: p.read_text() for p in emails_in(tmp_path)} == first_emails


def test_the_demo_stops_dovecot_when_interrupted_with_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "seed", interrupted)

    status = main(["demo"])

    output, _ = capsys.readouterr()
    assert status == 130
    assert_stopped(*server_of(output))


def test_the_demo_writes_its_configuration_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    def interrupted(*_: object) -> int:  # stop once the configuration is written
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "seed", interrupted)

    main(["demo"])

    output, _ = capsys.readouterr()
    assert_stopped(*server_of(output))
    assert (tmp_path / "demo-run" / "mailwatch.toml").stat().st_mode & 0o777 == 0o600


def test_without_dovecot_the_demo_says_how_to_install_it_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devserver, "dovecot_binary", lambda: None)

    status = main(["demo"])

    _, errors = capsys.readouterr()
    assert status == 1
    assert "apt-get install dovecot-imapd" in errors
    assert "make demo" in errors
