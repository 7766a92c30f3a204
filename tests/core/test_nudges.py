"""The nudge ladder, with an explicit `now` (response-clock.md, "Nudges").

Times are UTC; the agency is in Europe/London, which is UTC+0 in November.
2026-11-23 is a Monday.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from mailwatch.core.calendar import instant_after
from mailwatch.core.model import (
    Absence,
    Account,
    BusinessHours,
    ClockKind,
    Leave,
    NudgePolicy,
    NudgeStage,
    Policy,
    Request,
    StaffMember,
    Status,
)
from mailwatch.core.nudges import Nudge, batch_by_recipient, due_nudges, stage_due_at

ALICE = "alice@rouge.example"
BOB = "bob@rouge.example"
HEAD = "head@rouge.example"

POLICY = Policy(
    agency_domains=("rouge.example",),
    timezone="Europe/London",
    staff=(
        StaffMember(ALICE, "Alice Smith", aliases=("a.smith@rouge.example",)),
        StaffMember(BOB, "Bob Jones"),
        StaffMember(HEAD, "Hana Head"),
    ),
    accounts=(Account("Acme", domains=("acme.example",), manager=ALICE, backups=(BOB,)),),
    head_of_client_management=(HEAD,),
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def request(
    received_at: datetime,
    target: timedelta = timedelta(hours=24),
    *,
    tier: str = "standard",
    status: Status = Status.OPEN,
    opened_by: str = "<q1@acme.example>",
    account: str = "Acme",
    subject: str = "Homepage banner",
) -> Request:
    return Request(
        account=account,
        thread=opened_by,
        subject=subject,
        opened_by=opened_by,
        received_at=received_at,
        messages=(opened_by,),
        tier=tier,
        clock=ClockKind.CALENDAR,
        target_seconds=int(target.total_seconds()),
        deadline=received_at + target,
        responsible=(ALICE,),
        status=status,
    )


def as_of(req: Request, now: datetime) -> Request:
    """The request as the evaluation would hand it over at `now`."""
    elapsed = int((now - req.received_at).total_seconds())
    status = Status.OVERDUE if now > req.deadline else Status.OPEN
    return replace(req, elapsed_seconds=elapsed, status=status)


def sent(plan_list: list[Nudge]) -> set[tuple[str, str]]:
    return {(n.stage, n.recipient) for n in plan_list}


def plan_for(req, now, policy=POLICY, absences=(), claimed=frozenset()):
    return due_nudges([as_of(req, now)], policy, list(absences), set(claimed), now)


# ---------------------------------------------------------------- the ladder

STANDARD = request(at(23, 14))  # Monday 14:00, 24h: reminder Tue 08:00, warning 11:36, breach 14:00


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(24, 7, 59), set()),
        (at(24, 8, 0), {("reminder", ALICE)}),
        (at(24, 9, 59), {("reminder", ALICE)}),
        (at(24, 11, 36), {("warning", ALICE), ("warning", BOB)}),
        (at(24, 14, 0), {("breach", ALICE), ("breach", BOB), ("breach", HEAD)}),
    ],
)
def test_a_standard_request_climbs_the_ladder_at_75_90_and_100_percent(now, expected):
    assert sent(plan_for(STANDARD, now).send) == expected


CRITICAL = request(at(25, 23), timedelta(hours=1), tier="critical")  # Wednesday 23:00, at night


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(25, 23, 44), set()),
        (at(25, 23, 45), {("reminder", ALICE)}),
        (at(25, 23, 54), {("warning", ALICE), ("warning", BOB)}),
        (at(26, 0, 0), {("breach", ALICE), ("breach", BOB), ("breach", HEAD)}),
    ],
)
def test_a_critical_request_reminds_after_45_minutes_even_at_night(now, expected):
    plan = plan_for(CRITICAL, now)
    assert sent(plan.send) == expected
    assert plan.held == []
    assert all(n.critical for n in plan.send)


def test_the_reason_says_how_much_of_the_target_has_elapsed():
    (nudge,) = plan_for(STANDARD, at(24, 8)).send
    assert nudge.reasons[0] == "reminder: 18h of 24h elapsed"
    assert "you manage Acme" in nudge.reasons
    assert nudge.due_at == at(24, 8)


def test_when_several_stages_fell_due_together_only_the_highest_is_sent():
    plan = plan_for(STANDARD, at(24, 14, 30))
    assert {n.stage for n in plan.send} == {"breach"}


def test_a_stage_already_claimed_is_not_offered_again():
    claimed = {(STANDARD.opened_by, "reminder", ALICE)}
    assert plan_for(STANDARD, at(24, 9), claimed=claimed).send == []
    later = plan_for(STANDARD, at(24, 11, 40), claimed=claimed)
    assert sent(later.send) == {("warning", ALICE), ("warning", BOB)}


@pytest.mark.parametrize("status", [Status.MET, Status.BREACHED, Status.WAIVED])
def test_an_answered_or_waived_request_never_gets_a_nudge(status):
    now = at(24, 14)
    answered = replace(as_of(STANDARD, now), status=status)
    plan = due_nudges([answered], POLICY, [], set(), now)
    assert plan == due_nudges([], POLICY, [], set(), now)


def test_a_request_closed_unanswered_after_expiry_gets_no_nudge():
    now = at(24, 14)
    expired = replace(as_of(STANDARD, now), status=Status.OVERDUE, closed_at=at(24, 13))
    assert due_nudges([expired], POLICY, [], set(), now).send == []


def test_nudges_switched_off_send_nothing():
    policy = replace(POLICY, nudges=NudgePolicy(enabled=False))
    assert plan_for(STANDARD, at(24, 14), policy=policy).send == []


# ---------------------------------------------------------------- the clock of the stage


HOURS = BusinessHours(timezone="Europe/London")  # Mon-Fri 09:00-17:30


def business_request(received_at: datetime, target: timedelta) -> Request:
    req = request(received_at, target)
    deadline = instant_after(HOURS, received_at, target.total_seconds())
    return replace(req, clock=ClockKind.BUSINESS, deadline=deadline)


@pytest.mark.parametrize(
    ("received_at", "stage_at", "expected"),
    [
        # 8h30m of business time is one working day; 75% of it is 6h22m30s.
        (at(23, 9), 0.75, datetime(2026, 11, 23, 15, 22, 30, tzinfo=UTC)),
        (at(23, 9), 1.0, at(23, 17, 30)),
        # Friday 17:00: half an hour on Friday, the rest on Monday.
        (at(27, 17), 0.75, datetime(2026, 11, 30, 14, 52, 30, tzinfo=UTC)),
        # Saturday: the clock starts on Monday morning.
        (at(28, 10), 0.9, datetime(2026, 11, 30, 16, 39, tzinfo=UTC)),
    ],
)
def test_on_the_business_clock_a_stage_falls_due_after_its_share_of_business_time(
    received_at, stage_at, expected
):
    req = business_request(received_at, timedelta(hours=8, minutes=30))
    stage = NudgeStage("s", stage_at, ("manager",))
    assert stage_due_at(req, stage, POLICY) == expected


def test_an_accounts_own_business_hours_replace_the_agencys():
    new_york = BusinessHours(timezone="America/New_York", start=time(9), end=time(17))
    account = replace(POLICY.accounts[0], business_hours=new_york)
    policy = replace(POLICY, accounts=(account,))
    req = business_request(at(23, 9), timedelta(hours=8))  # 09:00 London = 04:00 New York
    stage = NudgeStage("reminder", 0.75, ("manager",))
    # 6h of New York business time from 09:00 New York (14:00 UTC): 15:00 New York.
    assert stage_due_at(req, stage, policy) == at(23, 20)


def test_on_the_calendar_clock_a_stage_falls_due_after_its_share_of_wall_time():
    stage = NudgeStage("warning", 0.9, ("manager",))
    assert stage_due_at(STANDARD, stage, POLICY) == at(24, 11, 36)


# ---------------------------------------------------------------- who is told


def test_a_manager_on_leave_is_replaced_by_the_backups():
    policy = replace(POLICY, leave=(Leave(ALICE, date(2026, 11, 20), date(2026, 11, 24)),))
    (nudge,) = plan_for(STANDARD, at(24, 8), policy=policy).send
    assert nudge.recipient == BOB
    assert "manager alice@ on leave until 24 Nov → backups" in nudge.reasons


@pytest.mark.parametrize(
    ("now", "recipient"),
    [
        (at(24, 23, 59), BOB),  # the last day of leave is included
        (at(25, 0, 0), ALICE),  # back the next day
    ],
)
def test_both_days_of_a_leave_are_included(now, recipient):
    policy = replace(
        POLICY,
        leave=(Leave(ALICE, date(2026, 11, 20), date(2026, 11, 24)),),
        nudges=NudgePolicy(stages=(NudgeStage("reminder", 0.75, ("manager",)),)),
    )
    req = request(now - timedelta(hours=18))
    critical = replace(policy, nudges=replace(policy.nudges, critical_tiers=("standard",)))
    assert [n.recipient for n in plan_for(req, now, policy=critical).send] == [recipient]


def test_leave_dates_are_read_in_the_agency_timezone():
    # 23:30 UTC on 24 Nov is already 25 Nov in Auckland: the leave is over there.
    policy = replace(
        POLICY,
        timezone="Pacific/Auckland",
        leave=(Leave(ALICE, date(2026, 11, 20), date(2026, 11, 24)),),
        nudges=NudgePolicy(critical_tiers=("standard",)),
    )
    req = request(at(24, 23, 30) - timedelta(hours=18))
    assert sent(plan_for(req, at(24, 23, 30), policy=policy).send) == {("reminder", ALICE)}


def test_a_leave_listed_under_an_alias_counts_for_the_staff_member():
    policy = replace(
        POLICY, leave=(Leave("A.Smith@rouge.example", date(2026, 11, 24), date(2026, 11, 24)),)
    )
    assert sent(plan_for(STANDARD, at(24, 8), policy=policy).send) == {("reminder", BOB)}


def test_a_manager_inferred_absent_from_an_auto_reply_is_replaced_by_the_backups():
    absent = Absence(ALICE, at(23, 9), at(30, 9), "<ooo@rouge.example>")
    (nudge,) = plan_for(STANDARD, at(24, 8), absences=[absent]).send
    assert nudge.recipient == BOB
    assert "manager alice@ away (out-of-office reply) → backups" in nudge.reasons


def test_an_absence_that_has_ended_changes_nothing():
    absent = Absence(ALICE, at(20, 9), at(23, 9), "<ooo@rouge.example>")
    assert sent(plan_for(STANDARD, at(24, 8), absences=[absent]).send) == {("reminder", ALICE)}


def test_when_nobody_responsible_is_present_the_head_is_told():
    policy = replace(POLICY, leave=(Leave(ALICE, date(2026, 11, 20), date(2026, 11, 30)),))
    bob_away = Absence(BOB, at(23, 9), at(30, 9), "<ooo2@rouge.example>")
    (nudge,) = plan_for(STANDARD, at(24, 8), policy=policy, absences=[bob_away]).send
    assert (nudge.stage, nudge.recipient) == ("reminder", HEAD)
    assert "nobody responsible for Acme is present → head" in nudge.reasons


def test_a_manager_who_is_also_head_gets_one_nudge_with_both_reasons():
    policy = replace(POLICY, head_of_client_management=(ALICE,))
    plan = plan_for(STANDARD, at(24, 14), policy=policy)
    (nudge,) = [n for n in plan.send if n.recipient == ALICE]
    assert {"you manage Acme", "Head of Client Management"} <= set(nudge.reasons)
    assert len(plan.send) == 2


# ---------------------------------------------------------------- quiet hours and lateness

NIGHT = request(at(24, 10))  # Tuesday 10:00: reminder Wed 04:00, warning 07:36, deadline 10:00


def test_a_reminder_due_at_night_is_held_until_quiet_hours_end():
    plan = plan_for(NIGHT, at(25, 4))
    assert plan.send == []
    (held,) = plan.held
    assert (held.stage, held.recipient) == ("reminder", ALICE)
    assert held.reasons[-1] == "held: quiet hours (Europe/London) until Wed 08:00"


def test_a_held_nudge_is_released_when_quiet_hours_end_and_not_counted_late():
    plan = plan_for(NIGHT, at(25, 8))
    assert plan.held == [] and plan.skipped == []
    assert sent(plan.send) == {("warning", ALICE), ("warning", BOB)}


def test_a_nudge_whose_deadline_falls_before_quiet_hours_end_goes_at_once():
    req = request(at(25, 21), timedelta(hours=4), tier="major")  # deadline Thursday 01:00
    plan = plan_for(req, at(26, 0))
    assert sent(plan.send) == {("reminder", ALICE)}
    assert "the deadline falls before they end" in plan.send[0].reasons[-1]


def test_a_saturday_reminder_beats_a_silent_breach():
    req = request(at(27, 12))  # Friday noon: reminder Saturday 06:00, deadline Saturday noon
    assert sent(plan_for(req, at(28, 6)).send) == {("reminder", ALICE)}


def test_a_weekend_holds_a_nudge_until_monday_morning_when_the_deadline_is_later():
    req = request(at(27, 12), timedelta(hours=72))  # reminder Sunday 18:00, deadline Monday noon
    plan = plan_for(req, at(29, 18))
    assert [h.reasons[-1] for h in plan.held] == [
        "held: quiet hours (Europe/London) until Mon 08:00"
    ]
    # by then the warning (Monday 04:48) is due too, and only the highest is sent
    assert sent(plan_for(req, at(30, 8)).send) == {("warning", ALICE), ("warning", BOB)}


def test_quiet_hours_are_the_recipients_own():
    policy = replace(
        POLICY, staff=(StaffMember(ALICE, timezone="America/New_York"), *POLICY.staff[1:])
    )
    # The reminder falls due at 08:00 London, 03:00 in New York; the deadline is 09:00 there.
    plan = plan_for(STANDARD, at(24, 8), policy=policy)
    assert plan.held[0].reasons[-1] == "held: quiet hours (America/New_York) until Tue 08:00"
    plan = plan_for(STANDARD, at(24, 11, 36), policy=policy)
    assert sent(plan.send) == {("warning", BOB)}
    assert sent(plan.held) == {("warning", ALICE)}


@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (at(24, 16), "send"),  # breach due 2h ago: still in time
        (at(24, 16, 1), "skipped"),
    ],
)
def test_a_stage_due_longer_ago_than_max_lateness_is_skipped(now, bucket):
    plan = plan_for(STANDARD, now)
    assert sent(getattr(plan, bucket)) == {("breach", ALICE), ("breach", BOB), ("breach", HEAD)}


def test_a_skipped_nudge_says_how_late_it_was():
    (skipped, *_) = plan_for(STANDARD, at(24, 16, 1)).skipped
    assert skipped.reasons[-1] == "skipped: fell due Tue 14:00, more than 2h ago"


HALFWAY = replace(POLICY, nudges=NudgePolicy(stages=(NudgeStage("reminder", 0.5, ("manager",)),)))
EVENING = request(at(22, 19), timedelta(hours=48))  # Sunday 19:00: due Monday 19:00


@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (at(23, 20, 30), "held"),  # quiet hours began at 20:00
        (at(24, 8, 5), "send"),  # 1h before quiet hours and 5 minutes after: 1h05 late
        (at(24, 9, 1), "skipped"),  # 2h01 late
    ],
)
def test_lateness_does_not_count_the_quiet_hours_that_held_a_nudge(now, bucket):
    plan = plan_for(EVENING, now, policy=HALFWAY)
    assert sent(getattr(plan, bucket)) == {("reminder", ALICE)}


def test_after_an_outage_old_stages_are_skipped_not_flooded():
    old = [
        request(at(2, 9) + timedelta(hours=i), opened_by=f"<old{i}@acme.example>")
        for i in range(20)
    ]
    now = at(25, 10)
    plan = due_nudges([as_of(r, now) for r in old], POLICY, [], set(), now)
    assert plan.send == [] and plan.held == []
    assert len(plan.skipped) == 20 * 3


# ---------------------------------------------------------------- the safety net


def test_a_client_address_as_manager_is_refused():
    account = replace(POLICY.accounts[0], manager="pat@acme.example", backups=())
    policy = replace(POLICY, accounts=(account,))
    plan = plan_for(STANDARD, at(24, 8), policy=policy)
    assert plan.send == []
    (refused,) = plan.refused
    assert refused.recipient == "pat@acme.example"
    assert refused.reasons[-1] == "refused: pat@acme.example is an address of client account Acme"


def test_a_staff_member_listed_at_a_client_domain_is_refused():
    staff = (*POLICY.staff, StaffMember("dave@acme.example", "Dave"))
    account = replace(POLICY.accounts[0], manager="dave@acme.example")
    policy = replace(POLICY, staff=staff, accounts=(account,))
    plan = plan_for(STANDARD, at(24, 14), policy=policy)
    assert "dave@acme.example" not in {n.recipient for n in plan.send}
    assert [n.recipient for n in plan.refused] == ["dave@acme.example"]


def test_a_staff_address_also_listed_as_a_client_address_is_refused():
    account = replace(POLICY.accounts[0], addresses=(BOB,))
    policy = replace(POLICY, accounts=(account,))
    plan = plan_for(STANDARD, at(24, 12), policy=policy)
    assert sent(plan.send) == {("warning", ALICE)}
    assert sent(plan.refused) == {("warning", BOB)}


def test_a_head_outside_the_agency_is_refused():
    policy = replace(POLICY, head_of_client_management=("boss@gmail.example",))
    plan = plan_for(STANDARD, at(24, 14), policy=policy)
    assert "boss@gmail.example" not in {n.recipient for n in plan.send}
    assert plan.refused[0].reasons[-1] == "refused: boss@gmail.example is not a staff address"


def test_a_held_nudge_to_a_client_is_refused_too():
    account = replace(POLICY.accounts[0], manager="pat@acme.example", backups=())
    policy = replace(POLICY, accounts=(account,))
    plan = plan_for(NIGHT, at(25, 4), policy=policy)
    assert plan.held == [] and [n.recipient for n in plan.refused] == ["pat@acme.example"]


# ---------------------------------------------------------------- batching


def test_batches_list_overdue_requests_first_then_the_least_time_left():
    now = at(25, 12)
    soon = request(at(24, 13), opened_by="<soon@acme.example>")  # due in 1h
    later = request(at(24, 16), opened_by="<later@acme.example>")  # due in 4h
    late = request(at(24, 11), opened_by="<late@acme.example>")  # overdue by 1h
    plan = due_nudges([as_of(r, now) for r in (later, soon, late)], POLICY, [], set(), now)
    batches = batch_by_recipient(plan.send)
    assert list(batches) == [ALICE, BOB, HEAD]
    order = [n.request.opened_by for n in batches[ALICE]]
    assert order == ["<late@acme.example>", "<soon@acme.example>", "<later@acme.example>"]
    assert [n.request.opened_by for n in batches[HEAD]] == ["<late@acme.example>"]
