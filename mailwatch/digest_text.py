"""A digest's figures in words: the context of `templates/digest.*` (local times, durations,
percentages, names instead of addresses).  The figures themselves are `digest_figures.py`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.core.durations import human_duration
from mailwatch.core.model import Policy
from mailwatch.core.periods import Period
from mailwatch.core.stats import Summary
from mailwatch.revisions import revisions_text

if TYPE_CHECKING:
    from mailwatch.config import Settings


def digest_context(
    settings: Settings,
    recipient: str,
    accounts: tuple[str, ...] | None,
    figures: dict[str, Any],
    before: Period,
) -> dict[str, Any]:
    policy = settings.policy
    member = next((s for s in policy.staff if s.email == recipient), None)
    zone = ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
    summary = Summary(**figures["summary"])
    previous = Summary(**figures["previous"]["summary"])
    return {
        "agency": settings.agency_name,
        "recipient_name": member.name if member and member.name else recipient,
        "scope": "the whole agency" if accounts is None else ", ".join(accounts),
        "period": figures["period"]["label"],
        "previous_period": before.label,
        "timezone": zone.key,
        "summary": _summary_text(summary),
        "trend": _trend(summary, previous, before.label),
        "accounts": [
            {"name": name, **_summary_text(Summary(**s))} for name, s in figures["accounts"].items()
        ],
        "people": [
            {"name": _person(name, policy), **_summary_text(Summary(**s))}
            for name, s in figures["people"].items()
        ],
        "worst": [
            {
                "account": w["account"],
                "subject": _subject(w["subject"]),
                "wait": human_duration(w["wait_seconds"]),
                "status": w["status"],
                "who": w["responder"] or ", ".join(w["responsible"]) or "nobody",
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
        "sync_line": _sync_line(figures["sync"]),
        "revisions": revisions_text(figures["revisions"], zone),
    }


def _subject(subject: str | None) -> str:
    return " ".join((subject or "").split()) or "(no subject)"


def _person(address: str, policy: Policy) -> str:
    member = next((s for s in policy.staff if s.email == address), None)
    return f"{member.name} ({address})" if member and member.name else address


def _summary_text(summary: Summary) -> dict[str, Any]:
    def duration(seconds: float | int | None) -> str:
        return "n/a" if seconds is None else human_duration(round(seconds))

    return {
        **summary.as_dict(),
        "compliance_text": _percent(summary.compliance),
        "median": duration(summary.median_response_seconds),
        "p90": duration(summary.p90_response_seconds),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _trend(now: Summary, before: Summary, label: str) -> str:
    if now.compliance is None or before.compliance is None:
        return f"No comparison with {label}: nothing measured in one of the two."
    points = round((now.compliance - before.compliance) * 100)
    if points == 0:
        return f"Compliance unchanged from {label} ({_percent(before.compliance)})."
    direction = "up" if points > 0 else "down"
    return (
        f"Compliance {direction} {abs(points)} point{'s' if abs(points) != 1 else ''} "
        f"from {_percent(before.compliance)} in {label}."
    )


def _sync_line(sync: dict[str, Any]) -> str:
    if not sync["mailboxes"]:
        return "Sync: no mailboxes are configured."
    if not sync["gaps"]:
        return f"Sync: all {sync['mailboxes']} mailboxes synced without gaps in the period."
    gaps = "; ".join(f"{g['mailbox']}: {g['problem']}" for g in sync["gaps"])
    return f"Sync gaps (figures may be incomplete): {gaps}."


def _local(instant: str, zone: ZoneInfo) -> str:
    local = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
