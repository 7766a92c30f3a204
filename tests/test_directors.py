"""The Directors' stage, end to end: the real store (SQLite and PostgreSQL), a real SMTP
server, the nudge pass as `mailwatch nudge --now` runs it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from mailwatch.cli import main
from mailwatch.core.model import NudgePolicy, StaffMember, Waiver
from mailwatch.store.repository import Store
from tests.core.factory import at, client, policy, staff
from tests.test_nudging import add, parts, send_due_nudges, settings_for

DIRECTOR = "dora@rouge.example"
BANNER = "<banner@acme.example>"


def with_directors(sink, store_url: str = "sqlite://", after: str = "72h", **changes):
    base = policy()
    return settings_for(
        sink,
        store_url,
        staff=(*base.staff, StaffMember(DIRECTOR, "Dora")),
        directors=(DIRECTOR,),
        nudges=NudgePolicy(directors_after=timedelta(hours=int(after.rstrip("h")))),
        **changes,
    )


def escalations(sink) -> list:
    return [m for m in sink.messages if m.message["X-Mailwatch"] == "directors"]


def banner_with_a_chaser(store: Store) -> Store:
    """Monday 09:00, due Monday 17:00 (8h target); the client chases on Tuesday at 10:00."""
    add(
        store,
        client(BANNER[1:-1], at(0, 9), "Homepage banner"),
        client("chaser@acme.example", at(1, 10), "Re: Homepage banner", refs=(BANNER,)),
    )
    return store


def test_a_request_unanswered_72h_past_its_deadline_goes_once_to_the_directors_not_before(
    smtp_server, store, store_url
):
    banner_with_a_chaser(store)
    settings = with_directors(smtp_server, store_url)

    send_due_nudges(settings, store, at(3, 16, 59))  # Thursday, a minute before
    assert escalations(smtp_server) == []
    send_due_nudges(settings, store, at(3, 17))
    send_due_nudges(settings, store, at(3, 17, 30))
    restarted = Store(store_url)
    try:
        send_due_nudges(settings, restarted, at(4, 10))
    finally:
        restarted.close()

    (mail,) = escalations(smtp_server)
    assert mail.rcpt_tos == (DIRECTOR,)
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert {(c.key, c.recipient) for c in store.claims("directors")} == {
        (f"{BANNER}|directors", DIRECTOR)
    }


def test_the_escalation_tells_the_whole_story(smtp_server, store):
    banner_with_a_chaser(store)
    settings = with_directors(smtp_server)
    send_due_nudges(settings, store, at(0, 15))  # the reminder to Alice

    send_due_nudges(settings, store, at(3, 17))

    (mail,) = escalations(smtp_server)
    assert "Homepage banner" in mail.message["Subject"]
    for part in parts(mail):
        flat = " ".join(part.split())
        assert "Overdue by 3d" in flat
        assert "Responsible when it arrived: Alice (alice@rouge.example)" in flat
        assert "Reminders sent: reminder to Alice, Mon 23 Nov 15:00" in flat
        assert '"Homepage banner" from jane@acme.example' in flat
        assert "Mon 23 Nov 09:00" in flat
        assert '"Re: Homepage banner" from jane@acme.example' in flat
        assert "Tue 24 Nov 10:00" in flat


def test_a_request_answered_or_waived_before_its_escalation_never_gets_it(smtp_server, store):
    add(
        store,
        client("answered@acme.example", at(0, 9), "Answered late"),
        client("waived@acme.example", at(0, 9), "Waived late"),
        client("waiting@acme.example", at(0, 9), "Still waiting"),
        staff("re@rouge.example", at(2, 9), refs=("<answered@acme.example>",)),
    )
    store.add_waiver(Waiver("<waived@acme.example>", "cli: alice", at(2, 10), "no reply needed"))

    send_due_nudges(with_directors(smtp_server), store, at(3, 17))

    (mail,) = escalations(smtp_server)
    text = mail.message.get_body(("plain",)).get_content()
    assert "Still waiting" in text
    assert "Answered late" not in text and "Waived late" not in text


def test_an_escalation_due_too_long_ago_is_skipped_and_recorded_for_the_digest(smtp_server, store):
    banner_with_a_chaser(store)

    run = send_due_nudges(with_directors(smtp_server), store, at(4, 12))  # 19h after it fell due

    assert escalations(smtp_server) == []
    assert [(n.stage, n.recipient) for n in run.escalations.skipped] == [("directors", DIRECTOR)]
    (recorded,) = [c for c in store.claims("nudge-skipped") if c.recipient == DIRECTOR]
    assert recorded.key == f"{BANNER}|directors" and recorded.error.startswith("skipped:")


def test_an_escalation_falling_due_at_the_weekend_waits_for_monday_morning(smtp_server, store):
    add(store, client("friday@acme.example", at(4, 9), "Friday question"))  # due Fri 17:00
    settings = with_directors(smtp_server, after="24h")  # escalation due Saturday 17:00

    held = send_due_nudges(settings, store, at(5, 17))
    assert escalations(smtp_server) == [] and len(held.escalations.held) == 1
    send_due_nudges(settings, store, at(7, 8))  # Monday, as quiet hours end

    assert [m.rcpt_tos for m in escalations(smtp_server)] == [(DIRECTOR,)]


def test_a_tier_sets_its_own_time_to_the_directors_and_goes_at_any_hour(smtp_server, store):
    base = policy()
    critical = replace(base.tiers[0], directors_after=timedelta(hours=2))
    add(
        store,
        client("down@acme.example", at(0, 22), "Our website is down"),  # due Mon 23:00
        client("banner@acme.example", at(0, 9), "Homepage banner"),  # due Mon 17:00
    )

    send_due_nudges(with_directors(smtp_server, tiers=(critical,)), store, at(1, 1))  # 01:00

    (mail,) = escalations(smtp_server)
    text = mail.message.get_body(("plain",)).get_content()
    assert "Our website is down" in text and "Homepage banner" not in text


def test_an_escalation_never_goes_to_a_client_address(smtp_server, store):
    # Misconfigured by hand (the config loader refuses it): a client listed as a director.
    banner_with_a_chaser(store)
    settings = with_directors(smtp_server)
    settings = replace(
        settings, policy=replace(settings.policy, directors=(DIRECTOR, "jane@acme.example"))
    )

    run = send_due_nudges(settings, store, at(3, 17))

    assert [m.rcpt_tos for m in escalations(smtp_server)] == [(DIRECTOR,)]
    assert [n.recipient for n in run.escalations.refused] == ["jane@acme.example"]


def test_a_director_who_is_not_staff_is_a_configuration_error(tmp_path, capsys):
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        f"""
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
directors = ["dora@rouge.example", "boss@acme.example"]

[database]
url = "sqlite:///{tmp_path / "mailwatch.db"}"

[nudges]
directors_after = "72h"
"""
    )

    assert main(["report", "--config", str(config)]) == 2

    (line,) = capsys.readouterr().err.splitlines()
    assert "agency.directors[1]" in line and "not a staff address: boss@acme.example" in line
    assert not (tmp_path / "mailwatch.db").exists()


def test_check_says_the_directors_stage_is_off_while_no_time_says_when(tmp_path, capsys):
    config = tmp_path / "mailwatch.toml"
    agency = f"""
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
directors = ["dora@rouge.example"]

[database]
url = "sqlite:///{tmp_path / "mailwatch.db"}"
"""
    config.write_text(agency)
    main(["check", "--config", str(config)])
    assert "directors: off until [nudges] directors_after" in capsys.readouterr().out

    config.write_text(agency + '\n[nudges]\ndirectors_after = "72h"\n')
    main(["check", "--config", str(config)])
    assert "directors:" not in capsys.readouterr().out
