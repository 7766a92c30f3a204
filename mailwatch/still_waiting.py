"""Sending the daily "still waiting" lists: claim, then send, one a day per person.

Each list is claimed (kind `claims.STILL_WAITING`, key: the recipient's local
date) before it goes out, so a restart, a second run that day or a second
worker never repeats it.  A temporary SMTP failure releases the claim: the
next run that day sends the list as it is then.  A permanent one keeps it and
records the error for `mailwatch health`.  Which lists are due, and what is on
them, is `core/still_waiting.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mailwatch.adapters.render import Renderer
from mailwatch.adapters.smtp import Mailer, NotConfigured, TransportError
from mailwatch.claims import STILL_WAITING, still_waiting_key
from mailwatch.core.model import Absence, Request
from mailwatch.core.still_waiting import StillWaitingList, due_lists
from mailwatch.nudge_mail import still_waiting_context

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Store

log = logging.getLogger(__name__)


@dataclass
class ListsRun:
    due: list[StillWaitingList]
    sent: list[StillWaitingList] = field(default_factory=list)
    failed: list[tuple[StillWaitingList, str, bool]] = field(default_factory=list)  # permanent?
    lines: list[str] = field(default_factory=list)


def send_still_waiting(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    waiting: list[Request],
    absences: list[Absence],
    mailer: Mailer | None,
    renderer: Renderer,
    dry_run: bool = False,
) -> ListsRun:
    """`waiting`: the requests open or overdue at `now`.  A dry run sends and claims nothing."""
    taken = {
        (claim.recipient, claim.key) for claim in store.claims(STILL_WAITING) if not claim.released
    }
    run = ListsRun(due_lists(waiting, settings.policy, absences, taken, now))
    if dry_run:
        for entry in run.due:
            run.lines.append(f"would send a still-waiting list to {_describe(entry)}")
        return run
    if not run.due:
        return run
    if mailer is None:
        raise NotConfigured("still-waiting lists are due but no [smtp] server is configured")
    listed = {r.opened_by for entry in run.due for r in (*entry.for_head, *_mine(entry))}
    openers = {m.key: m for m in store.messages_by_keys(listed)}
    for entry in run.due:
        key = still_waiting_key(entry.day)
        if not store.claim(STILL_WAITING, key, entry.recipient, now):
            continue  # another worker sends it
        context = still_waiting_context(
            entry,
            policy=settings.policy,
            messages=openers,
            now=now,
            waive_keyword=settings.sync.waive_keyword,
            waive_folder=settings.sync.waive_folder,
        )
        try:
            rendered = renderer.render("still_waiting", context)
            mailer.send([entry.recipient], rendered, headers={"X-Mailwatch": "still-waiting"})
        except TransportError as error:
            kind = "permanent" if error.permanent else "temporary"
            log.warning("still-waiting list to %s failed (%s): %s", entry.recipient, kind, error)
            store.mark_failed(STILL_WAITING, key, entry.recipient, str(error), error.permanent, now)
            run.failed.append((entry, str(error), error.permanent))
            run.lines.append(f"FAILED to send the still-waiting list to {entry.recipient}: {error}")
            continue
        except Exception as error:
            # A bug (a template, say): give the claim back so a fixed version can send it.
            store.mark_failed(STILL_WAITING, key, entry.recipient, repr(error), False, now)
            raise
        store.mark_sent(STILL_WAITING, key, entry.recipient, now)
        run.sent.append(entry)
        run.lines.append(f"sent a still-waiting list to {_describe(entry)}")
        log.info("sent a still-waiting list to %s", entry.recipient)
    return run


def _mine(entry: StillWaitingList) -> list[Request]:
    return [responsibility.request for responsibility in entry.mine]


def _describe(entry: StillWaitingList) -> str:
    parts = [f"{len(entry.mine)} overdue request(s) they answer for"] if entry.mine else []
    if entry.for_head:
        parts.append(f"{len(entry.for_head)} long overdue (as Head of Client Management)")
    subjects = "; ".join(
        f"{r.account}: '{' '.join(r.subject.split()) or '(no subject)'}'"
        for r in (*_mine(entry), *entry.for_head)
    )
    return f"{entry.recipient}: {', '.join(parts)} — {subjects}"
