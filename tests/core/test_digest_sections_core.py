"""The pure parts of the digest sections: the hour-of-week grid and accounts gone quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailwatch.core.busiest import hour_of_week
from mailwatch.core.check_ins import quiet_accounts, silence_text
from mailwatch.core.model import Account, ClockKind, Request, Status


def request(received_at: datetime, status: Status = Status.MET) -> Request:
    return Request(
        account="Acme Ltd",
        thread="<t@acme.example>",
        subject="Banner",
        opened_by=f"<{received_at.isoformat()}@acme.example>",
        received_at=received_at,
        messages=(),
        tier="standard",
        clock=ClockKind.CALENDAR,
        target_seconds=86400,
        deadline=received_at + timedelta(days=1),
        responsible=("alice@rouge.example",),
        status=status,
    )


def test_requests_are_counted_at_their_local_hour_in_a_timezone_without_dst():
    # Asia/Tokyo is UTC+9 all year: Monday 23:30 UTC is Tuesday 08:30 there.
    grid = hour_of_week(
        [
            request(datetime(2026, 11, 23, 23, 30, tzinfo=UTC), Status.OVERDUE),
            request(datetime(2026, 11, 23, 23, 59, tzinfo=UTC), Status.BREACHED),
            request(datetime(2026, 11, 24, 0, 0, tzinfo=UTC)),
            request(datetime(2026, 11, 29, 14, 59, tzinfo=UTC), Status.WAIVED),
        ],
        "Asia/Tokyo",
    )
    assert grid.requests[1][8] == 2 and grid.breaches[1][8] == 2
    assert grid.requests[1][9] == 1 and grid.breaches[1][9] == 0
    assert grid.requests[6][23] == 1  # Sunday 23:59 in Tokyo
    assert sum(map(sum, grid.requests)) == 4 and sum(map(sum, grid.breaches)) == 2
    assert grid.busiest(2) == [(1, 8), (1, 9)]
    assert grid.breach_cells() == [(1, 8)]


def test_the_same_utc_hour_lands_an_hour_later_in_london_summer_time():
    grid = hour_of_week(
        [
            request(datetime(2026, 7, 6, 8, 30, tzinfo=UTC)),  # Monday, BST: 09:30
            request(datetime(2026, 11, 23, 8, 30, tzinfo=UTC)),  # Monday, GMT: 08:30
        ],
        "Europe/London",
    )
    assert grid.requests[0][9] == 1 and grid.requests[0][8] == 1


NOW = datetime(2026, 11, 30, 8, tzinfo=UTC)
ACME = Account("Acme Ltd", domains=("acme.example",), manager="alice@rouge.example")
GLOBEX = Account("Globex", domains=("globex.example",), manager="carol@rouge.example")
INITECH = Account("Initech", domains=("initech.example",))


def test_an_account_silent_for_its_check_in_time_is_quiet_and_one_turned_off_never_is():
    quiet = quiet_accounts(
        (ACME, GLOBEX, INITECH),
        {"Acme Ltd": timedelta(days=28), "Globex": None, "Initech": timedelta(days=28)},
        {"Acme Ltd": NOW - timedelta(days=37), "Globex": NOW - timedelta(days=90)},
        NOW,
    )
    assert [(q.account, q.manager) for q in quiet] == [
        ("Initech", None),
        ("Acme Ltd", "alice@rouge.example"),
    ]
    assert silence_text(quiet[1]) == "No contact with Acme Ltd for 5 weeks — time for a check-in?"
    assert silence_text(quiet[0]) == (
        "No contact with Initech in the stored mail — time for a check-in?"
    )


def test_contact_within_the_check_in_time_keeps_an_account_off_the_list():
    recent = {"Acme Ltd": NOW - timedelta(days=27, hours=23)}
    assert quiet_accounts((ACME,), {"Acme Ltd": timedelta(days=28)}, recent, NOW) == []
    short = quiet_accounts((ACME,), {"Acme Ltd": timedelta(days=3)}, recent, NOW)
    assert silence_text(short[0]).startswith("No contact with Acme Ltd for 3 weeks")
    days = quiet_accounts(
        (ACME,), {"Acme Ltd": timedelta(days=3)}, {"Acme Ltd": NOW - timedelta(days=9)}, NOW
    )
    assert "for 9 days" in silence_text(days[0])
