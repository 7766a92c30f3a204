"""A digest's figures in words: the context of `templates/digest.*` (local times, durations,
percentages, names beside addresses).  The figures themselves are `digest_figures.py`'s.

Times are in the agency's timezone, named once at the end of the email; the lines per
account, manager and person say every status they count, in `report`'s words, so they
add up.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.core.durations import human_duration
from mailwatch.core.model import Policy
from mailwatch.core.stats import Summary
from mailwatch.digest_sections import context as sections_context
from mailwatch.output import counts_text
from mailwatch.revisions import revisions_text

if TYPE_CHECKING:
    from mailwatch.config import Settings

BREACHES_SHOWN = 50  # in the email; the `.json` and `mailwatch lessons` have them all
GREEN, RED, GREY = "#15803d", "#b91c1c", "#4b5563"
UP, DOWN, SAME = "↑", "↓", "→"


def digest_context(
    settings: Settings, recipient: str, accounts: tuple[str, ...] | None, figures: dict[str, Any]
) -> dict[str, Any]:
    policy = settings.policy
    zone = ZoneInfo(policy.timezone)
    member = next((s for s in policy.staff if s.email == recipient), None)
    summary = Summary(**figures["summary"])
    breaches = figures["breaches"]
    return {
        "agency": settings.agency_name,
        "recipient_name": member.name if member and member.name else recipient,
        "scope": "the whole agency" if accounts is None else ", ".join(accounts),
        "period": figures["period"]["label"],
        "timezone": zone.key,
        "no_data": figures["no_data"],
        "summary": {
            **_summary_text(summary),
            "compliance_text": "no data" if figures["no_data"] else _percent(summary.compliance),
        },
        "headline_colour": _headline_colour(summary),
        "trends": _trend_lines(figures["trend"], figures["period"]["kind"]),
        "accounts": [
            {"name": name, **_summary_text(Summary(**s))} for name, s in figures["accounts"].items()
        ],
        "managers": [
            {"name": _person(who, policy), **_summary_text(Summary(**s))}
            for who, s in figures["managers"].items()
        ],
        "people": [
            {"name": _person(who, policy), **_summary_text(Summary(**s))}
            for who, s in figures["people"].items()
        ],
        "breaches": [_breach_text(b, zone, policy) for b in breaches[:BREACHES_SHOWN]],
        "breach_count": len(breaches),
        "breaches_not_shown": max(0, len(breaches) - BREACHES_SHOWN),
        "lessons_command": _lessons_command(figures["period"], zone),
        "without_reason": [
            f"{_person(who, policy)}: {count} breach{'es' if count != 1 else ''} without a reason"
            for who, count in figures["breaches_without_reason"].items()
        ],
        "worst": [
            {
                "account": w["account"],
                "subject": _subject(w["subject"]),
                "wait": human_duration(w["wait_seconds"]),
                "status": w["status"],
                "responsible": _people(w["responsible"], policy),
                "replied": _replied_by(w["responder"], policy) if w["answered"] else "no reply yet",
                "received": _local(w["received_at"], zone),
                "unseen_reply": w["reply_possibly_unseen"],
                "answered_command": f"mailwatch answered '{w['opened_by']}' --at DATE",
            }
            for w in figures["worst_waits"]
        ],
        "waivers": [
            {
                "account": w["account"],
                "subject": _subject(w["subject"]),
                "by": w["by"],
                "reason": w["reason"] or "no reason given",
            }
            for w in figures["waivers"]
        ],
        "waivers_to_check": [
            {
                "account": w["account"],
                "subject": _subject(w["subject"]),
                "via": w["via"],
                "by": w["by"],
                "when": _local(w["seen_at"], zone),
                "reason": w["reason"] or "no reason given",
                "warnings": ", ".join(w["warnings"]),
            }
            for w in figures["waivers_to_check"]
        ],
        "skipped": [
            {
                "account": s["account"] or "?",
                "subject": _subject(s["subject"]),
                "stage": s["stage"],
                "recipient": s["recipient"],
                "reason": s["reason"] or "",
            }
            for s in figures["skipped_nudges"]
        ],
        "sync_line": _sync_line(figures["sync"], figures["no_data"], zone),
        "revisions": revisions_text(figures["revisions"], zone),
        # a new section's words go here, beside its figures' key
        "sections": sections_context(figures, zone, policy),
    }


def _breach_text(breach: dict[str, Any], zone: ZoneInfo, policy: Policy) -> dict[str, Any]:
    if breach["answered_at"] is None:
        answered = "no reply yet"
    else:
        via = breach["answered_via"]
        how = f" ({via})" if via and via != "email" else ""
        by = f" by {_person(breach['responder'], policy)}" if breach["responder"] else ""
        answered = f"answered {_local(breach['answered_at'], zone)}{by}{how}"
    return {
        "account": breach["account"],
        "subject": _subject(breach["subject"]),
        "status": breach["status"],
        "late": human_duration(max(0, breach["late_seconds"])),
        "tier": f"{breach['tier']}, {human_duration(breach['target_seconds'])} target",
        "received": _local(breach["received_at"], zone),
        "answered": answered,
        "responsible": _people(breach["responsible"], policy),
        "reason": (
            f"{breach['reason']} ({breach['reason_category']})"
            if breach["reason"]
            else "no reason recorded yet"
        ),
    }


def _lessons_command(period: dict[str, Any], zone: ZoneInfo) -> str:
    """The command that lists every breach of the period: its dates, agency timezone."""
    since, until = (_local_date(period[end], zone) for end in ("start", "end"))
    return f"mailwatch lessons --since {since} --until {until}"


def _trend_lines(trend: dict[str, Any], kind: str) -> list[str]:
    """One line per figure, an arrow and words (they read without colour): "↓ Compliance
    down 5 points from 80% in week 47 (…); 4-week average: 78% (↓ down 3 points)"."""
    before = trend["previous"]["label"]
    counted, total = trend["periods_with_data"], len(trend["periods"])
    average = (
        f"{total}-{kind} average"
        if counted == total
        else f"average of the {counted} {kind}{'s' if counted != 1 else ''} with mail "
        f"among the {total} before"
    )
    lines = []
    for figure, name in (
        ("compliance", "Compliance"),
        ("requests", "Requests"),
        ("median_response_seconds", "Median reply"),
    ):
        values = trend[figure]
        if values["current"] is None or values["previous"] is None:
            line = f"{SAME} {name}: no comparison with {before}: nothing measured in one of the two"
        else:
            change = values["change_from_previous"]
            line = f"{_arrow(change)} {name} {_change_words(figure, change)} from "
            line += f"{_shown(figure, values['previous'])} in {before}"
        if values["current"] is not None and values["average"] is not None:
            change = values["change_from_average"]
            line += (
                f"; {average}: {_shown(figure, values['average'])}"
                f" ({_arrow(change)} {_change_words(figure, change)})"
            )
        lines.append(line + ".")
    return lines


def _change_words(figure: str, change: float) -> str:
    """ "down 50 points", "up 3", "up 1h 30m", "unchanged"."""
    if figure == "compliance":
        points = round(change * 100)
        amount = f"{abs(points)} point{'s' if abs(points) != 1 else ''}" if points else ""
    elif figure == "requests":
        amount = _shown(figure, abs(change)) if round(change, 1) else ""
    else:
        amount = human_duration(round(abs(change))) if round(change) else ""
    if not amount:
        return "unchanged"
    return f"{'up' if change > 0 else 'down'} {amount}"


def _arrow(change: float) -> str:
    return SAME if abs(change) < 0.005 else UP if change > 0 else DOWN


def _shown(figure: str, value: float) -> str:
    if figure == "compliance":
        return _percent(value)
    if figure == "requests":
        return f"{value:.1f}".removesuffix(".0")
    return human_duration(round(value))


def _headline_colour(summary: Summary) -> str:
    if summary.compliance is None:
        return GREY
    return GREEN if summary.breached + summary.overdue == 0 else RED


def _subject(subject: str | None) -> str:
    return " ".join((subject or "").split()) or "(no subject)"


def _person(address: str, policy: Policy) -> str:
    member = next((s for s in policy.staff if s.email == address), None)
    return f"{member.name} ({address})" if member and member.name else address


def _people(addresses: list[str], policy: Policy) -> str:
    return ", ".join(_person(a, policy) for a in addresses) or "nobody"


def _replied_by(responder: str | None, policy: Policy) -> str:
    return f"replied by {_person(responder, policy)}" if responder else "replied"


def _summary_text(summary: Summary) -> dict[str, Any]:
    def duration(seconds: float | int | None) -> str:
        return "n/a" if seconds is None else human_duration(round(seconds))

    return {
        **summary.as_dict(),
        "compliance_text": _percent(summary.compliance),
        "counts": counts_text(summary),
        "median": duration(summary.median_response_seconds),
        "p90": duration(summary.p90_response_seconds),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _sync_line(sync: dict[str, Any], no_data: bool, zone: ZoneInfo) -> str:
    if no_data:
        lead = "No data: no client email was received and no mailbox synced in the period."
        gaps = "; ".join(f"{g['mailbox']}: {_gap(g, zone)}" for g in sync["gaps"])
        return f"{lead} {gaps}." if gaps else lead
    if not sync["mailboxes"]:
        return "Sync: no mailboxes are configured."
    if not sync["gaps"]:
        return f"Sync: all {sync['mailboxes']} mailboxes synced without gaps in the period."
    gaps = "; ".join(f"{g['mailbox']}: {_gap(g, zone)}" for g in sync["gaps"])
    return f"Sync gaps (figures may be incomplete): {gaps}."


def _gap(gap: dict[str, Any], zone: ZoneInfo) -> str:
    condition = gap["condition"]
    if condition == "stale":
        return f"no successful sync since {_local(gap['at'], zone)}"
    if condition == "errors":
        return f"errors in the period (last at {_local(gap['at'], zone)})"
    if condition == "folder_errors":
        return f"folder errors in the period: {', '.join(gap['folders'])}"
    return "never synced"


def _instant(iso_text: str) -> datetime:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00"))


def _local(iso_text: str, zone: ZoneInfo) -> str:
    local = _instant(iso_text).astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"


def _local_date(iso_text: str, zone: ZoneInfo) -> str:
    return _instant(iso_text).astimezone(zone).date().isoformat()
