"""The digest sections that look past the compliance figures: busiest hours, senders nobody
configured, accounts gone quiet, and open lessons by owner (issues 14 and 18).

`DigestSections.gather` asks the store once per digest run; `figures` gives each digest's
part of the `.json`, `context` turns those figures into what `templates/digest_sections.*`
show.  The agency digest has all four; a manager's digest, the quiet accounts they manage
and the open lessons they own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.core.addresses import Directory
from mailwatch.core.busiest import DAYS, HOURS, HourOfWeek, hour_of_week
from mailwatch.core.check_ins import QuietAccount, quiet_accounts, silence_text
from mailwatch.core.durations import human_duration
from mailwatch.core.lessons import Lesson, lesson_of
from mailwatch.core.model import Policy, Request
from mailwatch.core.periods import Period
from mailwatch.output import iso
from mailwatch.unconfigured import unconfigured_json

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store, UnconfiguredSender

BUSIEST_LISTED = 8  # hours named (the text, `busiest` in the JSON); the HTML and JSON have the grid
NO_OWNER = "no owner yet"
# cell shades by a cell's share of the busiest hour's requests: light enough for dark text
_SHADES = ("#ffffff", "#e0f2fe", "#bae6fd", "#7dd3fc", "#38bdf8")


@dataclass(frozen=True)
class OpenLesson:
    lesson: Lesson
    request: Request | None  # None: its request is older than the digest looks back


@dataclass(frozen=True)
class DigestSections:
    settings: Settings
    now: datetime
    unconfigured: list[UnconfiguredSender]  # seen in the period
    quiet: list[QuietAccount]
    open_lessons: list[OpenLesson]

    @classmethod
    def gather(
        cls,
        settings: Settings,
        store: Store,
        period: Period,
        known: Sequence[Request],
        lessons: Mapping[str, Lesson],
        now: datetime,
    ) -> DigestSections:
        """`known`: the requests the digest run loaded; `lessons`: as of `now`."""
        policy = settings.policy
        check_in_after = {a.name: settings.check_ins.after_for(a.name) for a in policy.accounts}
        watched = [name for name, after in check_in_after.items() if after is not None]
        directory = Directory(policy)
        contacts = store.last_contacts(now, directory.account_of, watched) if watched else {}
        return cls(
            settings=settings,
            now=now,
            unconfigured=store.unconfigured_senders(period.start, period.end),
            quiet=quiet_accounts(policy.accounts, check_in_after, contacts, now),
            open_lessons=_open_lessons(known, lessons),
        )

    def figures(
        self, recipient: str, accounts: tuple[str, ...] | None, received: Sequence[Request]
    ) -> dict[str, Any]:
        """This digest's part of the `.json`; `received`: its requests of the period."""
        if accounts is None:
            return {
                "busiest_hours": _busiest_json(received, self.settings.policy.timezone),
                "unconfigured": unconfigured_json(self.unconfigured),
                "quiet_accounts": [self._quiet_json(q) for q in self.quiet],
                "open_lessons": [self._lesson_json(o) for o in self.open_lessons],
            }
        return {
            "quiet_accounts": [
                self._quiet_json(q)
                for q in self.quiet
                if q.account in accounts and q.manager == recipient
            ],
            "open_lessons": [
                self._lesson_json(o) for o in self.open_lessons if o.lesson.owner == recipient
            ],
        }

    def _quiet_json(self, quiet: QuietAccount) -> dict[str, Any]:
        return {
            "account": quiet.account,
            "manager": quiet.manager,
            "last_contact": iso(quiet.last_contact),
            "silent_seconds": _seconds(quiet.silent_for),
            "check_in_after_seconds": _seconds(self.settings.check_ins.after_for(quiet.account)),
            "text": silence_text(quiet),
        }

    def _lesson_json(self, found: OpenLesson) -> dict[str, Any]:
        lesson, request = found.lesson, found.request
        return {
            "owner": lesson.owner,
            "message_key": lesson.message_key,
            "account": request.account if request else None,
            "subject": request.subject if request else None,
            "received_at": iso(request.received_at) if request else None,
            "reason": lesson.reason,
            "category": lesson.category,
            "action": lesson.action,
            "recorded_at": iso(lesson.recorded_at),
            "open_seconds": _seconds(self.now - lesson.recorded_at),
        }


def context(figures: Mapping[str, Any], zone: ZoneInfo, policy: Policy) -> dict[str, Any]:
    """What `templates/digest_sections.*` show, from a digest's figures; times in `zone`,
    staff by name."""
    busiest = figures.get("busiest_hours")
    if busiest and not any(any(row) for row in busiest["requests"]):
        busiest = None  # no grid of zeros
    return {
        "busiest": _busiest_rows(busiest) if busiest else None,
        "busiest_lines": _busiest_lines(busiest) if busiest else [],
        "breach_lines": _breach_lines(busiest) if busiest else [],
        "busiest_timezone": busiest["timezone"] if busiest else "",
        "days": DAYS,
        "unconfigured": [
            {**sender, "last_seen": _local(sender["last_seen"], zone)}
            for sender in figures.get("unconfigured", [])
        ],
        "quiet": [
            {
                "text": quiet["text"],
                "manager": _named(quiet["manager"], policy) if quiet["manager"] else "no manager",
                "last_contact": _local(quiet["last_contact"], zone)
                if quiet["last_contact"]
                else "never",
            }
            for quiet in figures["quiet_accounts"]
        ],
        "lessons": _lessons_by_owner(figures["open_lessons"], zone, policy),
    }


# ---------------------------------------------------------------- busiest hours


def _busiest_json(received: Sequence[Request], timezone: str) -> dict[str, Any]:
    grid = hour_of_week(received, timezone)
    return {
        "timezone": timezone,
        "days": list(DAYS),
        "requests": [list(row) for row in grid.requests],  # [day][hour], Monday first
        "breaches": [list(row) for row in grid.breaches],
        "busiest": [_cell_json(grid, cell) for cell in grid.busiest(BUSIEST_LISTED)],
        "breaches_started": [_cell_json(grid, cell) for cell in grid.breach_cells()],
    }


def _cell_json(grid: HourOfWeek, cell: tuple[int, int]) -> dict[str, Any]:
    day, hour = cell
    return {
        "day": DAYS[day],
        "hour": hour,
        "requests": grid.requests[day][hour],
        "breaches": grid.breaches[day][hour],
    }


def _busiest_rows(busiest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """24 rows of 7 cells, each with its counts and shade."""
    top = max(max(row) for row in busiest["requests"])
    return [
        {
            "hour": f"{hour:02d}",
            "cells": [
                {
                    "requests": busiest["requests"][day][hour],
                    "breaches": busiest["breaches"][day][hour],
                    "shade": _shade(busiest["requests"][day][hour], top),
                }
                for day in range(len(DAYS))
            ],
        }
        for hour in range(HOURS)
    ]


def _shade(count: int, top: int) -> str:
    """White for none; the busiest hour darkest; any other hour at least the lightest tint."""
    return _SHADES[math.ceil(count * (len(_SHADES) - 1) / top)]


def _busiest_lines(busiest: Mapping[str, Any]) -> list[str]:
    return [
        f"{cell['day']} {cell['hour']:02d}:00: {cell['requests']} received"
        + (f", {cell['breaches']} breached or overdue" if cell["breaches"] else "")
        for cell in busiest["busiest"]
    ]


def _breach_lines(busiest: Mapping[str, Any]) -> list[str]:
    return [
        f"{cell['day']} {cell['hour']:02d}:00: {cell['breaches']} of {cell['requests']}"
        for cell in busiest["breaches_started"]
    ]


# ---------------------------------------------------------------- lessons


def _open_lessons(known: Sequence[Request], lessons: Mapping[str, Lesson]) -> list[OpenLesson]:
    """Each open lesson once: a request's latest lesson with its request; a lesson on a
    request the digest did not load, by itself."""
    found = []
    claimed: set[str] = set()
    for request in known:
        lesson = lesson_of(request, lessons)
        claimed.update(key for key in request.messages if key in lessons)
        if lesson is not None and lesson.is_open:
            found.append(OpenLesson(lesson, request))
    found += [
        OpenLesson(lesson, None)
        for key, lesson in lessons.items()
        if key not in claimed and lesson.is_open
    ]
    return sorted(found, key=lambda o: (o.lesson.recorded_at, o.lesson.message_key))


def _lessons_by_owner(
    lessons: Sequence[Mapping[str, Any]], zone: ZoneInfo, policy: Policy
) -> list[dict[str, Any]]:
    owners: dict[str, list[dict[str, Any]]] = {}
    for lesson in lessons:
        subject = " ".join((lesson["subject"] or "").split()) or lesson["message_key"]
        owner = _named(lesson["owner"], policy) if lesson["owner"] else NO_OWNER
        owners.setdefault(owner, []).append(
            {
                "account": lesson["account"] or "?",
                "subject": subject,
                "reason": lesson["reason"],
                "action": lesson["action"] or "no action yet",
                "open_for": human_duration(lesson["open_seconds"]),
                "recorded": _local(lesson["recorded_at"], zone),
            }
        )
    return [{"owner": owner, "lessons": items} for owner, items in sorted(owners.items())]


# ---------------------------------------------------------------- shared


def _named(address: str, policy: Policy) -> str:
    member = next((s for s in policy.staff if s.email == address), None)
    return f"{member.name} ({address})" if member and member.name else address


def _seconds(duration: timedelta | None) -> int | None:
    return None if duration is None else int(duration.total_seconds())


def _local(instant: str, zone: ZoneInfo) -> str:
    local = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%Y} {local:%H:%M}"
