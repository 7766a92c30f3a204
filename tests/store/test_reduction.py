"""The reduction of mail with no client on years of mail: it holds a chunk of it at a time."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import update

from mailwatch.store.privacy import ReductionPolicy
from mailwatch.store.tables import MESSAGES
from tests.store.test_repository import T0, imap_copy

MESSAGES_STORED = 4_000
HEADER_SIZE = 4_000  # characters of one header field of each message


def internal_mail(number: int):
    stored = imap_copy(f"<m{number}@rouge.example>", uid=number + 1, at=T0)
    message = replace(
        stored.message,
        from_addr="alice@rouge.example",
        to=("bob@rouge.example",),
        cc=(),
        headers=(("x-long", f"{number:05d}" + "x" * HEADER_SIZE),),
    )
    return replace(stored, message=message)


def test_reducing_mail_with_no_client_never_holds_every_message_at_once(store):
    for start in range(0, MESSAGES_STORED, 500):
        store.add_messages([internal_mail(n) for n in range(start, start + 500)])
    with store.engine.begin() as conn:  # evaluated staff mail, each its own thread
        conn.execute(update(MESSAGES).values(role="staff", dirty=0, thread_id=MESSAGES.c.key))
    policy = ReductionPolicy(grace=timedelta(days=30), recipient_headers=frozenset())

    tracemalloc.start()
    try:
        reduced = store.reduce_unrelated_mail(
            [], T0 + timedelta(days=60), lambda address: False, policy
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert reduced == MESSAGES_STORED
    assert peak < MESSAGES_STORED * HEADER_SIZE / 2
