"""Classifying messages (response-clock.md): each message's role, the staff person behind
it, the time it counts from and its automation verdict, and the people seen sending. Pure,
like the rest of the clock; a poll classifies each new message as it stores it, an
evaluation whatever was not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mailwatch.core.addresses import Directory
from mailwatch.core.automated import automation_reason, is_out_of_office
from mailwatch.core.model import Classification, Message, Policy, Role, Verdict
from mailwatch.core.times import arrival, sent_at


def _responder(message: Message, directory: Directory) -> str | None:
    return _responder_of(message.from_addr, message.sender_addr, directory)


def _responder_of(from_addr: str | None, sender: str | None, directory: Directory) -> str | None:
    if sender and directory.role(sender) is Role.STAFF and sender != from_addr:
        return directory.staff_main_address(sender)
    if from_addr:
        return directory.staff_main_address(from_addr)
    return None


def person_sending(from_addr: str | None, sender: str | None, directory: Directory) -> str | None:
    """The staff person who sent human mail from a watched Sent folder with these From and
    Sender addresses (Sender on behalf, aliases mapped), if it was staff: a person."""
    responder = _responder_of(from_addr, sender, directory)
    return responder if responder and directory.role(responder) is Role.STAFF else None


def people_seen_sending(
    messages: Sequence[Message], directory: Directory, automated: dict[str, str | None]
) -> set[str]:
    """Staff who wrote a human message found in a watched Sent folder: they are people."""
    people = set()
    for message in messages:
        if automated[message.key] is None and any(c.sent_folder for c in message.copies):
            if person := person_sending(message.from_addr, message.sender_addr, directory):
                people.add(person)
    return people


def classify(
    messages: Sequence[Message],
    policy: Policy,
    directory: Directory,
    known_people: frozenset[str] = frozenset(),
    verdicts: Mapping[str, str | None] | None = None,
) -> dict[str, Classification]:
    """Role, automation and time of each message; `known_people` adds the persons seen
    sending in mail outside `messages` (an incremental evaluation of a few threads);
    `verdicts` are automation verdicts already found (`automation_reason` under this
    policy) by message key, not found again."""
    found = verdicts or {}
    automated = {
        m.key: found[m.key] if m.key in found else automation_reason(m, policy) for m in messages
    }
    people = people_seen_sending(messages, directory, automated) | known_people
    result = {}
    for message in messages:
        identity = directory.identify(message.from_addr)
        responder = _responder(message, directory) if identity.role is Role.STAFF else None
        timed = counted_from(message, identity.role)
        result[message.key] = Classification(
            key=message.key,
            role=identity.role,
            account=identity.account,
            automated=automated[message.key],
            can_answer=bool(
                responder and (directory.is_listed_staff(responder) or responder in people)
            ),
            responder=responder,
            at=timed[0] if timed else None,
            time_source=timed[1] if timed else "none",
        )
    return result


def verdicts(
    messages: Sequence[Message], policy: Policy, directory: Directory
) -> dict[str, Verdict]:
    """What is kept of each message's classification, by key."""
    classes = classify(messages, policy, directory)
    return {m.key: _verdict(m, classes[m.key], policy) for m in messages}


def _verdict(message: Message, c: Classification, policy: Policy) -> Verdict:
    away = c.role is Role.STAFF and c.automated is not None and is_out_of_office(message, policy)
    return Verdict(c.role, c.responder, c.at, c.automated, away)


def counted_from(message: Message, role: Role) -> tuple[datetime, str] | None:
    """When a message counts from, and the source of that time: staff mail when sent,
    anything else when it reached the agency."""
    return sent_at(message) if role is Role.STAFF else arrival(message)
