"""Figures that never change silently: what each sent digest and client report showed is
kept (`store/figures.py`), and today's figures of those periods are compared with it.

The first report of a period is the reference: an agency digest lists, for each of the
`LOOKBACK` periods of its kind before its own, every figure that changed since that period
was first reported, old and new, and why, as far as the requests tell (a request answered
or waived since, an answer recorded outside email, a deadline that passed, mail that
arrived late, a changed configuration).  `report --as-reported` shows one period's figures
as first sent next to today's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.claims import DIGEST
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Request, Status, policy_fingerprint
from mailwatch.core.periods import Period, last_complete, previous
from mailwatch.core.stats import Outcome, outcome_of, summarize
from mailwatch.output import iso
from mailwatch.requests_as_of import requests_as_of
from mailwatch.store.figures import ReportedFigures

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

LOOKBACK = 4  # a digest lists the revisions of the four periods of its kind before its own
FIGURES = (
    "requests",
    "met",
    "breached",
    "overdue",
    "open",
    "waived",
    "compliance",
    "median_response_seconds",
    "p90_response_seconds",
)
FIGURE_NAMES = {
    "median_response_seconds": "median reply",
    "p90_response_seconds": "p90 reply",
}
AGENCY = "agency"
FINAL = (Status.MET.value, Status.BREACHED.value)
WAITING = (Status.OPEN.value, Status.OVERDUE.value)


def period_json(period: Period) -> dict[str, Any]:
    return {
        "kind": period.kind,
        "key": period.key,
        "label": period.label,
        "start": iso(period.start),
        "end": iso(period.end),
    }


def to_keep(
    kind: str,
    period: Period,
    recipient: str,
    figures: dict[str, Any],
    requests: Sequence[Request],
    settings: Settings,
    now: datetime,
) -> ReportedFigures:
    """What a sent report showed, as the store keeps it."""
    return ReportedFigures(
        kind=kind,
        period_key=period.key,
        period_start=period.start,
        period_end=period.end,
        recipient=recipient,
        figures={"period": period_json(period), **figures},
        statuses={r.opened_by: r.status.value for r in requests},
        policy=policy_fingerprint(settings.policy),
        reported_at=now,
    )


def first_agency_report(store: Store, period_key: str) -> ReportedFigures | None:
    """The reference: the first agency digest sent for the period."""
    return next(
        (
            reported
            for reported in store.reported_figures(DIGEST, [period_key])
            if reported.figures.get("scope") == AGENCY
        ),
        None,
    )


def lookback(period: Period, timezone: str) -> list[Period]:
    """The `LOOKBACK` periods of its kind before `period`, oldest first."""
    earlier = [previous(period, timezone)]
    while len(earlier) < LOOKBACK:
        earlier.insert(0, previous(earlier[0], timezone))
    return earlier


def digest_revisions(
    settings: Settings,
    references: Sequence[ReportedFigures | None],
    earlier: Sequence[Period],
    outcomes: Sequence[Sequence[Outcome]],
    requests: Sequence[Request],
) -> list[dict[str, Any]]:
    """The revisions to the `earlier` periods, oldest first, against `references`: the first
    agency report of each (`first_agency_report`); as of today, `outcomes`: those of the
    requests received in each; `requests`: in full, at least each whose status changed
    since its period was reported (any others are passed over)."""
    found = []
    for period, reference, within in zip(earlier, references, outcomes, strict=True):
        if reference is None:
            continue
        changed = [r for r in requests if period.start <= r.received_at < period.end]
        revision = compare(reference, within, changed, settings)
        if revision["figures"]:
            found.append(revision)
    return found


def compare(
    reference: ReportedFigures,
    outcomes: Sequence[Outcome],
    requests: Sequence[Request],
    settings: Settings,
) -> dict[str, Any]:
    """Each figure of the agency and of every account that differs today, and why:
    `outcomes` of every request of the period, and in full at least those whose status
    changed since (`requests`, in stored order)."""
    today = scoped_summaries(outcomes, reference.figures["accounts"])
    changed = []
    for scope, summary in today.items():
        old = reference.figures["summary"] if scope == AGENCY else reference.figures["accounts"]
        reported = old if scope == AGENCY else old.get(scope) or summarize(()).as_dict()
        changed += [
            {"scope": scope, "figure": name, "old": reported[name], "new": summary[name]}
            for name in FIGURES
            if reported[name] != summary[name]
        ]
    return {
        "period": reference.figures["period"],
        "reported_at": iso(reference.reported_at),
        "figures": changed,
        "why": _why(reference, outcomes, requests, settings) if changed else [],
    }


def scoped_summaries(
    requests: Sequence[Outcome], reported_accounts: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The agency's summary, then each account's: those reported and any new since."""
    of_account: dict[str, list[Outcome]] = {name: [] for name in reported_accounts}
    for request in requests:
        of_account.setdefault(request.account, []).append(request)
    return {
        AGENCY: summarize(requests).as_dict(),
        **{name: summarize(of_account[name]).as_dict() for name in sorted(of_account)},
    }


def _why(
    reference: ReportedFigures,
    outcomes: Sequence[Outcome],
    requests: Sequence[Request],
    settings: Settings,
) -> list[dict[str, Any]]:
    zone = ZoneInfo(settings.policy.timezone)
    reconfigured = reference.policy != policy_fingerprint(settings.policy)
    reasons = []
    if reconfigured:
        reasons.append(
            {
                "opened_by": None,
                "reason": "the configuration (targets, tiers, hours, staff or accounts) "
                "changed since it was reported",
            }
        )
    for request in requests:
        then = reference.statuses.get(request.opened_by)
        if then == request.status.value:
            continue
        reasons.append(
            {
                "opened_by": request.opened_by,
                "account": request.account,
                "subject": request.subject,
                "old": then,
                "new": request.status.value,
                "reason": _cause(request, then, reference.reported_at, reconfigured, zone),
            }
        )
    now_counted = {o.opened_by for o in outcomes}
    reasons += [
        {
            "opened_by": opened_by,
            "account": None,
            "subject": None,
            "old": status,
            "new": None,
            "reason": "no longer counted: its mail was threaded again, forgotten or re-evaluated",
        }
        for opened_by, status in reference.statuses.items()
        if opened_by not in now_counted
    ]
    return reasons


def _cause(
    request: Request, then: str | None, reported_at: datetime, reconfigured: bool, zone: ZoneInfo
) -> str:
    now = request.status.value
    if then is None:
        return "not counted then: its mail reached mailwatch after the report"
    if now == Status.WAIVED.value:
        waiver = request.waiver
        by = f" by {waiver.by}" if waiver else ""
        return f"waived{by}" + (f": {waiver.reason}" if waiver and waiver.reason else "")
    if then == Status.WAIVED.value:
        return "its waiver was taken back"
    if now in FINAL and then in WAITING:
        if request.answered_by is None:
            return "an answer was recorded outside email"
        when = request.answered_at
        late = when is not None and when > reported_at
        at = f" {_local(when, zone)}" if when else ""
        who = f" by {request.responder}" if request.responder else ""
        return f"answered{at}{who}" + (
            ", after it was reported" if late else ": a reply that reached mailwatch later"
        )
    if then == Status.OPEN.value and now == Status.OVERDUE.value:
        return "its deadline passed unanswered"
    if reconfigured:
        return "measured again under the changed configuration"
    return "measured again: mail that reached mailwatch later changed its thread"


def revisions_text(revisions: Sequence[dict[str, Any]], zone: ZoneInfo) -> list[dict[str, Any]]:
    """The revisions in words, for the digest's templates: per period, each scope's changes
    on one line ("compliance 50% → 100%; met 1 → 2"), then why."""
    found = []
    for revision in revisions:
        scopes: dict[str, list[str]] = {}
        for change in revision["figures"]:
            name = change["figure"]
            scopes.setdefault(change["scope"], []).append(
                f"{figure_name(name)} {shown(name, change['old'])} → {shown(name, change['new'])}"
            )
        found.append(
            {
                "period": revision["period"]["label"],
                "reported_at": _local(datetime.fromisoformat(revision["reported_at"]), zone),
                "scopes": [
                    {"name": "The whole agency" if scope == AGENCY else scope, "changes": changes}
                    for scope, changes in scopes.items()
                ],
                "why": [why_line(why) for why in revision["why"]],
            }
        )
    return found


def _local(instant: datetime, zone: ZoneInfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"


# ---------------------------------------------------------------- report --as-reported


@dataclass(frozen=True)
class AsReported:
    period: Period
    figures: dict[str, Any]  # the JSON of `report --as-reported --format json`


def as_reported(settings: Settings, store: Store, now: datetime, kind: str) -> AsReported:
    """The last complete period's figures as its digest first showed them, and today's.
    `figures` is empty when no agency digest reported the period."""
    period = last_complete(kind, now, settings.policy.timezone)
    reference = first_agency_report(store, period.key)
    if reference is None:
        return AsReported(period, {})
    requests = requests_as_of(settings, store, now, period.start, period.end)
    outcomes = [outcome_of(r) for r in requests]
    today = scoped_summaries(outcomes, reference.figures["accounts"])
    revision = compare(reference, outcomes, requests, settings)
    figures = {
        "period": period_json(period),
        "as_reported": {
            "reported_at": iso(reference.reported_at),
            "recipient": reference.recipient,
            "summary": reference.figures["summary"],
            "accounts": reference.figures["accounts"],
        },
        "now": {
            "generated_at": iso(now),
            "summary": today.pop(AGENCY),
            "accounts": today,
        },
        "revisions": revision["figures"],
        "why": revision["why"],
    }
    return AsReported(period, figures)


def as_reported_table(figures: dict[str, Any]) -> str:
    """The agency's figures then and now, one per line; each account's compliance; why."""
    reported, today = figures["as_reported"], figures["now"]
    lines = [
        f"{figures['period']['label']}: as first reported {reported['reported_at']} "
        f"(to {reported['recipient']}), and as of {today['generated_at']}",
        "",
        f"{'':<16}{'as reported':<14}now",
    ]
    for name in FIGURES:
        old, new = reported["summary"][name], today["summary"][name]
        mark = "  (changed)" if old != new else ""
        lines.append(
            f"{figure_name(name):<16}{shown(name, old):<14}{shown(name, new)}{mark}".rstrip()
        )
    accounts = sorted(set(reported["accounts"]) | set(today["accounts"]))
    if accounts:
        lines += ["", "Compliance by account"]
    for account in accounts:
        old = reported["accounts"].get(account, {}).get("compliance")
        new = today["accounts"].get(account, {}).get("compliance")
        mark = "  (changed)" if old != new else ""
        lines.append(
            f"  {account}: {shown('compliance', old)} as reported, {shown('compliance', new)} now"
            + mark
        )
    if figures["why"]:
        lines += ["", "Why"]
        lines += [f"  {why_line(why)}" for why in figures["why"]]
    return "\n".join(lines)


def figure_name(name: str) -> str:
    return FIGURE_NAMES.get(name, name)


def shown(name: str, value: Any) -> str:
    """A figure as people read it: 50%, 2h 24m, 3, n/a."""
    if value is None:
        return "n/a"
    if name == "compliance":
        return f"{value:.0%}"
    if name in FIGURE_NAMES:
        return human_duration(round(value))
    return str(value)


def why_line(why: dict[str, Any]) -> str:
    reason = str(why["reason"])
    if why["opened_by"] is None:
        return f"{reason[0].upper()}{reason[1:]}."
    subject = " ".join((why["subject"] or "").split()) or why["opened_by"]
    account = f" ({why['account']})" if why["account"] else ""
    was = why["old"] or "not counted"
    now = why["new"] or "not counted"
    return f'"{subject}"{account}: {was} then, {now} now: {reason}.'
