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

The Directors' stage (`core.nudges.due_escalations`) goes the same way, in its own
email (`templates/directors.*`) under claims of kind `claims.DIRECTORS`; then the
daily still-waiting lists (`still_waiting.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer, NotConfigured, TransportError
from mailwatch.claims import DIRECTORS, NUDGE, SKIPPED, nudge_key, split_claim_key
from mailwatch.core.model import Request, Status
from mailwatch.core.nudges import (
    ClaimKey,
    Nudge,
    NudgePlan,
    batch_by_recipient,
    due_escalations,
    due_nudges,
)
from mailwatch.evaluation import store_absences
from mailwatch.nudge_mail import SentNudge, directors_context, nudge_context
from mailwatch.requests_as_of import waiting_as_of
from mailwatch.still_waiting import ListsRun, send_still_waiting

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Claim, Store

log = logging.getLogger(__name__)


@dataclass
class NudgeRun:
    plan: NudgePlan
    dry_run: bool
    escalations: NudgePlan = field(default_factory=NudgePlan)  # the Directors' stage
    lists: ListsRun | None = None  # the daily still-waiting lists
    emails: int = 0  # nudge and escalation emails accepted by the SMTP server
    sent: list[Nudge] = field(default_factory=list)  # nudges and escalations
    failed: list[tuple[Nudge, str, bool]] = field(default_factory=list)  # nudge, error, permanent
    lines: list[str] = field(default_factory=list)  # what happened (or would), for people

    @property
    def failures(self) -> int:
        """Emails of this pass that failed: nudges, escalations and still-waiting lists."""
        return len(self.failed) + (len(self.lists.failed) if self.lists else 0)


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
    """The ladder's nudges, then the Directors' escalations, then the still-waiting lists.

    `mailer` is None when no [smtp] server is configured: NotConfigured once one is due.
    A dry run sends and claims nothing; it does bring the stored requests up to date,
    unless `now` is before the last evaluation (then it changes nothing that is stored).
    """
    waiting = waiting_as_of(settings, store, now)
    absences = store_absences(store, settings.policy, now - settings.policy.absence_max, now)
    claims = store.claims(NUDGE)
    plan = due_nudges(waiting, settings.policy, absences, _taken(claims), now)
    escalations = due_escalations(
        waiting, settings.policy, absences, _taken(store.claims(DIRECTORS)), now
    )
    run = NudgeRun(plan, dry_run, escalations)
    _report_not_sent(run, plan, store, now)
    _report_not_sent(run, escalations, store, now)
    mail = _Mail(run, store, mailer, renderer, now)
    sent_before = _sent_by_request(claims)
    if plan.send:
        _send_ladder(mail, settings, plan, waiting, sent_before)
    for recipient, nudges in batch_by_recipient(escalations.send).items():
        claimed = mail.claim(DIRECTORS, recipient, nudges)
        if claimed:
            story = store.messages_by_keys(k for n in claimed for k in n.request.messages)
            context = directors_context(
                recipient,
                claimed,
                policy=settings.policy,
                messages={m.key: m for m in story},
                now=now,
                sent_before=sent_before,
            )
            mail.send(DIRECTORS, "directors", recipient, claimed, context)
    run.lists = send_still_waiting(
        settings,
        store,
        now,
        waiting=waiting,
        absences=absences,
        mailer=mailer,
        renderer=renderer,
        dry_run=dry_run,
    )
    run.lines.extend(run.lists.lines)
    return run


def _send_ladder(
    mail: _Mail,
    settings: Settings,
    plan: NudgePlan,
    waiting: list[Request],
    sent_before: dict[str, list[SentNudge]],
) -> None:
    openers = {m.key: m for m in mail.store.messages_by_keys(r.opened_by for r in waiting)}
    for recipient, nudges in batch_by_recipient(plan.send).items():
        claimed = mail.claim(NUDGE, recipient, nudges)
        if claimed:
            context = nudge_context(
                recipient,
                claimed,
                policy=settings.policy,
                messages=openers,
                now=mail.now,
                waiting=_others_waiting(recipient, claimed, waiting, settings, mail.now),
                sent_before=sent_before,
                waive_keyword=settings.sync.waive_keyword,
                waive_folder=settings.sync.waive_folder,
            )
            mail.send(NUDGE, "nudge", recipient, claimed, context)


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


class _Mail:
    """Claim, then send, one email per recipient, for the ladder and the Directors' stage."""

    def __init__(
        self, run: NudgeRun, store: Store, mailer: Mailer | None, renderer: Renderer, now: datetime
    ):
        self.run, self.store, self.mailer, self.renderer, self.now = (
            run,
            store,
            mailer,
            renderer,
            now,
        )

    def claim(self, kind: str, recipient: str, nudges: list[Nudge]) -> list[Nudge]:
        """The nudges this process gets to send (none in a dry run: it says what it would)."""
        if self.run.dry_run:
            self.run.lines.append(f"would send to {recipient}: {_count(kind, nudges)}")
            self.run.lines.extend(f"  {_describe(nudge)}" for nudge in nudges)
            return []
        if self.mailer is None:
            raise NotConfigured(f"{kind} emails are due but no [smtp] server is configured")
        claimed = [n for n in nudges if self.store.claim(kind, claim_key(n), recipient, self.now)]
        return claimed  # empty: another worker has them

    def send(
        self,
        kind: str,
        template: str,
        recipient: str,
        claimed: list[Nudge],
        context: dict[str, Any],
    ) -> None:
        run, store, now = self.run, self.store, self.now
        assert self.mailer is not None  # claim() refused to go on without one
        try:
            rendered = self.renderer.render(template, context)
            self.mailer.send([recipient], rendered, headers={"X-Mailwatch": kind})
        except TransportError as error:
            how = "permanent" if error.permanent else "temporary"
            log.warning("%s email to %s failed (%s): %s", kind, recipient, how, error)
            for nudge in claimed:
                store.mark_failed(
                    kind, claim_key(nudge), recipient, str(error), error.permanent, now
                )
                run.failed.append((nudge, str(error), error.permanent))
            run.lines.append(f"FAILED to send to {recipient} ({how}): {error}")
            return
        except Exception as error:
            # A bug (a template, say): give the claims back so a fixed version can send them.
            for nudge in claimed:
                store.mark_failed(kind, claim_key(nudge), recipient, repr(error), False, now)
            raise
        for nudge in claimed:
            store.mark_sent(kind, claim_key(nudge), recipient, now)
        run.emails += 1
        run.sent.extend(claimed)
        run.lines.append(f"sent to {recipient}: {_count(kind, claimed)}")
        run.lines.extend(f"  {_describe(nudge)}" for nudge in claimed)
        log.info("sent %s to %s", _count(kind, claimed), recipient)


def _count(kind: str, nudges: list[Nudge]) -> str:
    return f"{len(nudges)} {'escalation' if kind == DIRECTORS else 'nudge'}(s)"


def _report_not_sent(run: NudgeRun, plan: NudgePlan, store: Store, now: datetime) -> None:
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
