"""What the process parsing a long first sync's batches does (`sync_batches.py`): pure
work, header bytes in and core Messages out, each classified from its one copy, so it
imports neither the store nor IMAP and starts light."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import NamedTuple

from mailwatch.adapters.parse import courtesy_of, parse_message
from mailwatch.core.addresses import Directory
from mailwatch.core.classification import verdicts
from mailwatch.core.model import Checkpoint, Copy, Message, Policy, Verdict
from mailwatch.core.times import trusted_times


class Arrived(NamedTuple):
    """What the parsing needs of a fetched message."""

    raw_headers: bytes
    internal_date: datetime  # UTC
    flags: tuple[str, ...]
    sent: bool  # in the Sent folder, or labelled \Sent in Gmail's \All
    waive_folder: bool  # in the waive folder, or carrying the waive label
    gm_thrid: str | None


class Parsed(NamedTuple):
    """A batch parsed, in the order it came: each message with its one copy (or why it
    cannot be parsed), and its classification from that copy (None: left to the
    evaluation). Two lists rather than a pair for each message: they unpickle in a third of
    the time."""

    messages: list[Message | str]
    verdicts: list[Verdict | None]


def parsed_batch(
    arrived: list[Arrived],
    checkpoint: Checkpoint,
    waive_keyword: str,
    now: datetime,
    seen: datetime,
    policy: Policy | None,
) -> Parsed:
    """Each message as a core Message with its one copy and, under a `policy`, classified
    from it (the first evaluation of years of mail need not read it back for that), or why
    it cannot be parsed: one bad message never stops the sync. `seen`: today, even when
    `now` is an instant in the past (it bounds the times a message can claim)."""
    parsed: list[Message | str] = []
    for message in arrived:
        try:
            parsed.append(copied_message(message, checkpoint, waive_keyword, now, seen))
        except Exception as error:
            parsed.append(f"{type(error).__name__}: {error}")
    found = _verdicts([m for m in parsed if isinstance(m, Message)], policy)
    return Parsed(parsed, [None if isinstance(m, str) else found.get(m.key) for m in parsed])


def _verdicts(messages: list[Message], policy: Policy | None) -> dict[str, Verdict]:
    """Each message's verdict under `policy`; none if that fails, the mail is stored
    either way (and the evaluation classifies it itself)."""
    if policy is None:
        return {}
    try:
        return verdicts(messages, policy, Directory(policy))
    except Exception:
        return {}


def copied_message(
    arrived: Arrived, checkpoint: Checkpoint, waive_keyword: str, now: datetime, seen: datetime
) -> Message:
    message = parse_message(arrived.raw_headers)
    keyword = waive_keyword.lower() in (flag.lower() for flag in arrived.flags)
    copy = Copy(
        mailbox=checkpoint.mailbox,
        folder=checkpoint.folder,
        sent_folder=arrived.sent,
        internal_date=arrived.internal_date,
        received_time=message.received_time,
        waive_keyword=keyword,
        waive_folder=arrived.waive_folder,
        waive_seen_at=now if keyword or arrived.waive_folder else None,
        gm_thrid=arrived.gm_thrid,
    )
    return trusted_times(dataclasses.replace(message, copies=(copy,)), seen)


def courteous_uids(replies: list[tuple[int, bytes, bytes]]) -> set[int]:
    """Of (uid, header block, first body bytes) of client replies, the UIDs of those whose
    text only thanks or acknowledges."""
    return {uid for uid, headers, prefix in replies if prefix and courtesy_of(headers, prefix)}
