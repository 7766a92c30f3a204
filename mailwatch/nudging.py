"""Sending the nudges that are due: claim, then send, one email per recipient.

Each (request, stage, recipient) is claimed in the database before its email
goes out (kind `claims.NUDGE`, key `claims.nudge_key(opened_by, stage)`), and
only the nudges this process claimed are put in the email, so two workers, or
a pass that overlaps the previous one, never send the same nudge twice.

After the SMTP server accepts the email the claims are marked sent.  A
temporary failure (4xx, connection refused, timeout) releases them: the next
pass retries whatever is *still* due then; a stage that has since been
answered, waived or has fallen due too long ago is dropped, never sent late.
A permanent failure (5xx, bad credentials) keeps the claims and records the
error, so `mailwatch health` reports it and nobody is mailed in a loop.

A crash between the SMTP server's acceptance and the commit of `mark_sent`
leaves the claims taken but unmarked.  They are never released, so that nudge
is not sent again: delivery is at most once.  A lost reminder is cheaper than
a duplicate storm after a crash loop, and the digest still reports the breach.

Nudges skipped for lateness are recorded once each as claims of kind
`claims.SKIPPED` (the reason in `error`), so the next digest can list them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer, NotConfigured, TransportError
from mailwatch.claims import NUDGE, SKIPPED, nudge_key, split_claim_key
from mailwatch.core.model import Request, Status
from mailwatch.core.nudges import ClaimKey, Nudge, NudgePlan, batch_by_recipient, due_nudges
from mailwatch.evaluation import store_absences
from mailwatch.nudge_mail import SentNudge, nudge_context
from mailwatch.requests_as_of import waiting_as_of

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Claim, Store

log = logging.getLogger(__name__)


@dataclass
class NudgeRun:
    plan: NudgePlan
    dry_run: bool
    emails: int = 0  # emails accepted by the SMTP server
    sent: list[Nudge] = field(default_factory=list)
    failed: list[tuple[Nudge, str, bool]] = field(default_factory=list)  # nudge, error, permanent
    lines: list[str] = field(default_factory=list)  # what happened (or would), for people


def claim_key(nudge: Nudge) -> str:
    return nudge_key(nudge.request.opened_by, nudge.stage)


def send_due_nudges(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    mailer: Mailer | None,
    renderer: Renderer,
    dry_run: bool = False,
) -> NudgeRun:
    """`mailer` is None when no [smtp] server is configured: NotConfigured once one is due.

    A dry run sends and claims nothing; it does bring the stored requests up to date,
    unless `now` is before the last evaluation (then it changes nothing that is stored).
    """
    waiting = waiting_as_of(settings, store, now)
    absences = store_absences(store, settings.policy, now - settings.policy.absence_max, now)
    claims = store.claims(NUDGE)
    plan = due_nudges(waiting, settings.policy, absences, _taken(claims), now)
    run = NudgeRun(plan, dry_run)
    _report_not_sent(run, store, now)
    batches = batch_by_recipient(plan.send)
    if dry_run:
        for recipient, nudges in batches.items():
            run.lines.append(f"would send to {recipient}: {len(nudges)} nudge(s)")
            run.lines.extend(f"  {_describe(nudge)}" for nudge in nudges)
        return run
    if not batches:
        return run
    if mailer is None:
        raise NotConfigured("nudges are due but no [smtp] server is configured")
    openers = {m.key: m for m in store.messages_by_keys(r.opened_by for r in waiting)}
    sent_before = _sent_by_request(claims)
    for recipient, nudges in batches.items():
        claimed = [n for n in nudges if store.claim(NUDGE, claim_key(n), recipient, now)]
        if not claimed:
            continue  # another worker has them
        context = nudge_context(
            recipient,
            claimed,
            policy=settings.policy,
            messages=openers,
            now=now,
            waiting=_others_waiting(recipient, claimed, waiting, settings, now),
            sent_before=sent_before,
            waive_keyword=settings.sync.waive_keyword,
            waive_folder=settings.sync.waive_folder,
        )
        _send(run, store, mailer, renderer, recipient, claimed, context, now)
    return run


def _taken(claims: list[Claim]) -> set[ClaimKey]:
    """Sent, permanently failed, or claimed right now: everything but released claims."""
    taken = set()
    for claim in claims:
        if not claim.released:
            opened_by, stage = split_claim_key(claim.key)
            taken.add((opened_by, stage, claim.recipient))
    return taken


def _sent_by_request(claims: list[Claim]) -> dict[str, list[SentNudge]]:
    """The nudges that went out before this pass, by request (its `opened_by`)."""
    sent: dict[str, list[SentNudge]] = {}
    for claim in claims:
        if claim.sent_at is not None:
            opened_by, stage = split_claim_key(claim.key)
            sent.setdefault(opened_by, []).append(SentNudge(stage, claim.recipient, claim.sent_at))
    return sent


def _send(
    run: NudgeRun,
    store: Store,
    mailer: Mailer,
    renderer: Renderer,
    recipient: str,
    claimed: list[Nudge],
    context: dict[str, Any],
    now: datetime,
) -> None:
    try:
        rendered = renderer.render("nudge", context)
        mailer.send([recipient], rendered, headers={"X-Mailwatch": "nudge"})
    except TransportError as error:
        kind = "permanent" if error.permanent else "temporary"
        log.warning("nudge to %s failed (%s): %s", recipient, kind, error)
        for nudge in claimed:
            store.mark_failed(NUDGE, claim_key(nudge), recipient, str(error), error.permanent, now)
            run.failed.append((nudge, str(error), error.permanent))
        run.lines.append(f"FAILED to send to {recipient} ({kind}): {error}")
        return
    except Exception as error:
        # A bug (a template, say): give the claims back so a fixed version can send them.
        for nudge in claimed:
            store.mark_failed(NUDGE, claim_key(nudge), recipient, repr(error), False, now)
        raise
    for nudge in claimed:
        store.mark_sent(NUDGE, claim_key(nudge), recipient, now)
    run.emails += 1
    run.sent.extend(claimed)
    run.lines.append(f"sent to {recipient}: {len(claimed)} nudge(s)")
    run.lines.extend(f"  {_describe(nudge)}" for nudge in claimed)
    log.info("sent %d nudge(s) to %s", len(claimed), recipient)


def _report_not_sent(run: NudgeRun, store: Store, now: datetime) -> None:
    plan = run.plan
    for nudge in plan.skipped:
        # Recorded once (the first pass that skips it) for the digest.
        if run.dry_run:
            run.lines.append(f"would skip for {nudge.recipient}: {_describe(nudge)}")
        elif store.claim(SKIPPED, claim_key(nudge), nudge.recipient, now):
            store.mark_failed(
                SKIPPED, claim_key(nudge), nudge.recipient, nudge.reasons[-1], True, now
            )
            about = {"request": nudge.request.opened_by}
            log.warning("nudge to %s skipped: %s", nudge.recipient, _describe(nudge), extra=about)
    for nudge in plan.held:
        run.lines.append(f"held for {nudge.recipient}: {_describe(nudge)}")
    for nudge in plan.refused:
        run.lines.append(f"REFUSED for {nudge.recipient}: {_describe(nudge)}")
        log.error("nudge refused: %s", _describe(nudge), extra={"request": nudge.request.opened_by})


def _others_waiting(
    recipient: str, listed: list[Nudge], requests: list[Request], settings: Settings, now: datetime
) -> list[Request]:
    """The recipient's other requests still waiting, most urgent first: they manage or back
    up the account, or were responsible when it opened."""
    mine = {
        account.name
        for account in settings.policy.accounts
        if recipient == account.manager or recipient in account.backups
    }
    shown = {nudge.request.opened_by for nudge in listed}
    others = [
        r
        for r in requests
        if r.status in (Status.OPEN, Status.OVERDUE)
        and (r.closed_at is None or r.closed_at > now)
        and r.opened_by not in shown
        and (r.account in mine or recipient in r.responsible)
    ]
    return sorted(others, key=lambda r: (r.deadline, r.received_at))


def _describe(nudge: Nudge) -> str:
    request = nudge.request
    subject = " ".join(request.subject.split()) or "(no subject)"
    return f"{request.account}: '{subject}' {request.opened_by} [{nudge.stage}] — " + "; ".join(
        nudge.reasons
    )
