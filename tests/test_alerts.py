"""Alerts to `[alerts] to` when a mailbox stops syncing, sending fails or a job keeps failing;
and `status` telling the truth about syncing. The daemon's jobs are called with fixed clocks
against a real aiosmtpd; one test runs the real daemon against a Dovecot it stops."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.blocking import BlockingScheduler

from mailwatch.cli import main
from mailwatch.config import (
    AlertSettings,
    ConfigError,
    DaemonSettings,
    HealthSettings,
    load_settings,
)
from mailwatch.daemon import Daemon
from mailwatch.health import health_problems
from mailwatch.jobs import failing_jobs, record_job
from mailwatch.store.repository import Store
from tests.core.factory import at
from tests.imap_helpers import mailbox_settings
from tests.test_daemon import (
    HEAD,
    add_request,
    clock,
    daemon_signals,  # noqa: F401 - a fixture
    mailbox,
    settings_for,
    write_config,
)

TO = AlertSettings(to=(HEAD,))
STALE = HealthSettings(stale_after=timedelta(minutes=30))


def alerts_received(sink) -> list[tuple[tuple[str, ...], str]]:
    return [
        (m.rcpt_tos, m.message["Subject"])
        for m in sink.messages
        if m.message["X-Mailwatch"] == "alert"
    ]


# ---------------------------------------------------------------- a mailbox that stops syncing


def test_a_mailbox_stale_past_stale_after_gives_one_alert_and_one_recovery_across_restarts(
    smtp_server, store
):
    settings = settings_for(smtp_server, mailboxes=(mailbox("alice"),), alerts=TO, health=STALE)
    store.record_sync("alice", None, True, None, at(0, 9))
    store.record_sync("alice", None, False, "127.0.0.1:143: connection refused", at(0, 9, 10))

    Daemon(settings, store, clock=clock(at(0, 9, 20))).nudge_job()  # 20m: not yet stale
    assert alerts_received(smtp_server) == []
    for minute in (31, 35, 50):  # stale; a restarted daemon checks again
        Daemon(settings, store, clock=clock(at(0, 9, minute))).nudge_job()
    ((to, subject),) = alerts_received(smtp_server)
    assert to == (HEAD,)
    assert subject == "mailwatch alert: mailbox alice does not sync"
    alert = smtp_server.messages[0].message
    assert alert["Auto-Submitted"] == "auto-generated"
    text = alert.get_body(("plain",)).get_content()
    assert (
        "mailbox alice: last synced 31m ago (limit 30m): 127.0.0.1:143: connection refused" in text
    )
    assert "Since: Mon 23 Nov 09:00" in text

    store.record_sync("alice", None, True, None, at(0, 10))
    for minute in (1, 5):
        Daemon(settings, store, clock=clock(at(0, 10, minute))).nudge_job()
    assert [subject for _, subject in alerts_received(smtp_server)][1:] == [
        "mailwatch resolved: mailbox alice syncs again"
    ]


def test_a_mailbox_that_never_synced_is_alerted_after_three_failed_polls_not_before(
    smtp_server, store
):
    settings = settings_for(smtp_server, mailboxes=(mailbox("alice"),), alerts=TO)
    daemon = Daemon(settings, store, clock=clock(at(0, 9)))
    daemon.nudge_job()  # a new install: nothing tried yet
    for minute in (1, 2):
        store.record_sync("alice", None, False, "login refused", at(0, 9, minute))
    daemon.nudge_job()
    assert alerts_received(smtp_server) == []
    store.record_sync("alice", None, False, "login refused", at(0, 9, 3))
    daemon.nudge_job()
    daemon.nudge_job()
    (alert,) = [m.message for m in smtp_server.messages]
    assert alert["Subject"] == "mailwatch alert: mailbox alice does not sync"
    assert (
        "mailbox alice: has never synced: login refused" in alert.get_body(("plain",)).get_content()
    )


def test_an_alert_the_smtp_server_defers_is_sent_at_the_next_check(smtp_server, store):
    settings = settings_for(smtp_server, mailboxes=(mailbox("alice"),), alerts=TO, health=STALE)
    store.record_sync("alice", None, True, None, at(0, 9))
    smtp_server.answer_next("451 4.3.0 Try again later")
    Daemon(settings, store, clock=clock(at(0, 10))).nudge_job()
    assert alerts_received(smtp_server) == []
    Daemon(settings, store, clock=clock(at(0, 10, 5))).nudge_job()
    Daemon(settings, store, clock=clock(at(0, 10, 10))).nudge_job()
    assert len(alerts_received(smtp_server)) == 1


# ---------------------------------------------------------------- sending and jobs that fail


def test_an_smtp_server_answering_5xx_gives_one_alert_in_the_log_and_a_failing_health(
    smtp_server, store, caplog
):
    add_request(store)  # a nudge falls due at 15:00
    settings = settings_for(smtp_server, alerts=TO)
    smtp_server.answer_next("554 5.7.1 Sender rejected", count=20)
    with caplog.at_level(logging.WARNING, "mailwatch"):
        for minute in (0, 5, 10):
            Daemon(settings, store, clock=clock(at(0, 15, minute))).nudge_job()
    alert_lines = [r for r in caplog.records if r.name == "mailwatch.alerts"]
    assert [r.levelname for r in alert_lines] == ["ERROR"]
    message = alert_lines[0].getMessage()
    assert message.startswith(f"alert to {HEAD} not sent (permanent: SMTP 127.0.0.1:")
    assert "554 5.7.1 Sender rejected" in message and "sending nudges fails" in message
    assert smtp_server.messages == []
    problems = health_problems(settings, store, at(0, 15, 10))
    assert any("554 5.7.1 Sender rejected" in problem for problem in problems)


def test_a_failed_send_is_alerted_once_and_its_end_when_a_send_goes_through(smtp_server, store):
    add_request(store)
    settings = settings_for(smtp_server, alerts=(AlertSettings(to=("bob@rouge.example",))))
    smtp_server.refused["alice@rouge.example"] = "550 5.1.1 No such user"
    Daemon(settings, store, clock=clock(at(0, 15))).nudge_job()  # the reminder to alice fails
    Daemon(settings, store, clock=clock(at(0, 15, 5))).nudge_job()
    assert [s for _, s in alerts_received(smtp_server)] == ["mailwatch alert: sending nudges fails"]
    text = smtp_server.messages[-1].message.get_body(("plain",)).get_content()
    assert "sending nudges fails: the last to alice@rouge.example: SMTP 127.0.0.1:" in text
    assert "recipients refused: alice@rouge.example: 550 5.1.1 No such user" in text
    del smtp_server.refused["alice@rouge.example"]
    Daemon(settings, store, clock=clock(at(0, 16, 15))).nudge_job()  # the warning goes out
    Daemon(settings, store, clock=clock(at(0, 16, 20))).nudge_job()
    assert [s for _, s in alerts_received(smtp_server)][1:] == [
        "mailwatch resolved: nudges are sent again"
    ]


def test_a_job_that_fails_three_times_in_a_row_is_alerted_named_by_health_and_recovers(
    smtp_server, store
):
    settings = settings_for(smtp_server, alerts=TO)
    daemon = Daemon(settings, store, clock=clock(at(0, 9)))

    def broken() -> None:
        raise OSError("disk full")

    for minute in (0, 1):
        daemon.attempt_job("retention pass", broken, at(0, 9, minute))
    daemon.nudge_job()
    assert alerts_received(smtp_server) == []
    daemon.attempt_job("retention pass", broken, at(0, 9, 2))
    assert health_problems(settings, store, at(0, 9, 3)) == [
        "retention pass: 3 failures in a row: OSError: disk full"
    ]
    daemon.nudge_job()
    Daemon(settings, store, clock=clock(at(0, 9, 5))).nudge_job()  # after a restart
    daemon.attempt_job("retention pass", lambda: None, at(0, 9, 6))
    daemon.nudge_job()
    assert [s for _, s in alerts_received(smtp_server)] == [
        "mailwatch alert: retention pass keeps failing",
        "mailwatch resolved: retention pass succeeds again",
    ]
    assert health_problems(settings, store, at(0, 9, 7)) == []


# ---------------------------------------------------------------- configuration and commands


def test_alerts_go_to_the_head_by_default_and_a_client_address_is_refused(tmp_path):
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    assert load_settings(config).alerts.to == (HEAD,)
    config.write_text(
        config.read_text()
        + '[[accounts]]\nname = "Acme"\ndomains = ["acme.example"]\n'
        + 'manager = "alice@rouge.example"\n'
        + '[alerts]\nto = ["ops@rouge.example", "jane@acme.example"]\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == (
        f"{config}: alerts.to[1]: not a staff address: jane@acme.example "
        "(list it under [[staff]] or agency.domains)"
    )


MAILBOX = """
[[mailboxes]]
name = "alice"
host = "127.0.0.1"
port = {port}
security = "none"
username = "alice"
password_env = "MW_UNUSED"
"""


def test_status_on_a_new_install_says_no_mailbox_has_synced_and_exits_1(tmp_path, capsys):
    config = write_config(
        tmp_path / "mailwatch.toml", tmp_path / "db.sqlite", MAILBOX.format(port=1)
    )
    assert main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        "Sync problems (mail may be missing from what follows):",
        "  mailbox alice: has never synced",
        "No mailbox has synced yet: run `mailwatch poll` (`mailwatch check` says why not).",
    ]
    assert "Nothing is waiting" not in out

    assert main(["status", "--format", "json", "--config", str(config)]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["no_mailbox_synced"] is True
    assert document["mailboxes"] == [
        {
            "mailbox": "alice",
            "folder": None,
            "last_ok_at": None,
            "last_error": None,
            "failures": 0,
            "condition": "never_synced",
            "problem": "mailbox alice: has never synced",
        }
    ]


def test_status_leads_with_a_stale_mailbox_and_lists_the_synced_ones_after_it(tmp_path, capsys):
    config = write_config(
        tmp_path / "mailwatch.toml",
        tmp_path / "db.sqlite",
        MAILBOX.format(port=1) + MAILBOX.format(port=2).replace('"alice"', '"bob"'),
    )
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upgrade()
    now = datetime.now(UTC)
    store.record_sync("bob", None, True, None, now - timedelta(minutes=2))
    store.record_sync("alice", None, True, None, now - timedelta(hours=2, minutes=1))
    store.record_sync("alice", None, False, "connection refused", now - timedelta(minutes=1))
    store.close()

    assert main(["status", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == [
        "Sync problems (mail may be missing from what follows):",
        "  mailbox alice: last synced 2h 1m ago (limit 30m): connection refused",
        "Nothing is waiting for a reply.",
    ]
    assert main(["status", "--format", "json", "--config", str(config)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["no_mailbox_synced"] is False
    assert [(m["mailbox"], m["condition"]) for m in document["mailboxes"]] == [
        ("alice", "stale"),
        ("bob", "ok"),
    ]


def test_mailwatch_nudge_sends_the_alerts_too(tmp_path, smtp_server, capsys):
    smtp = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
        'sender = "mailwatch@rouge.example"\n'
    )
    config = write_config(
        tmp_path / "mailwatch.toml", tmp_path / "db.sqlite", MAILBOX.format(port=1) + smtp
    )
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upgrade()
    store.record_sync("alice", None, True, None, datetime.now(UTC) - timedelta(hours=1))
    store.close()

    assert main(["nudge", "--dry-run", "--config", str(config)]) == 0
    assert (
        "would alert head@rouge.example: mailbox alice: last synced 1h" in capsys.readouterr().out
    )
    assert main(["nudge", "--config", str(config)]) == 0
    assert main(["nudge", "--config", str(config)]) == 0
    assert [to for to, _ in alerts_received(smtp_server)] == [(HEAD,)]


def test_a_mailbox_polled_less_often_than_stale_after_is_stale_only_after_two_missed_polls(
    tmp_path,
):
    config = write_config(
        tmp_path / "mailwatch.toml",
        tmp_path / "db.sqlite",
        MAILBOX.format(port=1) + 'poll_interval = "45m"\n',
    )
    settings = load_settings(config)
    synced = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    store = Store(settings.database_url)
    store.upgrade()
    store.record_sync("alice", None, True, None, synced)
    try:
        between_polls = health_problems(settings, store, synced + timedelta(minutes=80))
        two_polls_missed = health_problems(settings, store, synced + timedelta(minutes=91))
    finally:
        store.close()
    assert between_polls == []
    assert two_polls_missed == ["mailbox alice: last synced 1h 31m ago (limit 1h 30m)"]


def test_the_failures_of_a_mailbox_removed_from_the_configuration_are_forgotten(tmp_path):
    config = write_config(tmp_path / "mailwatch.toml", tmp_path / "db.sqlite")
    settings = load_settings(config)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    store = Store(settings.database_url)
    store.upgrade()
    try:
        for _ in range(3):
            record_job(store, "poll of mailbox alice", "login refused", now)
            record_job(store, "nudge pass", "boom", now)
        Daemon(settings, store, clock=lambda: now).schedule(BlockingScheduler())
        remaining = [failure.job for failure in failing_jobs(store)]
    finally:
        store.close()
    assert remaining == ["nudge pass"]


def test_nudge_with_now_at_another_instant_neither_starts_nor_ends_an_alert(
    tmp_path, smtp_server, capsys
):
    smtp = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
        'sender = "mailwatch@rouge.example"\n'
    )
    config = write_config(
        tmp_path / "mailwatch.toml", tmp_path / "db.sqlite", MAILBOX.format(port=1) + smtp
    )
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upgrade()
    synced = datetime.now(UTC) - timedelta(hours=1)
    store.record_sync("alice", None, True, None, synced)
    store.close()
    assert main(["nudge", "--config", str(config)]) == 0  # stale now: one alert
    capsys.readouterr()

    before_the_gap = (synced + timedelta(minutes=5)).isoformat()
    assert main(["nudge", "--now", before_the_gap, "--config", str(config)]) == 0
    after_the_gap = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert main(["nudge", "--now", after_the_gap, "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "alert" not in out
    assert len(alerts_received(smtp_server)) == 1  # no "syncs again" from the earlier instant


def test_status_before_any_sync_still_lists_the_requests_of_imported_mail(tmp_path, capsys):
    acme = '\n[[accounts]]\nname = "Acme"\ndomains = ["acme.example"]\nmanager = "alice@rouge.example"\n'
    config = write_config(
        tmp_path / "mailwatch.toml", tmp_path / "db.sqlite", MAILBOX.format(port=1) + acme
    )
    mail = tmp_path / "question.eml"
    mail.write_bytes(
        b"From: jane@acme.example\r\nTo: alice@rouge.example\r\nSubject: Banner colours\r\n"
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <q@acme.example>\r\n\r\nHi\r\n"
    )
    now = ["--now", "2026-12-01T12:00Z"]
    assert main(["import", str(mail), "--mailbox", "alice", *now, "--config", str(config)]) == 0
    capsys.readouterr()

    assert main(["status", *now, "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "No mailbox has synced yet" in out
    assert "Banner colours" in out


# ---------------------------------------------------------------- the real daemon


def wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not so after {seconds} s")
        time.sleep(0.05)


def last_synced(store: Store) -> datetime | None:
    whole = [s for s in store.sync_states() if s.folder is None]
    return whole[0].last_ok_at if whole else None


@pytest.mark.dovecot
def test_the_daemon_alerts_once_when_dovecot_stops_past_stale_after_and_once_when_it_is_back(
    dovecot,
    smtp_server,
    store,
    tmp_path,
    daemon_signals,  # noqa: F811 - the fixture
):
    user = dovecot.new_user("alice")
    alice = mailbox_settings(
        dovecot, user, tmp_path, idle=False, poll_interval=timedelta(seconds=1)
    )
    settings = settings_for(
        smtp_server,
        mailboxes=(alice,),
        alerts=TO,
        health=HealthSettings(stale_after=timedelta(minutes=5)),
        daemon=DaemonSettings(nudge_interval=timedelta(seconds=1)),
    )
    # The daemon's clock runs a minute per second: stale after 5 s, backoffs 60 times shorter.
    started, epoch = time.monotonic(), datetime.now(UTC)
    daemon = Daemon(
        settings, store, clock=lambda: epoch + timedelta(minutes=time.monotonic() - started)
    )

    def scenario() -> None:
        try:
            wait_until(lambda: last_synced(store) is not None, 30)
            dovecot.stop()
            try:
                wait_until(lambda: alerts_received(smtp_server), 30)
                time.sleep(3)  # the checks go on, every second: still one alert
            finally:
                dovecot.start()
            wait_until(lambda: len(alerts_received(smtp_server)) > 1, 60)
            time.sleep(3)
        finally:
            daemon.request_stop()

    runner = threading.Thread(target=scenario)
    rescue = threading.Timer(150, os.kill, (os.getpid(), signal.SIGINT))
    runner.start()
    rescue.start()
    try:
        assert daemon.run() == 0
    finally:
        rescue.cancel()
        runner.join()
    received = alerts_received(smtp_server)
    assert [to for to, _ in received] == [(HEAD,), (HEAD,)]
    assert received[0][1] == "mailwatch alert: mailbox alice does not sync"
    assert received[1][1] == "mailwatch resolved: mailbox alice syncs again"
