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

This module reads the store and sends; the figures are `digest_figures.py`'s, their words
`digest_text.py`'s.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailwatch.adapters.render import RenderedEmail, Renderer
from mailwatch.adapters.smtp import Mailer, NotConfigured, TransportError, compose
from mailwatch.claims import DIGEST, SKIPPED, digest_key, split_claim_key
from mailwatch.collector import collector_paused
from mailwatch.core.model import Policy, Request
from mailwatch.core.periods import Period, last_complete
from mailwatch.digest_figures import PeriodFacts
from mailwatch.digest_requests import digest_requests
from mailwatch.digest_sections import DigestSections
from mailwatch.digest_text import digest_context
from mailwatch.lessons import lessons_as_of
from mailwatch.revisions import digest_revisions, lookback, to_keep

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

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
    with collector_paused():
        return digests_of(period_facts(settings, store, now, period), renderer)


def period_facts(settings: Settings, store: Store, now: datetime, period: Period) -> PeriodFacts:
    earlier = lookback(period, settings.policy.timezone)
    lessons = lessons_as_of(store, now)
    skipped = [c for c in store.claims(SKIPPED) if period.start <= c.claimed_at < period.end]
    openers = {split_claim_key(c.key)[0] for c in skipped}
    # this period and those before it (trend, revisions); the longest waits still open too
    found = digest_requests(settings, store, now, period, earlier, openers, lessons)
    return PeriodFacts(
        settings=settings,
        period=period,
        earlier=earlier,
        requests=found.requests,
        outcomes=found.earlier,
        skipped=skipped,
        syncs=store.sync_states(),
        now=now,
        revisions=digest_revisions(
            settings, found.references, earlier, found.earlier, found.requests
        ),
        lessons=lessons,
        sections=DigestSections.gather(settings, store, period, found.requests, lessons, now),
    )


def digests_of(facts: PeriodFacts, renderer: Renderer) -> list[Digest]:
    """The agency digest for each head, then one per manager or backup for their accounts."""
    return [
        _digest(facts, renderer, recipient, accounts)
        for recipient, accounts in _recipients(facts.settings.policy)
    ]


def _recipients(policy: Policy) -> list[tuple[str, tuple[str, ...] | None]]:
    looked_after: dict[str, list[str]] = {}
    for account in policy.accounts:
        for person in (account.manager, *account.backups):
            if person and person not in policy.head_of_client_management:
                looked_after.setdefault(person, []).append(account.name)
    heads: list[tuple[str, tuple[str, ...] | None]] = [
        (head, None) for head in policy.head_of_client_management
    ]
    return heads + [(person, tuple(names)) for person, names in looked_after.items()]


def _digest(
    facts: PeriodFacts, renderer: Renderer, recipient: str, accounts: tuple[str, ...] | None
) -> Digest:
    figures = facts.figures(recipient, accounts)
    context = digest_context(facts.settings, recipient, accounts, figures)
    rendered = renderer.render("digest", context)
    requests = tuple(facts.received(accounts))
    return Digest(recipient, accounts, figures, rendered, requests)


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
