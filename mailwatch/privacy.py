"""Privacy: retention, and the answers to data-protection requests (`export`, `forget`).

Retention deletes stored messages older than `[database] retention_days`; the
requests computed from them stay (the store freezes requests received before
its retention horizon).  `export` gathers everything stored about one address;
`forget` deletes the conversations it took part in and keeps their requests for
the figures without the address and subject.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from mailwatch import output
from mailwatch.claims import ALERT, ALERT_RECOVERED, PROMISED_MAIL
from mailwatch.config import Settings
from mailwatch.core.lessons import LessonRecord
from mailwatch.core.model import Message
from mailwatch.evaluation import ATTENTION_STATE, attention, evaluation_turn, refresh_requests
from mailwatch.store.repository import Forgotten, Store


@dataclass(frozen=True)
class Retention:
    cutoff: datetime
    deleted: int


def apply_retention(settings: Settings, store: Store, now: datetime) -> Retention:
    """Delete the messages that arrived more than `retention_days` before `now`."""
    cutoff = now - timedelta(days=settings.retention_days)
    return Retention(cutoff, store.delete_messages_before(cutoff))


def normalise_address(text: str) -> str:
    """`Jane@ACME.example` and `<jane@acme.example>` name the stored `jane@acme.example`."""
    address = text.strip().strip("<>").strip().lower()
    if address.count("@") != 1 or not all(address.split("@")):
        raise ValueError(f"{text!r} is not an email address")
    return address


def export_address(store: Store, address: str, now: datetime, raw: bool = False) -> dict[str, Any]:
    """Everything stored about `address`, as a JSON-ready document."""
    messages = store.messages_about(address)
    keys = {message.key for message, _, _ in messages}
    requests = [
        r
        for r in store.requests()
        if keys & {r.opened_by, r.answered_by, *r.messages}
        or r.responder == address
        or address in r.responsible
    ]
    # a lesson is recorded on a client message of the request: of these requests, or theirs
    lesson_keys = keys | {key for r in requests for key in r.messages}
    return {
        "address": address,
        "generated_at": output.iso(now),
        "messages": [_message_json(m, arrived, block, raw) for m, arrived, block in messages],
        "requests": [output.request_json(r) for r in requests],
        "waivers": [
            {
                "message_id": w.message_key,
                "by": w.by,
                "seen_at": output.iso(w.seen_at),
                "reason": w.reason,
            }
            for w in store.waivers()
            if w.message_key in keys or address in w.by.lower()
        ],
        "lessons": [
            _lesson_record_json(record)
            for record in store.lesson_records(now)
            if record.message_key in lesson_keys
            or address in (record.made_by.lower(), (record.owner or "").lower())
        ],
        "claims": [
            {
                "kind": c.kind,
                "key": c.key,
                "claimed_at": output.iso(c.claimed_at),
                "sent_at": output.iso(c.sent_at),
                "error": c.error,
            }
            for kind in (*PROMISED_MAIL, ALERT, ALERT_RECOVERED)
            for c in store.claims(kind)
            if c.recipient == address
        ],
        "seen_sending_from_a_sent_folder": address in store.people(),
        "set_aside": [
            {"location": q.location, "error": q.error, "seen_at": output.iso(q.seen_at)}
            for q in store.quarantined_naming(address)
        ],
    }


def _lesson_record_json(record: LessonRecord) -> dict[str, Any]:
    return {
        "message_id": record.message_key,
        "made_by": record.made_by,
        "made_at": output.iso(record.made_at),
        "reason": record.reason,
        "category": record.category,
        "action": record.action,
        "owner": record.owner,
        "resolved": record.resolved,
        "note": record.note,
    }


def _message_json(message: Message, arrived: datetime, block: bytes, raw: bool) -> dict[str, Any]:
    document = {
        "message_id": message.key,
        "from": message.from_addr,
        "from_name": message.from_name,
        "sender": message.sender_addr,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "subject": message.subject,
        "date": output.iso(message.date),
        "arrived_at": output.iso(arrived),
        "in_reply_to": list(message.in_reply_to),
        "references": list(message.references),
        "headers": {name: value for name, value in message.headers},
        "copies": [
            {
                "mailbox": c.mailbox,
                "folder": c.folder,
                "internal_date": output.iso(c.internal_date),
                "waived": c.waive_keyword or c.waive_folder,
            }
            for c in message.copies
        ],
    }
    if raw:
        document["raw_headers"] = block.decode("utf-8", "replace")
    return document


class EvaluationBusy(Exception):
    pass


def forget_address(settings: Settings, store: Store, address: str, now: datetime) -> Forgotten:
    """Delete the conversations `address` took part in and every trace of it; the
    requests of those conversations stay in the figures, anonymous.

    The mail is evaluated first (so every message knows its conversation), and the
    deletion holds the evaluation turn: an evaluation running meanwhile would store
    requests computed from the mail being forgotten."""
    refresh_requests(settings, store, now)
    with evaluation_turn(store) as mine:
        if not mine:
            raise EvaluationBusy("another process kept evaluating requests; try again")
        forgotten = store.forget_address(address)
    notice = attention(store)
    cleaned = {
        name: [value for value in values if value != address]
        for name, values in asdict(notice).items()
    }
    store.set_state(ATTENTION_STATE, json.dumps(cleaned))
    return forgotten
