"""Replies mailwatch may not have seen: a client answering staff mail that no watched
folder holds (sent from a mailbox mailwatch does not watch, or deleted)."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import replace

from mailwatch.core.model import Message, Request


def looks_like_staff_mail(message_id: str, agency_domains: Sequence[str]) -> bool:
    """A Message-ID made at an agency domain, or a host of one: mail clients and servers
    name the sender's domain or their own host in the Message-IDs they make."""
    domain = message_id.strip("<>").rpartition("@")[2].lower()
    return any(
        domain == agency or domain.endswith("." + agency)
        for agency in (d.lower() for d in agency_domains)
    )


def cites_unseen_staff_mail(
    message: Message, held: Container[str], agency_domains: Sequence[str]
) -> bool:
    """`message` names in In-Reply-To or References staff-looking mail not among `held`."""
    return any(
        key not in held and looks_like_staff_mail(key, agency_domains)
        for key in (*message.in_reply_to, *message.references)
    )


def with_unseen_replies(
    requests: Sequence[Request], known: Sequence[Message], agency_domains: Sequence[str]
) -> list[Request]:
    """`requests`, those of which a client message cites staff-looking mail that no
    message of `known` is marked `reply_possibly_unseen`."""
    by_key = {m.key: m for m in known}
    return [
        replace(request, reply_possibly_unseen=True)
        if any(
            cites_unseen_staff_mail(by_key[key], by_key, agency_domains)
            for key in request.messages
            if key in by_key
        )
        else request
        for request in requests
    ]
