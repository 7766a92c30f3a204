"""What the nudge, digest, client report and alert passes claim in the store before they send.

A claim is (kind, key, recipient): taken before the email goes out, marked
sent or failed after, so each nudge, digest, client report and alert is sent at most once
whichever worker or run builds it.  The kinds and the formats of their keys are here,
shared by the passes that claim and by those that read the claims (health,
digests, privacy).
"""

from __future__ import annotations

from datetime import date

from mailwatch.core.periods import Period

NUDGE = "nudge"
DIGEST = "digest"
CLIENT_REPORT = "client-report"
# The daily list of overdue requests, one a day per person (key: their local date).
STILL_WAITING = "still-waiting"
# A request escalated to the Directors (key: `nudge_key(opened_by, "directors")`).
DIRECTORS = "directors"
# A nudge (or an escalation) skipped for lateness, recorded once (the reason in `error`)
# for the next digest.
SKIPPED = "nudge-skipped"
# An alert that a problem started, and the email that says it ended (alerts.py).
ALERT = "alert"
ALERT_RECOVERED = "alert-recovered"
# The mail sent on behalf of the agency's promise: a send of any of these that fails is a
# health problem and an alert (an alert that fails is logged: it cannot alert itself).
PROMISED_MAIL = (NUDGE, STILL_WAITING, DIRECTORS, DIGEST, CLIENT_REPORT)


def nudge_key(opened_by: str, stage: str) -> str:
    """The key of a nudge (and of a skipped one): the request's first message and the stage."""
    return f"{opened_by}|{stage}"


def still_waiting_key(day: date) -> str:
    """The key of a still-waiting list: the recipient's local date, "2026-11-24"."""
    return day.isoformat()


def split_claim_key(key: str) -> tuple[str, str]:
    """(opened_by, stage) of a nudge key: a Message-ID may hold "|", a stage name does not."""
    opened_by, _, stage = key.rpartition("|")
    return opened_by, stage


def alert_key(problem: str, since: str) -> str:
    """The key of an alert: the problem ("mailbox:alice") and which occurrence of it
    (an ISO instant or "never", neither holding "|")."""
    return f"{problem}|{since}"


def split_alert_key(key: str) -> tuple[str, str]:
    """(problem, since) of an alert key: a mailbox or job name may hold "|"."""
    problem, _, since = key.rpartition("|")
    return problem, since


def digest_key(period: Period) -> str:
    """The key of a digest: its period, "week:2026-W47"."""
    return period.key


def client_report_key(period: Period, account: str) -> str:
    """The key of a client report: its period, then the account ("month:2026-11|Acme Ltd")."""
    return f"{period.key}|{account}"
