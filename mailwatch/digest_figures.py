"""What a digest shows, as figures: the `.json` that `digest --output` writes and that a
sent digest keeps (`digests.KEPT_FIGURES`).  Words and local times are `digest_text.py`'s.

Statuses are as of `now` (the send time), so a request received late in the period that
is still unanswered counts as open or overdue.  The sync figure is built from the latest
state of each mailbox: the store keeps the last success and the last error, not a full
history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from mailwatch.claims import split_claim_key
from mailwatch.core.lessons import Lesson, lesson_of
from mailwatch.core.model import Request, Status
from mailwatch.core.periods import Period
from mailwatch.core.stats import (
    Outcome,
    Summary,
    Tally,
    late_seconds,
    of_person,
    summary_of,
    tally,
    wait_seconds,
)
from mailwatch.core.trends import periods_with_data, trends
from mailwatch.digest_sections import DigestSections
from mailwatch.output import iso, waiver_warnings

if TYPE_CHECKING:
    from mailwatch.config import Settings
    from mailwatch.store.repository import Claim, SyncState

WORST_WAITS = 5
BREACHES = (Status.BREACHED, Status.OVERDUE)


@dataclass(frozen=True)
class PeriodFacts:
    """What every digest of one period is built from, read from the store once."""

    settings: Settings
    period: Period
    earlier: Sequence[Period]  # the periods of its kind before it, oldest first (the trend)
    # as of `now`, in full: this period's and those since, and of the earlier periods
    # those shown beyond their figures (`digest_requests.py`)
    requests: Sequence[Request]
    outcomes: Sequence[Sequence[Outcome]]  # as of `now`: those received in each of `earlier`
    skipped: list[Claim]  # nudges skipped in the period
    syncs: list[SyncState]
    now: datetime
    revisions: list[dict[str, Any]]  # to earlier periods, for the agency digest
    lessons: Mapping[str, Lesson]  # as of `now`, by client message
    sections: DigestSections  # busiest hours, unconfigured senders, quiet accounts, lessons

    @property
    def before(self) -> Period:
        return self.earlier[-1]

    @cached_property
    def by_opener(self) -> dict[str, Request]:
        return {r.opened_by: r for r in self.requests}

    @cached_property
    def of_period(self) -> list[Request]:
        """The requests received in the period, in the stored order (received, then stored
        first)."""
        return [r for r in self.requests if self.period.start <= r.received_at < self.period.end]

    def received(self, accounts: tuple[str, ...] | None) -> list[Request]:
        """Those of `of_period` of `accounts` (None: all), found once per digest."""
        if accounts not in self.received_by_accounts:
            wanted = None if accounts is None else set(accounts)
            found = [r for r in self.of_period if wanted is None or r.account in wanted]
            self.received_by_accounts[accounts] = found
        return self.received_by_accounts[accounts]

    @cached_property
    def received_by_accounts(self) -> dict[tuple[str, ...] | None, list[Request]]:
        return {}

    @cached_property
    def account_tallies(self) -> dict[str, Tally]:
        """The requests of `of_period` of each account, tallied once for every digest."""
        return {account: tally(found) for account, found in _by_account(self.of_period).items()}

    @cached_property
    def person_tallies(self) -> dict[str, dict[str, Tally]]:
        """Those of each account, by responsible person (shared: counted for each)."""
        return {
            account: {person: tally(group) for person, group in of_person(found).items()}
            for account, found in _by_account(self.of_period).items()
        }

    @cached_property
    def earlier_tallies(self) -> list[dict[str, Tally]]:
        """The outcomes of each of `earlier`, tallied by account once for every digest."""
        return [
            {account: tally(found) for account, found in _by_account(outcomes).items()}
            for outcomes in self.outcomes
        ]

    def earlier_summaries(self, accounts: tuple[str, ...] | None) -> list[Summary]:
        """The figures of `accounts` (None: all) in each of `earlier`, oldest first."""
        return [_summary_of(tallies, accounts) for tallies in self.earlier_tallies]

    def figures(self, recipient: str, accounts: tuple[str, ...] | None) -> dict[str, Any]:
        """The digest of `recipient` over `accounts` (None: the whole agency)."""
        policy = self.settings.policy
        requests = self.received(accounts)
        summary = _summary_of(self.account_tallies, accounts)
        earlier_summaries = self.earlier_summaries(accounts)
        breaches = _worst_breaches(requests)
        names = accounts if accounts is not None else tuple(a.name for a in policy.accounts)
        of_account = {name: self.account_tallies.get(name, _NOTHING) for name in names}
        if accounts is None:
            of_account |= self.account_tallies  # accounts no longer configured too
        managers: dict[str, list[Tally]] = {}
        for account in policy.accounts:
            if account.manager and account.name in names:
                managers.setdefault(account.manager, []).append(of_account[account.name])
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
            "summary": summary.as_dict(),
            "accounts": {
                name: summary_of([of_account[name]]).as_dict() for name in sorted(of_account)
            },
            "managers": {who: summary_of(ts).as_dict() for who, ts in sorted(managers.items())},
            "people": {who: s.as_dict() for who, s in self.people(accounts).items()},
            "previous": {
                "key": self.before.key,
                "label": self.before.label,
                "summary": earlier_summaries[-1].as_dict(),
            },
            "trend": self.trend_json(summary, earlier_summaries),
            "no_data": not requests and not self.synced_since(self.period.start),
            "worst_waits": [_wait_json(r) for r in _worst(requests)],
            "breaches": [_breach_json(r, lesson_of(r, self.lessons)) for r in breaches],
            "breaches_without_reason": self.without_reason(breaches),
            "waivers": [_waiver_json(r) for r in requests if r.status is Status.WAIVED],
            "waivers_to_check": [_waiver_json(r) for r in self.waivers_to_check(accounts)],
            "skipped_nudges": self.skipped_json(accounts),
            "sync": self.sync_json(),
            "revisions": self.revisions if accounts is None else [],
            # a new section: its figures here or in digest_sections.py, its words in
            # digest_text.digest_context, its block in templates/digest*.{html,txt}
            **self.sections.figures(recipient, accounts, requests),
        }

    def people(self, accounts: tuple[str, ...] | None) -> dict[str, Summary]:
        """Per responsible person, over the requests of `accounts` (None: all)."""
        tallies: dict[str, list[Tally]] = {}
        for account, persons in self.person_tallies.items():
            if accounts is None or account in accounts:
                for person, found in persons.items():
                    tallies.setdefault(person, []).append(found)
        return {person: summary_of(found) for person, found in sorted(tallies.items())}

    def trend_json(self, current: Summary, earlier: Sequence[Summary]) -> dict[str, Any]:
        """Compliance, volume and median reply against the period before and the average
        of the periods before (those that received requests)."""
        found = trends(current, earlier)
        return {
            "previous": {"key": self.before.key, "label": self.before.label},
            "periods": [p.key for p in self.earlier],
            "periods_with_data": periods_with_data(earlier),
            **{figure: trend.as_dict() for figure, trend in found.items()},
        }

    def without_reason(self, breaches: Sequence[Request]) -> dict[str, int]:
        """Breaches with no lesson recorded, per person responsible (shared: each counted)."""
        counts: dict[str, int] = {}
        for request in breaches:
            if lesson_of(request, self.lessons) is None:
                for person in request.responsible:
                    counts[person] = counts.get(person, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def synced_since(self, instant: datetime) -> bool:
        return any(s.last_ok_at is not None and s.last_ok_at >= instant for s in self.syncs)

    def waivers_to_check(self, accounts: tuple[str, ...] | None) -> list[Request]:
        """Waivers made in the period after the deadline or the answer, whenever the request
        was received: a breach must not leave the figures unseen."""
        return [r for r in self.late_waivers if accounts is None or r.account in accounts]

    @cached_property
    def late_waivers(self) -> list[Request]:
        """`waivers_to_check` of every account, found once for all digests."""
        return sorted(
            (
                r
                for r in self.requests
                if r.status is Status.WAIVED
                and r.waiver is not None
                and self.period.start <= r.waiver.seen_at < self.period.end
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
            folders = sorted(s.folder or "" for s in folder_errors)
            condition, at, problem = None, None, None
            if state is None or state.last_ok_at is None:
                condition, problem = "never_synced", "never synced"
            elif state.last_ok_at < self.period.end - stale_after:
                condition, at = "stale", state.last_ok_at
                problem = f"no successful sync since {iso(at)}"
            elif state.last_error_at and self.period.start <= state.last_error_at:
                condition, at = "errors", state.last_error_at
                problem = f"errors in the period (last at {iso(at)})"
            elif folder_errors:
                condition = "folder_errors"
                problem = f"folder errors in the period: {', '.join(folders)}"
            if problem:
                gaps.append(
                    {
                        "mailbox": mailbox.name,
                        "problem": problem,
                        "last_error": state.last_error if state and state.last_error else None,
                        "condition": condition,
                        "at": iso(at),
                        "folders": folders if condition == "folder_errors" else [],
                    }
                )
        return {"mailboxes": len(self.settings.mailboxes), "gaps": gaps}


_NOTHING = tally(())  # of an account that received no request
_Grouped = TypeVar("_Grouped", Request, Outcome)


def _summary_of(tallies: Mapping[str, Tally], accounts: tuple[str, ...] | None) -> Summary:
    """The summary of the requests of `accounts` (None: all) from their tallies."""
    return summary_of(
        t for account, t in tallies.items() if accounts is None or account in accounts
    )


def _by_account(requests: Iterable[_Grouped]) -> dict[str, list[_Grouped]]:
    groups: dict[str, list[_Grouped]] = {}
    for request in requests:
        groups.setdefault(request.account, []).append(request)
    return groups


def _worst(requests: Sequence[Request]) -> list[Request]:
    waiting = [r for r in requests if r.status is not Status.WAIVED]
    return sorted(waiting, key=lambda r: (-wait_seconds(r), r.received_at))[:WORST_WAITS]


def _worst_breaches(requests: Sequence[Request]) -> list[Request]:
    """Breached and overdue (as of now), worst (latest past the target) first."""
    breaches = [r for r in requests if r.status in BREACHES]
    return sorted(breaches, key=lambda r: (-late_seconds(r), r.received_at, r.opened_by))


def _breach_json(request: Request, lesson: Lesson | None) -> dict[str, Any]:
    return {
        "account": request.account,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": iso(request.received_at),
        "status": request.status.value,
        "answered_at": iso(request.answered_at),
        "responder": request.responder,
        "answered_via": request.answered_via,
        "late_seconds": late_seconds(request),
        "tier": request.tier,
        "target_seconds": request.target_seconds,
        "deadline": iso(request.deadline),
        "responsible": list(request.responsible),
        "reason": lesson.reason if lesson else None,
        "reason_category": lesson.category if lesson else None,
    }


def _wait_json(request: Request) -> dict[str, Any]:
    return {
        "account": request.account,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": iso(request.received_at),
        "wait_seconds": wait_seconds(request),
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
