"""Service reports a client can read: one account's figures for the last complete month or
quarter, as HTML (to print to PDF or forward), JSON and CSV; and sending them on schedule.

A client may see the agency's promise, its own requests counted by tier, the share answered
within target, the median and p90 time to first reply, a twelve-month trend and its busiest
days.  Everything shown is built from counts and times of that account's requests only, so
no member of staff, other client, subject or reason for a breach or a waiver can reach any
format.

Scheduled reports (`[[accounts]] client_report`) go to the account's manager and backups,
never to the client: they forward it.  Each (period and account, recipient) is claimed
before sending (kind `claims.CLIENT_REPORT`), so a report is sent at most once, whichever
process or run builds it; a temporary SMTP failure releases the claim for the next run.
A sent report keeps the figures it showed (`revisions.py`), once per account and period.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.adapters.render import RenderedEmail, Renderer
from mailwatch.adapters.smtp import Attachment, Mailer, NotConfigured, TransportError
from mailwatch.claims import CLIENT_REPORT, client_report_key
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Account, BusinessHours, ClockKind, Policy, Request
from mailwatch.core.periods import Period, last_complete, previous
from mailwatch.core.stats import Summary, summarize
from mailwatch.output import iso
from mailwatch.requests_as_of import requests_as_of
from mailwatch.revisions import to_keep

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

TREND_MONTHS = 12
BUSIEST_DAYS = 3
STANDARD_TIER = "standard"  # requests that no [[sla.tiers]] entry matched
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class UnknownAccount(Exception):
    pass


@dataclass(frozen=True)
class ClientReport:
    account: str
    period: Period
    months: tuple[Period, ...]  # the trend, oldest first, ending with the period's last month
    figures: dict[str, Any]  # the JSON of interface.md
    rendered: RenderedEmail  # html: the report; subject and text: the email that carries it
    requests: tuple[Request, ...]  # of the period: their statuses are kept once sent

    @property
    def stem(self) -> str:
        """The file name without extension: "month-2026-11-acme-ltd"."""
        return f"{self.period.slug}-{_slug(self.account)}"

    def as_json(self) -> str:
        return json.dumps(self.figures, indent=1, ensure_ascii=False)

    def as_csv(self) -> str:
        """One row per figure set: the period, each tier, each month of the trend."""
        fields = ["account", "section", "name", "since", "until", *Summary.__dataclass_fields__]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        since, until = self.figures["period"]["since"], self.figures["period"]["until"]
        rows = [("period", "", since, until, self.figures["summary"])]
        rows += [("tier", name, since, until, s) for name, s in self.figures["tiers"].items()]
        rows += [
            ("month", entry["month"], iso(month.start), iso(month.end), entry["summary"])
            for entry, month in zip(self.figures["months"], self.months, strict=True)
        ]
        for section, name, start, end, summary in rows:
            writer.writerow(
                {"account": self.account, "section": section, "name": name}
                | {"since": start, "until": end, **summary}
            )
        return out.getvalue()

    def render(self, fmt: str) -> str:
        """The report as "html", "json" or "csv"."""
        if fmt == "json":
            return self.as_json()
        if fmt == "csv":
            return self.as_csv()
        return self.rendered.html

    def write(self, directory: Path, fmt: str) -> Path:
        path = directory / f"{self.stem}.{fmt}"
        path.write_text(self.render(fmt), encoding="utf-8")
        return path


def build_client_report(
    settings: Settings,
    store: Store,
    now: datetime,
    account_name: str,
    kind: str,
    renderer: Renderer,
) -> ClientReport:
    """The report of the last complete `kind` ("month" or "quarter") before `now`."""
    policy = settings.policy
    account = _account(policy, account_name)
    period = last_complete(kind, now, policy.timezone)
    months = _trend_months(period, policy.timezone)
    received = [
        r
        for r in requests_as_of(settings, store, now, months[0].start, period.end)
        if r.account == account.name
    ]
    in_period = _received_in(received, period)
    figures = {
        "account": account.name,
        "period": {"since": iso(period.start), "until": iso(period.end)},
        "summary": summarize(in_period).as_dict(),
        "tiers": {
            name: summarize(r for r in in_period if r.tier == name).as_dict()
            for name in _tier_names(policy, in_period)
        },
        "months": [
            {"month": month.key.partition(":")[2], "summary": _summary(received, month)}
            for month in months
        ],
    }
    context = _context(settings, account, period, months, figures, in_period, now)
    rendered = renderer.render("client_report", context)
    return ClientReport(account.name, period, tuple(months), figures, rendered, tuple(in_period))


def _trend_months(period: Period, timezone: str) -> list[Period]:
    """The twelve calendar months that end with the period's last month, oldest first."""
    months = [last_complete("month", period.end, timezone)]
    while len(months) < TREND_MONTHS:
        months.insert(0, previous(months[0], timezone))
    return months


def _account(policy: Policy, name: str) -> Account:
    found = next((account for account in policy.accounts if account.name == name), None)
    if found is None:
        configured = ", ".join(account.name for account in policy.accounts) or "none"
        raise UnknownAccount(f"no account is named {name!r}; configured accounts: {configured}")
    return found


def _received_in(requests: Sequence[Request], period: Period) -> list[Request]:
    return [r for r in requests if period.start <= r.received_at < period.end]


def _summary(requests: Sequence[Request], period: Period) -> dict[str, Any]:
    return summarize(_received_in(requests, period)).as_dict()


def _tier_names(policy: Policy, requests: Sequence[Request]) -> list[str]:
    """The configured tiers in order, then standard, then any a past configuration named."""
    names = [tier.name for tier in policy.tiers] + [STANDARD_TIER]
    return names + sorted({r.tier for r in requests} - set(names))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "account"


# ---------------------------------------------------------------- words for the client


def _context(
    settings: Settings,
    account: Account,
    period: Period,
    months: Sequence[Period],
    figures: dict[str, Any],
    requests: Sequence[Request],
    now: datetime,
) -> dict[str, Any]:
    policy = settings.policy
    zone = ZoneInfo(policy.timezone)
    clock = account.clock or policy.clock
    hours = account.business_hours or policy.business_hours
    standard_target = account.target or policy.target
    promise = [
        {
            "tier": tier.name,
            "target": _in_words(tier.target),
            "clock": _clock_words(tier.clock or clock, hours),
        }
        for tier in policy.tiers
    ]
    targets = {tier.name: _in_words(tier.target) for tier in policy.tiers}
    targets[STANDARD_TIER] = _in_words(standard_target)
    return {
        "agency": settings.agency_name,
        "account": account.name,
        "period": period.label,
        "target": _in_words(standard_target),
        "clock": _clock_words(clock, hours),
        "tier_promises": promise,
        "summary": _summary_text(figures["summary"]),
        "tiers": [
            {"name": name, "target": targets.get(name, "–"), **_summary_text(summary)}
            for name, summary in figures["tiers"].items()
        ],
        "months": [
            {"label": f"{month.start.astimezone(zone):%b %Y}", **_summary_text(entry["summary"])}
            for month, entry in zip(months, figures["months"], strict=True)
        ],
        "busiest": _busiest_days(requests, zone),
        "prepared": _day_words(now.astimezone(zone).date()) + f" {now.astimezone(zone):%Y}",
        "timezone": policy.timezone,
    }


def _summary_text(summary: dict[str, Any]) -> dict[str, Any]:
    measured = summary["met"] + summary["breached"] + summary["overdue"]
    compliance = summary["compliance"]
    return {
        **summary,
        "measured": measured,
        "percent": "–" if compliance is None else f"{compliance:.0%}",
        "bar": 0 if compliance is None else round(compliance * 100),
        "median": _duration(summary["median_response_seconds"]),
        "p90": _duration(summary["p90_response_seconds"]),
    }


def _duration(seconds: float | None) -> str:
    return "–" if seconds is None else human_duration(round(seconds))


def _busiest_days(requests: Sequence[Request], zone: ZoneInfo) -> list[dict[str, Any]]:
    counts = Counter(r.received_at.astimezone(zone).date() for r in requests)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:BUSIEST_DAYS]
    return [{"day": _day_words(day), "requests": count} for day, count in ranked]


def _day_words(day: date) -> str:
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {day:%B}"


def _in_words(duration: timedelta) -> str:
    """24 hours, 1 hour, 8 hours 30 minutes, 3 days, 45 minutes."""
    seconds = int(duration.total_seconds())
    days, rest = divmod(seconds, 86400)
    if days >= 2 and not rest:
        return f"{days} days"
    hours, minutes = seconds // 3600, seconds % 3600 // 60
    parts = [_plural(hours, "hour"), _plural(minutes, "minute")]
    return " ".join(part for part in parts if part) or "1 minute"


def _plural(count: int, unit: str) -> str:
    if not count:
        return ""
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _clock_words(clock: ClockKind, hours: BusinessHours) -> str:
    if clock is ClockKind.CALENDAR:
        return "around the clock, weekends and holidays included"
    excluded = []
    if hours.holidays != frozenset():  # a `holidays` calendar, filled in lazily
        excluded.append("public holidays")
    if hours.closed:
        excluded.append("the days our office is closed")
    tail = f", excluding {' and '.join(excluded)}" if excluded else ""
    return (
        f"in business hours: {_days_words(hours.days)}, "
        f"{hours.start:%H:%M}–{hours.end:%H:%M} ({hours.timezone}){tail}"
    )


def _days_words(days: Sequence[int]) -> str:
    ordered = sorted(days)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{_WEEKDAYS[ordered[0]]} to {_WEEKDAYS[ordered[-1]]}"
    names = [_WEEKDAYS[day] for day in ordered]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


# ---------------------------------------------------------------- sending on schedule


@dataclass
class ClientReportRun:
    sent: list[tuple[str, str]] = field(default_factory=list)  # account, recipient
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # account, recipient, error
    lines: list[str] = field(default_factory=list)


def send_client_reports(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    mailer: Mailer | None,
    renderer: Renderer,
) -> ClientReportRun:
    """The scheduled reports due at `now`: from `[client_reports] day` of the month after
    each account's period until that month ends (a daemon that was down catches up)."""
    run = ClientReportRun()
    policy = settings.policy
    taken = {(c.key, c.recipient) for c in store.claims(CLIENT_REPORT)}
    for account_name, kind in settings.client_reports.periods.items():
        period = last_complete(kind, now, policy.timezone)
        if not _due(period, now, settings.client_reports.day, policy.timezone):
            continue
        key = client_report_key(period, account_name)
        recipients = [r for r in _recipients(policy, account_name) if (key, r) not in taken]
        if not recipients:
            continue
        if mailer is None:
            raise NotConfigured("client reports are due but no [smtp] server is configured")
        report = build_client_report(settings, store, now, account_name, kind, renderer)
        for recipient in recipients:
            if store.claim(CLIENT_REPORT, key, recipient, now):
                _send(run, settings, store, mailer, report, recipient, now)
    return run


def _due(period: Period, now: datetime, day: int, timezone: str) -> bool:
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    month_after = period.end.astimezone(zone).date()  # the 1st of the month after the period
    return (today.year, today.month) == (month_after.year, month_after.month) and today.day >= day


def _recipients(policy: Policy, account_name: str) -> list[str]:
    account = _account(policy, account_name)
    people = [account.manager] if account.manager else []
    return list(dict.fromkeys([*people, *account.backups]))


def _send(
    run: ClientReportRun,
    settings: Settings,
    store: Store,
    mailer: Mailer,
    report: ClientReport,
    recipient: str,
    now: datetime,
) -> None:
    key = client_report_key(report.period, report.account)
    email = RenderedEmail(report.rendered.subject, report.rendered.text, html="")
    attachment = Attachment(f"{report.stem}.html", report.rendered.html.encode(), "text/html")
    try:
        mailer.send(
            [recipient], email, headers={"X-Mailwatch": "client-report"}, attachments=[attachment]
        )
    except TransportError as error:
        kind = "permanent" if error.permanent else "temporary"
        log.warning("client report %s to %s failed (%s): %s", key, recipient, kind, error)
        store.mark_failed(CLIENT_REPORT, key, recipient, str(error), error.permanent, now)
        run.failed.append((report.account, recipient, str(error)))
        run.lines.append(f"FAILED to send {key} to {recipient} ({kind}): {error}")
        return
    store.mark_sent(CLIENT_REPORT, key, recipient, now)
    # one record per account and period: the figures are the same for every recipient
    figures, requests = report.figures, report.requests
    kept = to_keep(CLIENT_REPORT, report.period, report.account, figures, requests, settings, now)
    store.record_figures(kept)
    run.sent.append((report.account, recipient))
    run.lines.append(f"sent {key} to {recipient}")
