"""Accounts gone quiet (issue 18): no human client message and no staff message to the
client for the account's `check_in_after`, so its manager is prompted to check in.  Listed
in digests while quiet, never nudged; the next contact takes it off the list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailwatch.core.model import Account

_WEEK = timedelta(weeks=1)


@dataclass(frozen=True)
class QuietAccount:
    account: str
    manager: str | None
    last_contact: datetime | None  # None: no contact in the stored mail at all
    silent_for: timedelta | None  # since the last contact, as of now


def quiet_accounts(
    accounts: tuple[Account, ...],
    check_in_after: Mapping[str, timedelta | None],
    last_contact: Mapping[str, datetime],
    now: datetime,
) -> list[QuietAccount]:
    """The accounts whose last contact is `check_in_after` or longer before `now` (an account
    whose `check_in_after` is None is never listed), longest silent first."""
    quiet = []
    for account in accounts:
        after = check_in_after.get(account.name)
        if after is None:
            continue
        last = last_contact.get(account.name)
        if last is None or now - last >= after:
            silent = None if last is None else now - last
            quiet.append(QuietAccount(account.name, account.manager, last, silent))
    return sorted(quiet, key=lambda q: (q.last_contact is not None, q.last_contact, q.account))


def silence_text(quiet: QuietAccount) -> str:
    """ "No contact with Acme Ltd for 5 weeks — time for a check-in?" """
    if quiet.silent_for is None:
        silence = "in the stored mail"
    else:
        silence = f"for {_weeks_or_days(quiet.silent_for)}"
    return f"No contact with {quiet.account} {silence} — time for a check-in?"


def _weeks_or_days(silence: timedelta) -> str:
    if silence >= 2 * _WEEK:
        return f"{silence // _WEEK} weeks"
    days = silence.days
    return f"{days} day{'s' if days != 1 else ''}"
