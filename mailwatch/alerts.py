"""Alerts: `[alerts] to` gets one email when a problem starts and one when it ends.

The problems: a configured mailbox that has not synced for `[health] stale_after`
(or has never synced and failed KEEPS_FAILING times), nudges or digests whose
sending fails permanently, and a daemon job that fails KEEPS_FAILING times in a row.

Each problem is named by what is wrong ("mailbox:alice") and which occurrence of
it (since when: the last successful sync, the first failed send or job pass),
both read from the database, so every process and every restart names the same
occurrence the same way.  Like a nudge, each (occurrence, recipient) is claimed
before its email goes out (kind `claims.ALERT`): at most one alert per problem
until it ends, however often the check runs.  When the occurrence is no longer
current, its end is claimed (kind `claims.ALERT_RECOVERED`) and told to whoever
received the alert.  One email per recipient and check lists what started and
what ended.

When SMTP itself is the problem the alert cannot go out: it is logged; a
permanent failure keeps the claims (never retried: no loop), a temporary one
releases them for the next check.  `mailwatch health` already fails then (the
failed send), so the ping URL is not pinged.

The daemon runs the check after each nudge pass; `mailwatch nudge` runs it too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer, TransportError
from mailwatch.claims import ALERT, ALERT_RECOVERED, PROMISED_MAIL, alert_key, split_alert_key
from mailwatch.core.addresses import normalise_address
from mailwatch.health import mailbox_syncs
from mailwatch.jobs import KEEPS_FAILING, failing_jobs

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)

NEVER = "never"  # the occurrence of a mailbox that has never synced


@dataclass(frozen=True)
class Problem:
    what: str  # "mailbox:alice", "send:nudge", "job:nudge pass"
    since: str  # which occurrence: an ISO instant, or NEVER
    text: str  # one line for people

    @property
    def key(self) -> str:
        return alert_key(self.what, self.since)

    @property
    def title(self) -> str:
        """A few words for a subject line; `text` has the details."""
        kind, _, name = self.what.partition(":")
        if kind == "mailbox":
            return f"mailbox {name} does not sync"
        if kind == "send":
            return f"sending {name}s fails"
        return f"{name} keeps failing"


@dataclass
class AlertRun:
    problems: list[Problem]  # every current problem, alerted before or not
    emails: int = 0  # accepted by the SMTP server
    failed: list[str] = field(default_factory=list)  # why an email did not go
    lines: list[str] = field(default_factory=list)  # what happened (or would), for people


def current_problems(settings: Settings, store: Store, now: datetime) -> list[Problem]:
    return _mailbox_problems(settings, store, now) + _send_problems(store) + _job_problems(store)


def _mailbox_problems(settings: Settings, store: Store, now: datetime) -> list[Problem]:
    configured = {mailbox.name for mailbox in settings.mailboxes}
    problems = []
    for sync in mailbox_syncs(settings, store.sync_states(), now):
        if sync.folder is not None or sync.mailbox not in configured or sync.problem is None:
            continue
        state = sync.state
        if sync.condition == "stale" and state is not None and state.last_ok_at is not None:
            since = state.last_ok_at.isoformat()
        elif sync.condition == "never_synced" and state and state.failures >= KEEPS_FAILING:
            since = NEVER
        else:
            continue  # a failed poll or two is weather; a first sync may take a while
        problems.append(Problem(f"mailbox:{sync.mailbox}", since, sync.problem))
    return problems


def _send_problems(store: Store) -> list[Problem]:
    """Kinds of mail whose sends have failed permanently since the last one that went."""
    problems = []
    for kind in PROMISED_MAIL:
        claims = store.claims(kind)
        last_sent = max((c.sent_at for c in claims if c.sent_at is not None), default=None)
        failed = [
            (c.failed_at, c)
            for c in claims
            if c.failed_at is not None and c.sent_at is None and c.error and not c.released
            if last_sent is None or c.failed_at > last_sent
        ]
        if failed:
            first, _ = min(failed, key=lambda pair: pair[0])
            _, latest = max(failed, key=lambda pair: pair[0])
            text = f"sending {kind}s fails: the last to {latest.recipient}: {latest.error}"
            problems.append(Problem(f"send:{kind}", first.isoformat(), text))
    return problems


def _job_problems(store: Store) -> list[Problem]:
    return [
        Problem(
            f"job:{job.job}",
            job.since.isoformat(),
            f"{job.job} failed {job.failures} times in a row: {job.error}",
        )
        for job in failing_jobs(store)
        if job.failures >= KEEPS_FAILING
    ]


def ended_text(key: str) -> str:
    """What an alert's end says, from its key alone (the problem is gone from the store)."""
    problem, _ = split_alert_key(key)
    kind, _, name = problem.partition(":")
    if kind == "mailbox":
        return f"mailbox {name} syncs again"
    if kind == "send":
        return f"{name}s are sent again"
    return f"{name} succeeds again"


# ---------------------------------------------------------------- the check


def check_alerts(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    mailer: Mailer | None,
    renderer: Renderer,
    dry_run: bool = False,
) -> AlertRun:
    """Email each of `[alerts] to` the problems that started and ended since it last heard.

    `mailer` is None without an [smtp] server: the alerts are then only logged, once.
    A dry run claims and sends nothing.
    """
    run = AlertRun(current_problems(settings, store, now))
    current = {problem.key for problem in run.problems}
    alerted = store.claims(ALERT)
    told_ended = {(c.key, c.recipient) for c in store.claims(ALERT_RECOVERED)}
    for recipient in settings.alerts.to:
        mine = [c for c in alerted if c.recipient == recipient]
        taken = {c.key for c in mine if not c.released}
        started = [p for p in run.problems if p.key not in taken]
        ended = [
            c.key
            for c in mine
            if c.sent_at is not None
            and c.key not in current
            and (c.key, recipient) not in told_ended
        ]
        if dry_run:
            run.lines.extend(f"would alert {recipient}: {p.text}" for p in started)
            run.lines.extend(f"would tell {recipient}: {ended_text(k)}" for k in ended)
            continue
        started = [p for p in started if store.claim(ALERT, p.key, recipient, now)]
        ended = [k for k in ended if store.claim(ALERT_RECOVERED, k, recipient, now)]
        if started or ended:
            email = _Email(recipient, started, ended)
            _send(run, settings, store, mailer, renderer, email, now)
    return run


@dataclass(frozen=True)
class _Email:
    recipient: str
    started: Sequence[Problem]
    ended: Sequence[str]  # alert keys

    @property
    def claims(self) -> list[tuple[str, str]]:
        return [(ALERT, p.key) for p in self.started] + [(ALERT_RECOVERED, k) for k in self.ended]

    @property
    def summary(self) -> str:
        return "; ".join([p.text for p in self.started] + [ended_text(k) for k in self.ended])


def _send(
    run: AlertRun,
    settings: Settings,
    store: Store,
    mailer: Mailer | None,
    renderer: Renderer,
    email: _Email,
    now: datetime,
) -> None:
    recipient = email.recipient
    try:
        if mailer is None:
            raise TransportError("no [smtp] server is configured", permanent=True)
        rendered = renderer.render("alert", alert_context(settings, email, now))
        mailer.send([recipient], rendered, headers={"X-Mailwatch": "alert"})
    except TransportError as error:
        kind = "permanent" if error.permanent else "temporary, will retry"
        log.error("alert to %s not sent (%s: %s): %s", recipient, kind, error, email.summary)
        for claim_kind, key in email.claims:
            store.mark_failed(claim_kind, key, recipient, str(error), error.permanent, now)
        run.failed.append(f"{recipient}: {error}")
        run.lines.append(f"FAILED to alert {recipient} ({kind}): {error}")
        return
    except Exception as error:
        # A bug (a template, say): give the claims back so a fixed version can send them.
        for claim_kind, key in email.claims:
            store.mark_failed(claim_kind, key, recipient, repr(error), False, now)
        raise
    for claim_kind, key in email.claims:
        store.mark_sent(claim_kind, key, recipient, now)
    run.emails += 1
    run.lines.append(f"alerted {recipient}: {email.summary}")
    log.warning("alert sent to %s: %s", recipient, email.summary)


def alert_context(settings: Settings, email: _Email, now: datetime) -> dict[str, Any]:
    """Context for `alert.*`, times in the recipient's timezone."""
    policy = settings.policy
    address = normalise_address(email.recipient)
    member = next((s for s in policy.staff if normalise_address(s.email) == address), None)
    zone = ZoneInfo(member.timezone if member and member.timezone else policy.timezone)
    return {
        "recipient_name": member.name if member and member.name else email.recipient,
        "agency": settings.agency_name,
        "timezone": zone.key,
        "at": _local(now, zone),
        "started": [
            {
                "title": p.title,
                "text": p.text,
                "since": None if p.since == NEVER else _local_iso(p.since, zone),
            }
            for p in email.started
        ],
        "ended": [ended_text(key) for key in email.ended],
    }


def _local_iso(text: str, zone: ZoneInfo) -> str:
    return _local(datetime.fromisoformat(text), zone)


def _local(instant: datetime, zone: ZoneInfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"
