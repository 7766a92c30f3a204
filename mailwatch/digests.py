"""Compliance digests: the figures of the last complete week, month or quarter, by email.

The Head(s) of Client Management get one digest for the whole agency; every
account manager and backup gets one for the accounts they look after (a head
who also manages accounts gets the agency digest only: it already shows their
accounts).  Each (period, recipient) is claimed before sending (kind
`claims.DIGEST`, key `claims.digest_key(period)`: "week:2026-W47"), so a digest
is sent at most once, whichever process or run builds it; a temporary SMTP
failure releases the claim for the next run.

A sent digest keeps the figures it showed (`revisions.py`): the agency digest lists what
changed since for the periods before its own, old and new figure and why.

Statuses are as of `now` (the send time), so a request received late in the
period that is still unanswered counts as open or overdue.  The sync line is
built from the latest state of each mailbox: the store keeps the last success
and the last error, not a full history.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.adapters.render import RenderedEmail, Renderer
from mailwatch.adapters.smtp import Mailer, NotConfigured, TransportError, compose
from mailwatch.claims import DIGEST, SKIPPED, digest_key, split_claim_key
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Policy, Request, Status
from mailwatch.core.periods import Period, last_complete
from mailwatch.core.stats import Summary, by_person, summarize
from mailwatch.digest_sections import DigestSections
from mailwatch.digest_sections import context as sections_context
from mailwatch.lessons import lessons_as_of
from mailwatch.output import iso, waiver_warnings
from mailwatch.requests_as_of import requests_as_of
from mailwatch.revisions import digest_revisions, lookback, revisions_text, to_keep

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Claim, Store, SyncState

log = logging.getLogger(__name__)

WORST_WAITS = 5
# the figures a sent digest keeps for later revisions and `report --as-reported`
KEPT_FIGURES = ("scope", "summary", "accounts", "managers", "people")


@dataclass(frozen=True)
class Digest:
    recipient: str
    accounts: tuple[str, ...] | None  # None: the whole agency
    figures: dict[str, Any]  # what the .json holds
    rendered: RenderedEmail
    requests: tuple[Request, ...]  # behind the figures: their statuses are kept once sent


@dataclass
class DigestRun:
    period: Period
    dry_run: bool
    digests: list[Digest] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, bool]] = field(default_factory=list)  # recipient, error, permanent
    written: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def send_digests(
    settings: Settings,
    store: Store,
    now: datetime,
    period: str = "week",
    *,
    mailer: Mailer | None,
    renderer: Renderer,
    dry_run: bool = False,
    output_dir: Path | None = None,
) -> DigestRun:
    """`mailer` is None when no [smtp] server is configured: NotConfigured unless a dry run."""
    timezone = settings.policy.timezone
    chosen = last_complete(period, now, timezone)
    run = DigestRun(chosen, dry_run)
    run.digests = build_digests(settings, store, now, chosen, renderer)
    if output_dir is not None:
        run.written = _write(run.digests, output_dir, _sender(settings), now)
    if dry_run:
        taken = {c.recipient for c in store.claims(DIGEST) if c.key == digest_key(chosen)}
        for digest in run.digests:
            state = " (already sent)" if digest.recipient in taken else ""
            run.lines.append(f"would send to {digest.recipient}: {digest.rendered.subject}{state}")
        return run
    if mailer is None:
        raise NotConfigured("digests are due but no [smtp] server is configured")
    for digest in run.digests:
        if store.claim(DIGEST, digest_key(chosen), digest.recipient, now):
            _send(run, settings, store, mailer, digest, now)
        else:
            run.lines.append(f"already sent to {digest.recipient} for {chosen.key}")
    return run


def build_digests(
    settings: Settings, store: Store, now: datetime, period: Period, renderer: Renderer
) -> list[Digest]:
    policy = settings.policy
    earlier = lookback(period, policy.timezone)  # ends with the period before (the trend)
    # this period and those before it (trend, revisions); the longest waits still open too
    requests = requests_as_of(settings, store, now, since=earlier[0].start)
    facts = _Facts(
        renderer=renderer,
        settings=settings,
        period=period,
        before=earlier[-1],
        requests=requests,
        skipped=[c for c in store.claims(SKIPPED) if period.start <= c.claimed_at < period.end],
        syncs=store.sync_states(),
        now=now,
        revisions=digest_revisions(settings, store, earlier, requests),
        sections=DigestSections.gather(
            settings, store, period, requests, lessons_as_of(store, now), now
        ),
    )
    digests = [facts.digest(head, None) for head in policy.head_of_client_management]
    looked_after: dict[str, list[str]] = {}
    for account in policy.accounts:
        for person in (account.manager, *account.backups):
            if person and person not in policy.head_of_client_management:
                looked_after.setdefault(person, []).append(account.name)
    digests += [facts.digest(person, tuple(names)) for person, names in looked_after.items()]
    return digests


# ---------------------------------------------------------------- figures and text


@dataclass
class _Facts:
    renderer: Renderer
    settings: Settings
    period: Period
    before: Period
    requests: Sequence[Request]
    skipped: list[Claim]
    syncs: list[SyncState]
    now: datetime
    revisions: list[dict[str, Any]]  # to earlier periods, for the agency digest
    sections: DigestSections

    def digest(self, recipient: str, accounts: tuple[str, ...] | None) -> Digest:
        figures = self.figures(recipient, accounts)
        context = self.context(recipient, accounts, figures)
        rendered = self.renderer.render("digest", context)
        requests = tuple(self.received_in(self.period, accounts))
        return Digest(recipient, accounts, figures, rendered, requests)

    @cached_property
    def by_opener(self) -> dict[str, Request]:
        return {r.opened_by: r for r in self.requests}

    def received_in(self, period: Period, accounts: tuple[str, ...] | None) -> list[Request]:
        """In the stored order (received, then stored first)."""
        wanted = None if accounts is None else set(accounts)
        return [
            r
            for r in self.requests
            if (wanted is None or r.account in wanted)
            and period.start <= r.received_at < period.end
        ]

    def figures(self, recipient: str, accounts: tuple[str, ...] | None) -> dict[str, Any]:
        policy = self.settings.policy
        requests = self.received_in(self.period, accounts)
        names = accounts if accounts is not None else tuple(a.name for a in policy.accounts)
        of_account: dict[str, list[Request]] = {name: [] for name in names}
        for request in requests:
            of_account.setdefault(request.account, []).append(request)
        managers: dict[str, list[Request]] = {}
        for account in policy.accounts:
            if account.manager and account.name in names:
                managers.setdefault(account.manager, []).extend(of_account[account.name])
        return {
            "period": {
                "kind": self.period.kind,
                "key": self.period.key,
                "label": self.period.label,
                "start": iso(self.period.start),
                "end": iso(self.period.end),
            },
            "generated_at": iso(self.now),
            "recipient": recipient,
            "scope": "agency" if accounts is None else list(accounts),
            "summary": summarize(requests).as_dict(),
            "accounts": {
                name: summarize(of_account[name]).as_dict() for name in sorted(of_account)
            },
            "managers": {who: summarize(rs).as_dict() for who, rs in sorted(managers.items())},
            "people": {who: s.as_dict() for who, s in by_person(requests).items()},
            "previous": {
                "key": self.before.key,
                "summary": summarize(self.received_in(self.before, accounts)).as_dict(),
            },
            "worst_waits": [_wait_json(r) for r in _worst(requests)],
            "waivers": [_waiver_json(r) for r in requests if r.status is Status.WAIVED],
            "waivers_to_check": [_waiver_json(r) for r in self.waivers_to_check(accounts)],
            "skipped_nudges": self.skipped_json(accounts),
            "sync": self.sync_json(),
            "revisions": self.revisions if accounts is None else [],
            **self.sections.figures(recipient, accounts, requests),
        }

    def waivers_to_check(self, accounts: tuple[str, ...] | None) -> list[Request]:
        """Waivers made in the period after the deadline or the answer, whenever the request
        was received: a breach must not leave the figures unseen."""
        return sorted(
            (
                r
                for r in self.requests
                if r.status is Status.WAIVED
                and r.waiver is not None
                and self.period.start <= r.waiver.seen_at < self.period.end
                and (accounts is None or r.account in accounts)
                and waiver_warnings(r)
            ),
            key=lambda r: (r.waiver.seen_at if r.waiver else r.received_at, r.opened_by),
        )

    def skipped_json(self, accounts: tuple[str, ...] | None) -> list[dict[str, Any]]:
        found = []
        for claim in self.skipped:
            opened_by, stage = split_claim_key(claim.key)
            request = self.by_opener.get(opened_by)
            if accounts is not None and (request is None or request.account not in accounts):
                continue
            found.append(
                {
                    "opened_by": opened_by,
                    "account": request.account if request else None,
                    "subject": request.subject if request else None,
                    "stage": stage,
                    "recipient": claim.recipient,
                    "at": iso(claim.claimed_at),
                    "reason": claim.error,
                }
            )
        return found

    def sync_json(self) -> dict[str, Any]:
        """Mailboxes that did not sync cleanly during the period or have not synced since."""
        stale_after = self.settings.health.stale_after
        states = {(s.mailbox, s.folder): s for s in self.syncs}
        gaps = []
        for mailbox in self.settings.mailboxes:
            state = states.get((mailbox.name, None))
            folder_errors = [
                s
                for s in self.syncs
                if s.mailbox == mailbox.name
                and s.folder is not None
                and s.last_error_at
                and self.period.start <= s.last_error_at < self.period.end
            ]
            problem = None
            if state is None or state.last_ok_at is None:
                problem = "never synced"
            elif state.last_ok_at < self.period.end - stale_after:
                problem = f"no successful sync since {iso(state.last_ok_at)}"
            elif state.last_error_at and self.period.start <= state.last_error_at:
                problem = f"errors in the period (last at {iso(state.last_error_at)})"
            elif folder_errors:
                folders = ", ".join(sorted(s.folder or "" for s in folder_errors))
                problem = f"folder errors in the period: {folders}"
            if problem:
                error = state.last_error if state and state.last_error else None
                gaps.append({"mailbox": mailbox.name, "problem": problem, "last_error": error})
        return {"mailboxes": len(self.settings.mailboxes), "gaps": gaps}

    def context(
        self, recipient: str, accounts: tuple[str, ...] | None, figures: dict[str, Any]
    ) -> dict[str, Any]:
        policy = self.settings.policy
        member = next((s for s in policy.staff if s.email == recipient), None)
        zone = ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
        summary = Summary(**figures["summary"])
        before = Summary(**figures["previous"]["summary"])
        return {
            "agency": self.settings.agency_name,
            "recipient_name": member.name if member and member.name else recipient,
            "scope": "the whole agency" if accounts is None else ", ".join(accounts),
            "period": self.period.label,
            "previous_period": self.before.label,
            "timezone": zone.key,
            "summary": _summary_text(summary),
            "trend": _trend(summary, before, self.before.label),
            "accounts": [
                {"name": name, **_summary_text(Summary(**s))}
                for name, s in figures["accounts"].items()
            ],
            "people": [
                {"name": _person(name, policy), **_summary_text(Summary(**s))}
                for name, s in figures["people"].items()
            ],
            "worst": [
                {
                    "account": w["account"],
                    "subject": " ".join((w["subject"] or "").split()) or "(no subject)",
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
                    "subject": " ".join((w["subject"] or "").split()) or "(no subject)",
                    "by": w["by"],
                    "reason": w["reason"] or "no reason given",
                }
                for w in figures["waivers"]
            ],
            "waivers_to_check": [
                {
                    "account": w["account"],
                    "subject": " ".join((w["subject"] or "").split()) or "(no subject)",
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
                    "subject": " ".join((s["subject"] or "").split()) or "(no subject)",
                    "stage": s["stage"],
                    "recipient": s["recipient"],
                    "reason": s["reason"] or "",
                }
                for s in figures["skipped_nudges"]
            ],
            "sync_line": _sync_line(figures["sync"]),
            "revisions": revisions_text(figures["revisions"], zone),
            "sections": sections_context(figures, zone, policy),
        }


def _person(address: str, policy: Policy) -> str:
    member = next((s for s in policy.staff if s.email == address), None)
    return f"{member.name} ({address})" if member and member.name else address


def _worst(requests: Sequence[Request]) -> list[Request]:
    waiting = [r for r in requests if r.status is not Status.WAIVED]
    return sorted(waiting, key=lambda r: (-_wait(r), r.received_at))[:WORST_WAITS]


def _wait(request: Request) -> int:
    if request.response_seconds is not None:
        return request.response_seconds
    return request.elapsed_seconds


def _wait_json(request: Request) -> dict[str, Any]:
    return {
        "account": request.account,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": iso(request.received_at),
        "wait_seconds": _wait(request),
        "answered": request.response_seconds is not None,
        "status": request.status.value,
        "responder": request.responder,
        "responsible": list(request.responsible),
        "reply_possibly_unseen": request.reply_possibly_unseen,
    }


def _waiver_json(request: Request) -> dict[str, Any]:
    waiver = request.waiver
    return {
        "account": request.account,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "via": waiver.via.value if waiver else None,
        "by": waiver.by if waiver else "unknown",
        "reason": waiver.reason if waiver else "",
        "seen_at": iso(waiver.seen_at) if waiver else None,
        "warnings": list(waiver_warnings(request)),
    }


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


# ---------------------------------------------------------------- sending and files


def _send(
    run: DigestRun, settings: Settings, store: Store, mailer: Mailer, digest: Digest, now: datetime
) -> None:
    key = digest_key(run.period)
    try:
        mailer.send([digest.recipient], digest.rendered, headers={"X-Mailwatch": "digest"})
    except TransportError as error:
        kind = "permanent" if error.permanent else "temporary"
        log.warning("digest %s to %s failed (%s): %s", key, digest.recipient, kind, error)
        store.mark_failed(DIGEST, key, digest.recipient, str(error), error.permanent, now)
        run.failed.append((digest.recipient, str(error), error.permanent))
        run.lines.append(f"FAILED to send to {digest.recipient} ({kind}): {error}")
        return
    store.mark_sent(DIGEST, key, digest.recipient, now)
    shown = {name: digest.figures[name] for name in KEPT_FIGURES}
    kept = to_keep(DIGEST, run.period, digest.recipient, shown, digest.requests, settings, now)
    store.record_figures(kept)
    run.sent.append(digest.recipient)
    run.lines.append(f"sent to {digest.recipient}: {digest.rendered.subject}")


def _sender(settings: Settings) -> str:
    if settings.smtp is not None:
        return settings.smtp.sender
    domain = settings.policy.agency_domains[0] if settings.policy.agency_domains else "localhost"
    return f"Mailwatch <mailwatch@{domain}>"


def _write(digests: list[Digest], directory: Path, sender: str, now: datetime) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for digest in digests:
        stem = f"{digest.figures['period']['key'].replace(':', '-')}-{digest.recipient}"
        headers = {"X-Mailwatch": "digest"}
        message = compose(sender, [digest.recipient], digest.rendered, headers, now)
        figures = json.dumps(digest.figures, indent=1, ensure_ascii=False)
        files = {
            directory / f"{stem}.eml": message.as_bytes(),
            directory / f"{stem}.html": digest.rendered.html.encode(),
            directory / f"{stem}.json": figures.encode(),
        }
        for path, content in files.items():
            _private_write(path, content)
            written.append(path)
    return written


def _private_write(path: Path, content: bytes) -> None:
    """Digests name staff and clients: readable by the owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
