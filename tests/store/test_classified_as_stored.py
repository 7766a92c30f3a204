"""Mail classified as it is stored: a first evaluation classifies again only what was not
(a message stored with more than one copy, or classified under another policy), and stores
exactly what it stores when it classifies everything itself, on both databases."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select, update

from mailwatch import evaluation_parts
from mailwatch.core.addresses import Directory
from mailwatch.core.classification import verdicts
from mailwatch.core.model import Copy, policy_fingerprint
from mailwatch.evaluation import POLICY_STATE, refresh_requests
from mailwatch.store.messages import StoredMessage
from mailwatch.store.repository import Store
from mailwatch.store.tables import MESSAGES
from tests.core.factory import at, client, staff
from tests.store.test_evaluation_workers import agency_history, what_is_stored
from tests.store.test_incremental import NOW, settings_with, stored


def classified_as_stored(items: list[StoredMessage]) -> list[StoredMessage]:
    """Each copy with the verdict found from it alone, as a poll stores it."""
    policy = settings_with().policy
    directory = Directory(policy)
    return [
        replace(item, verdict=verdicts([item.message], policy, directory)[item.message.key])
        for item in items
    ]


def history_with_copies() -> list:
    """The agency's month, every third client message also in a backup's inbox (a Cc),
    and replies sent on behalf of a colleague (From elsewhere, Sender the colleague)."""
    mail = agency_history()
    for n in range(0, len(mail), 3):
        first = mail[n].copies[0]
        if not first.sent_folder:
            backup = Copy("bob", "INBOX", internal_date=first.internal_date)
            mail[n] = replace(mail[n], copies=(*mail[n].copies, backup))
    for day in (3, 9):
        on_behalf = staff(f"d{day}", at(day, 16), frm="dave@studio.example", refs=(f"<c{day}>",))
        mail.append(replace(on_behalf, sender_addr="dave@rouge.example"))
    return mail


def classified_under(store: Store) -> dict[str, str | None]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(MESSAGES.c.key, MESSAGES.c.classified_under)).all())


def test_a_first_evaluation_reclassifies_only_what_was_not_classified_as_stored_and_stores_the_same(
    store, monkeypatch
):
    policy = policy_fingerprint(settings_with().policy)
    items = classified_as_stored(stored(history_with_copies()))
    copies = [item.message.key for item in items]
    several = {key for key in copies if copies.count(key) > 1}
    store.add_messages(items, None, policy)
    reclassified: list[str] = []
    classified = evaluation_parts.classified

    def noted(settings, rows):
        reclassified.extend(row.message.key for row in rows)
        return classified(settings, rows)

    monkeypatch.setattr(evaluation_parts, "classified", noted)
    refresh_requests(settings_with(), store, NOW)
    as_stored = what_is_stored(store)
    with store.engine.begin() as conn:  # as if nothing had been classified as it was stored
        conn.execute(update(MESSAGES).values(classified_under=None))
    store.set_state(POLICY_STATE, "")
    reclassified_first = sorted(reclassified)
    reclassified.clear()
    refresh_requests(settings_with(), store, NOW)

    assert several
    assert reclassified_first == sorted(several)
    assert len(reclassified) == len(set(copies))
    assert what_is_stored(store) == as_stored
    # found from the stored columns, as from the mail: Sender on behalf included
    assert "dave@rouge.example" in as_stored["people"]
    assert "alice@rouge.example" in as_stored["people"]
    assert len(as_stored["requests"]) >= 10


def test_a_copy_stored_later_leaves_a_message_to_be_classified_again(store):
    policy = policy_fingerprint(settings_with().policy)
    question = client("q1", at(0, 9))
    inbox = replace(question, copies=(Copy("alice", "INBOX", internal_date=at(0, 9)),))
    backup = replace(question, copies=(Copy("bob", "INBOX", internal_date=at(0, 9, 1)),))
    twice = client("q2", at(0, 10))
    first, again = (replace(twice, copies=(Copy(m, "INBOX"),)) for m in ("alice", "bob"))

    store.add_messages(classified_as_stored(stored([inbox, first, again])), None, policy)
    before = classified_under(store)
    store.add_messages(classified_as_stored(stored([backup])), None, policy)
    store.add_messages(classified_as_stored(stored([client("q3", at(0, 11))])))

    assert before == {"<q1>": policy, "<q2>": None}  # two copies in one batch: not kept
    assert classified_under(store) == {"<q1>": None, "<q2>": None, "<q3>": None}


@pytest.mark.parametrize("policy", [None, "a fingerprint"])
def test_a_message_stored_without_a_verdict_is_classified_by_the_evaluation(store, policy):
    store.add_messages(stored([client("q1", at(0, 9))]), None, policy)

    rows = store.loaded_between(0, store.last_row_id(), policy_fingerprint(settings_with().policy))

    assert [row.message.key for row in rows] == ["<q1>"]
    assert classified_under(store) == {"<q1>": None}


def test_a_copy_stored_while_its_message_is_classified_leaves_it_to_be_classified_again(
    store, monkeypatch
):
    question = client("q1", at(0, 9))
    store.add_messages(stored([question]))
    loaded_between = store.loaded_between
    backup = replace(question, copies=(Copy("bob", "INBOX", internal_date=at(0, 8, 30)),))

    def then_a_poll_stores_a_copy(*args):
        rows = loaded_between(*args)
        store.add_messages(stored([backup]))  # after it was read, before it is stored
        return rows

    monkeypatch.setattr(store, "loaded_between", then_a_poll_stores_a_copy)
    refresh_requests(settings_with(), store, NOW)

    assert classified_under(store) == {"<q1>": None}
    assert set(store.dirty_keys()) == {"<q1>"}  # and evaluated again with both copies
