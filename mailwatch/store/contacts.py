"""Who mail was exchanged with, and when, from the classified messages: outside senders
staff replied to that no account covers, and each account's last contact.  Aggregated in
the database or streamed newest first, so memory stays bounded however much mail is kept."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, FromClause, Select, and_, func, literal_column, select

from mailwatch.store.db import CHUNK, Database, reading
from mailwatch.store.tables import HUMAN_CLIENT_MAIL, MESSAGES, REFERENCES

_HUMAN = MESSAGES.c.automated.is_(None)


@dataclass(frozen=True)
class UnconfiguredSender:
    """An outside sender that staff replied to who belongs to no account and is not staff."""

    address: str
    messages: int  # their human messages in the window
    last_seen: datetime


class ContactStore(Database):
    def unconfigured_senders(self, since: datetime, until: datetime) -> list[UnconfiguredSender]:
        """Outside senders (neither staff nor a client, and not automated mail or a list)
        with a message in [since, until) that a human staff message replies to or cites;
        their messages in the window counted, most recently seen first."""
        outsider = MESSAGES.alias("outsider")
        reply = MESSAGES.alias("reply")
        replied_to = (
            select(outsider.c.from_addr)
            .join(REFERENCES, REFERENCES.c.ref_key == outsider.c.key)
            .join(reply, reply.c.id == REFERENCES.c.message_id)
            .where(
                _human_other_mail(outsider),
                outsider.c.from_addr.is_not(None),
                outsider.c.arrived_at >= since,
                outsider.c.arrived_at < until,
                reply.c.role == "staff",
                reply.c.automated.is_(None),
                reply.c.arrived_at < until,
            )
        )
        last_seen = func.max(MESSAGES.c.arrived_at)
        query = (
            select(MESSAGES.c.from_addr, func.count(), last_seen)
            .where(
                _human_other_mail(MESSAGES),
                MESSAGES.c.arrived_at >= since,
                MESSAGES.c.arrived_at < until,
                MESSAGES.c.from_addr.in_(replied_to),
            )
            .group_by(MESSAGES.c.from_addr)
            .order_by(last_seen.desc(), MESSAGES.c.from_addr)
        )
        with reading(self.engine) as conn:
            return [UnconfiguredSender(*row) for row in conn.execute(query)]

    def last_contacts(
        self, until: datetime, account_of: Callable[[str], str | None], accounts: Collection[str]
    ) -> dict[str, datetime]:
        """The last human mail from a client of each of `accounts`, or from staff to one,
        that arrived by `until`.  A reduced message (store/privacy.py) keeps its sender and
        time, so a client's message counts after a reduction; staff mail was reduced only
        when it named no client, so it was no contact with one then."""
        wanted = set(accounts)
        found: dict[str, datetime] = {}

        def seen(address: str | None, at: datetime) -> None:
            account = account_of(address) if address else None
            if account in wanted and (account not in found or at > found[account]):
                found[account] = at

        from_clients = _last_from_each_client(until)
        staff_mail = (
            select(MESSAGES.c.to, MESSAGES.c.cc, MESSAGES.c.bcc, MESSAGES.c.arrived_at)
            .where(and_(MESSAGES.c.role == "staff", _HUMAN, MESSAGES.c.arrived_at <= until))
            .order_by(MESSAGES.c.arrived_at.desc(), MESSAGES.c.id.desc())
            .execution_options(yield_per=CHUNK)
        )
        with reading(self.engine) as conn:
            for address, at in conn.execute(from_clients):
                if at is not None:  # none of their mail had arrived by `until`
                    seen(address, at)
            unseen_by_staff = set(wanted)
            with conn.execute(staff_mail) as rows:
                for row in rows:
                    # newest first: once staff mail is older than the contact already found
                    # for every account it has not reached yet, it can change nothing more
                    if all(a in found and row.arrived_at <= found[a] for a in unseen_by_staff):
                        break
                    for address in (*row.to, *row.cc, *row.bcc):
                        seen(address, row.arrived_at)
                        unseen_by_staff.discard(account_of(address) or "")
        return found


def _human_other_mail(messages: FromClause) -> ColumnElement[bool]:
    """Human mail from outside senders, in the words of the index of it: with its values
    written out (not bound), SQLite sees that the index covers the rows asked for."""
    return and_(messages.c.role == literal_column("'other'"), messages.c.automated.is_(None))


def _last_from_each_client(until: datetime) -> Select[str | None, datetime | None]:
    """Each client sender's last human message by `until` (None: none by then), from the
    index of human client mail: a loose index scan, one seek to the next sender and one to
    their last message each, where grouping read every client message stored."""
    address = func.min(MESSAGES.c.from_addr).label("address")
    senders = select(address).where(HUMAN_CLIENT_MAIL).cte("senders", recursive=True)
    following = (
        select(func.min(MESSAGES.c.from_addr))
        .where(HUMAN_CLIENT_MAIL, MESSAGES.c.from_addr > senders.c.address)
        .scalar_subquery()
    )
    senders = senders.union_all(select(following).where(senders.c.address.is_not(None)))
    last = (
        select(func.max(MESSAGES.c.arrived_at))
        .where(
            HUMAN_CLIENT_MAIL,
            MESSAGES.c.from_addr == senders.c.address,
            MESSAGES.c.arrived_at <= until,
        )
        .scalar_subquery()
    )
    return select(senders.c.address, last).where(senders.c.address.is_not(None))
