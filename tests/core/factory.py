"""Small builders for core values, so clock tests read as tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from mailwatch.core.model import (
    Account,
    BusinessHours,
    ClockKind,
    Copy,
    Leave,
    Message,
    Policy,
    StaffMember,
    Tier,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)  # Monday 23 November 2026, 00:00 UTC


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant in the week of MONDAY: at(0, 9) is Monday 09:00 UTC, at(5, 10) Saturday 10:00."""
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def policy(**overrides) -> Policy:
    base = dict(
        agency_domains=("rouge.example",),
        timezone="UTC",
        staff=(
            StaffMember("alice@rouge.example", "Alice", aliases=("a.smith@rouge.example",)),
            StaffMember("bob@rouge.example", "Bob"),
            StaffMember("carol@rouge.example", "Carol"),
            StaffMember("head@rouge.example", "Head"),
        ),
        accounts=(
            Account(
                "Acme Ltd",
                domains=("acme.example",),
                manager="alice@rouge.example",
                backups=("bob@rouge.example",),
            ),
            Account(
                "Globex",
                domains=("globex.example",),
                addresses=("ceo@gmail.example",),
                manager="carol@rouge.example",
                backups=("bob@rouge.example",),
            ),
        ),
        head_of_client_management=("head@rouge.example",),
        tiers=(
            Tier(
                "critical",
                timedelta(hours=1),
                subject_patterns=(r"(?i)\b(site|website|server) (is )?down\b", r"(?i)\boutage\b"),
                high_priority=True,
            ),
        ),
        business_hours=BusinessHours(timezone="Europe/London"),
        leave=(),
    )
    base.update(overrides)
    return Policy(**base)


def business_policy(**hours) -> Policy:
    return policy(
        clock=ClockKind.BUSINESS,
        target=timedelta(hours=8, minutes=30),
        business_hours=BusinessHours(timezone="Europe/London", **hours),
    )


def client(
    key: str,
    when: datetime,
    subject: str = "Homepage banner",
    *,
    frm: str = "jane@acme.example",
    to: tuple[str, ...] = ("alice@rouge.example",),
    cc: tuple[str, ...] = (),
    refs: tuple[str, ...] = (),
    mailbox: str = "alice",
    headers: tuple[tuple[str, str], ...] = (),
    courtesy: bool = False,
    waive_keyword: bool = False,
    date_header: datetime | None = None,
) -> Message:
    """A client message that arrived in a staff inbox at `when`."""
    return Message(
        key=f"<{key}>",
        from_addr=frm,
        to=to,
        cc=cc,
        subject=subject,
        date=date_header or when,
        in_reply_to=refs[-1:],
        references=refs,
        headers=headers,
        courtesy=courtesy,
        copies=(
            Copy(
                mailbox,
                "INBOX",
                internal_date=when,
                waive_keyword=waive_keyword,
                waive_seen_at=when if waive_keyword else None,
            ),
        ),
    )


def staff(
    key: str,
    when: datetime,
    subject: str = "Re: Homepage banner",
    *,
    frm: str = "alice@rouge.example",
    to: tuple[str, ...] = ("jane@acme.example",),
    cc: tuple[str, ...] = (),
    refs: tuple[str, ...] = (),
    mailbox: str = "alice",
    date_header: datetime | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    sender: str | None = None,
) -> Message:
    """A staff message whose Sent copy the server stored at `when`."""
    return Message(
        key=f"<{key}>",
        from_addr=frm,
        sender_addr=sender,
        to=to,
        cc=cc,
        subject=subject,
        date=date_header if date_header is not None else when,
        in_reply_to=refs[-1:],
        references=refs,
        headers=headers,
        copies=(Copy(mailbox, "Sent", sent_folder=True, internal_date=when),),
    )


def leave(who: str, start: date, end: date) -> Leave:
    return Leave(who, start, end)
