"""Who the configuration has not caught up with, for `status` and the digests: staff who
write to clients but are not listed as staff, and outsiders staff answer who belong to no
account."""

from __future__ import annotations

from collections.abc import Sequence

from mailwatch.core.addresses import Directory
from mailwatch.core.model import Classification, Message, Role


def unlisted_senders(
    messages: Sequence[Message], classes: dict[str, Classification], directory: Directory
) -> tuple[str, ...]:
    found = set()
    for message in messages:
        c = classes[message.key]
        if (
            c.role is Role.STAFF
            and c.automated is None
            and not c.can_answer
            and c.responder
            and directory.accounts_addressed(message.recipients)
        ):
            found.add(c.responder)
    return tuple(sorted(found))


def unknown_correspondents(
    messages: Sequence[Message], classes: dict[str, Classification], directory: Directory
) -> tuple[str, ...]:
    by_key = {m.key: m for m in messages}
    found = set()
    for message in messages:
        c = classes[message.key]
        if c.role is not Role.STAFF or c.automated is not None:
            continue
        for ref in message.in_reply_to:
            parent = by_key.get(ref)
            if parent and classes[ref].role is Role.OTHER and classes[ref].automated is None:
                if parent.from_addr:
                    found.add(parent.from_addr)
    return tuple(sorted(found))
