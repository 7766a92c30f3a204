"""The Alembic migrations against the tables, on both databases."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, insert, inspect, select, table, text, update
from sqlmodel import SQLModel

from mailwatch.cli import main
from mailwatch.config import load_settings
from mailwatch.core.model import Copy, Message
from mailwatch.evaluation import refresh_requests
from mailwatch.store.db import alembic_config, reading, writing
from mailwatch.store.repository import ReportedFigures, Store, StoredMessage
from mailwatch.store.rows import REQUEST_COLUMNS, read_requests
from mailwatch.store.tables import MESSAGES, REQUESTS


def test_an_empty_database_is_not_current_until_upgraded(store_url: str):
    store = Store(store_url)
    try:
        assert not store.schema_is_current()
        store.upgrade()
        assert store.schema_is_current()
    finally:
        store.close()


def test_upgrading_twice_changes_nothing(store: Store):
    store.upgrade()

    assert store.schema_is_current()


def test_the_migrations_create_exactly_the_tables_the_code_declares(store: Store):
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)

    assert differences == []


def test_every_index_the_migrations_create_is_the_one_the_code_declares_condition_and_all(
    store: Store,
):
    # compare_metadata leaves out a partial index's condition, which a query must match to
    # use it: each index is created again from the tables' declaration, in a transaction
    # rolled back, and its definition as the database states it compared
    definition = (
        "SELECT sql FROM sqlite_master WHERE name = :name"
        if store.engine.dialect.name == "sqlite"
        else "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    )
    indexes = [index for table in SQLModel.metadata.tables.values() for index in table.indexes]
    with store.engine.connect() as conn, conn.begin() as transaction:
        migrated = {i.name: conn.scalar(text(definition), {"name": i.name}) for i in indexes}
        for index in indexes:
            index.drop(conn)
            index.create(conn)
        declared = {i.name: conn.scalar(text(definition), {"name": i.name}) for i in indexes}
        transaction.rollback()

    assert None not in migrated.values()
    assert migrated == declared
    assert "thread_id IS NOT NULL" in migrated["ix_message_thread_id"]


# ---------------------------------------------------------------- 0006: times that cannot be true

WEEK = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday in the past, whenever the test runs
YEAR_9999 = datetime(9999, 12, 31, 10, tzinfo=UTC)  # "Date: Fri, 31 Dec 9999": anyone can write it
YEAR_2038 = datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)  # Dovecot's INTERNALDATE for pre-1901


def client_copy(key: str, subject: str, date: datetime | None, copy: Copy) -> StoredMessage:
    message = Message(
        key=key,
        from_addr="jane@acme.example",
        to=("alice@rouge.example",),
        subject=subject,
        date=date,
        received_time=copy.received_time,
        copies=(copy,),
    )
    return StoredMessage(message, b"X: y\r\n\r\n", location=f"{copy.folder}/{key}")


FINE = client_copy(
    "<fine@acme.example>",
    "Homepage banner",
    WEEK + timedelta(hours=8),
    Copy("alice", "INBOX", internal_date=WEEK + timedelta(hours=8)),
)


def stored_before_times_were_checked() -> list[StoredMessage]:
    """Mail as an earlier mailwatch stored it: every time as the headers and server said."""
    nine = WEEK + timedelta(hours=9)
    return [
        client_copy("<far-date@acme.example>", "Banner colours", YEAR_9999, Copy("alice", "mail")),
        client_copy(
            "<far-received@acme.example>",
            "Invoice query",
            nine,
            Copy("alice", "mail", received_time=YEAR_9999),
        ),
        client_copy(
            "<far-internaldate@acme.example>",
            "Logo files",
            nine,
            Copy(
                "alice", "INBOX", internal_date=YEAR_2038, received_time=nine + timedelta(hours=1)
            ),
        ),
        client_copy(
            "<far-internaldate-only@acme.example>",
            "Hosting renewal",
            nine + timedelta(hours=2),
            Copy("alice", "INBOX", internal_date=YEAR_2038),
        ),
    ]


def upgrade_to(store: Store, revision: str) -> None:
    config = alembic_config()
    with writing(store.engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def refresh_at(revision: str, config: Path, store: Store, now: datetime) -> None:
    """Requests evaluated into a database at an earlier `revision`: this code evaluates on
    the current schema only, so there, and then the schema goes back to `revision`."""
    store.upgrade()
    refresh_requests(load_settings(config), store, now)
    alembic = alembic_config()
    with writing(store.engine) as conn:
        alembic.attributes["connection"] = conn
        command.downgrade(alembic, revision)


def agency_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        '[agency]\nname = "Rouge"\ndomains = ["rouge.example"]\ntimezone = "UTC"\n'
        f'[database]\nurl = "{url}"\n'
        '[[staff]]\nemail = "alice@rouge.example"\n'
        '[[accounts]]\nname = "Acme"\ndomains = ["acme.example"]\nmanager = "alice@rouge.example"\n'
    )
    return config


def test_an_upgrade_clears_times_that_cannot_be_true_and_measures_from_the_next_trustworthy_one(
    store_url: str, tmp_path: Path, capsys
):
    config = agency_config(tmp_path, store_url)
    now = WEEK + timedelta(hours=12)
    store = Store(store_url)
    try:
        upgrade_to(store, "0005")
        store.add_messages([FINE])
        refresh_at("0005", config, store, now)
        store.add_messages(stored_before_times_were_checked())
        # the earlier mailwatch evaluated these and left them out (not arrived until
        # 2038); every evaluation that reached the year 9999 overflowed
        with writing(store.engine) as conn:
            conn.execute(
                update(MESSAGES).where(MESSAGES.c.key.like("<far-internaldate%")).values(dirty=0)
            )
        store.upgrade()
    finally:
        store.close()

    code = main(["--config", str(config), "status", "--format", "json", "--now", now.isoformat()])
    status = json.loads(capsys.readouterr().out)

    assert code == 0
    assert [(r["opened_by"], r["received_at"]) for r in status["requests"]] == [
        ("<fine@acme.example>", "2025-03-03T08:00:00Z"),
        ("<far-received@acme.example>", "2025-03-03T09:00:00Z"),  # its Date stands in
        ("<far-internaldate@acme.example>", "2025-03-03T10:00:00Z"),  # its Received
        ("<far-internaldate-only@acme.example>", "2025-03-03T11:00:00Z"),  # its Date
    ]
    assert status["untimed"] == ["<far-date@acme.example>"]
    assert status["set_aside_threads"] == []


def test_a_message_left_without_any_trustworthy_time_arrives_when_it_was_stored_if_known(
    store_url: str,
):
    untimed_file = client_copy("<once-untimed@acme.example>", "Logo", None, Copy("alice", "mail"))
    store = Store(store_url)
    try:
        upgrade_to(store, "0005")
        later_copy = client_copy(
            "<once-untimed@acme.example>",
            "Logo",
            None,
            Copy("alice", "INBOX", internal_date=YEAR_2038),
        )
        # no time at all: it arrived when it was stored (a copy stored later is written by
        # this mailwatch as a change of classification, unknown to revision 0005)
        store.add_messages([untimed_file, later_copy])
        with store.engine.connect() as conn:
            stored_at = conn.scalar(select(MESSAGES.c.arrived_at))
        far_date = client_copy(
            "<far-date@acme.example>", "Banner colours", YEAR_9999, Copy("alice", "mail")
        )
        store.add_messages([far_date])
        before = datetime.now(UTC)
        store.upgrade()
        after = datetime.now(UTC)
        with store.engine.connect() as conn:
            arrived = dict(conn.execute(select(MESSAGES.c.key, MESSAGES.c.arrived_at)).all())
    finally:
        store.close()

    assert arrived["<once-untimed@acme.example>"] == stored_at
    # when the year-9999 message was stored is lost: it arrives no earlier than the upgrade
    assert before <= arrived["<far-date@acme.example>"] <= after


def test_an_upgrade_times_mbox_mail_by_its_received_header_not_the_export_date(
    store_url: str, tmp_path: Path, capsys
):
    config = agency_config(tmp_path, store_url)
    received = WEEK + timedelta(hours=9)
    exported = WEEK + timedelta(days=7)  # the mbox `From ` line: when it was exported
    imported = client_copy(
        "<from-mbox@acme.example>",
        "Banner colours",
        received - timedelta(minutes=5),
        Copy("import", "archive", envelope_time=exported, received_time=received),
    )
    store = Store(store_url)
    try:
        upgrade_to(store, "0005")
        store.add_messages([imported])
        refresh_at("0005", config, store, exported + timedelta(days=1))
        # as an earlier mailwatch stored it: the `From ` line's time won over Received
        with writing(store.engine) as conn:
            conn.execute(update(MESSAGES).values(arrived_at=exported, dirty=0))
        store.upgrade()
        with store.engine.connect() as conn:
            arrived_at, dirty = conn.execute(select(MESSAGES.c.arrived_at, MESSAGES.c.dirty)).one()
    finally:
        store.close()

    assert (arrived_at, dirty > 0) == (received, True)
    the_next_day = (received + timedelta(days=1)).isoformat()
    code = main(["--config", str(config), "status", "--format", "json", "--now", the_next_day])
    assert code == 0
    requests = json.loads(capsys.readouterr().out)["requests"]
    assert [r["opened_by"] for r in requests] == ["<from-mbox@acme.example>"]


# ---------------------------------------------------------------- 0007: figures as reported


def test_an_upgrade_from_0006_keeps_the_claims_and_then_keeps_each_reports_first_figures(
    store_url: str,
):
    sent_at = WEEK + timedelta(days=7, hours=8)
    first = ReportedFigures(
        kind="digest",
        period_key="week:2025-W10",
        period_start=WEEK,
        period_end=WEEK + timedelta(days=7),
        recipient="head@rouge.example",
        figures={"scope": "agency", "summary": {"met": 1, "compliance": 0.5}},
        statuses={"<fine@acme.example>": "met", "<late@acme.example>": "overdue"},
        policy="fingerprint-then",
        reported_at=sent_at,
    )
    store = Store(store_url)
    try:
        upgrade_to(store, "0006")
        assert store.claim("digest", "week:2025-W10", "head@rouge.example", sent_at)
        store.upgrade()
        store.record_figures(first)
        resent = {"scope": "agency", "summary": {"met": 2, "compliance": 1.0}}
        store.record_figures(replace(first, figures=resent, reported_at=sent_at + timedelta(1)))
        kept = store.reported_figures("digest", ["week:2025-W10"])
        claims = store.claims("digest")
    finally:
        store.close()

    assert kept == [first]
    assert [(c.key, c.recipient) for c in claims] == [("week:2025-W10", "head@rouge.example")]


# ---------------------------------------------------------------- 0008: recorded answers


def stored_request(subject: str, answered_at: datetime | None) -> dict[str, object]:
    """A request row as revision 0007 stored it."""
    received_at = WEEK + timedelta(hours=9)
    return {
        "account": "Acme",
        "thread": f"<{subject}@acme.example>",
        "subject": subject,
        "opened_by": f"<{subject}@acme.example>",
        "received_at": received_at,
        "messages": [f"<{subject}@acme.example>"],
        "tier": "standard",
        "clock": "calendar",
        "target_seconds": 86400,
        "deadline": received_at + timedelta(days=1),
        "responsible": ["alice@rouge.example"],
        "status": "met" if answered_at else "overdue",
        "answered_at": answered_at,
        "elapsed_seconds": 0,
        "waiver": None,
        "notes": [],
        "evaluated_at": received_at,
    }


def test_an_upgrade_from_0007_says_earlier_answers_were_emails(store_url: str):
    before_0008 = table(
        "request",
        *(column(name, REQUESTS.c[name].type) for name in stored_request("x", None)),
    )
    store = Store(store_url)
    try:
        upgrade_to(store, "0007")
        with writing(store.engine) as conn:
            conn.execute(
                insert(before_0008),
                [
                    stored_request("answered", WEEK + timedelta(hours=10)),
                    stored_request("waiting", None),
                ],
            )
        store.upgrade()
        with reading(store.engine) as conn:
            requests = read_requests(conn, select(*REQUEST_COLUMNS).order_by(REQUESTS.c.subject))
    finally:
        store.close()

    assert [(r.subject, r.answered_via, r.reply_possibly_unseen) for r in requests] == [
        ("answered", "email", False),
        ("waiting", None, False),
    ]


# ---------------------------------------------------------------- 0010: human client mail index


def message_indexes(store: Store) -> set[str]:
    return {index["name"] or "" for index in inspect(store.engine).get_indexes("message")}


def indexes_added_and_dropped(
    store_url: str, before: str, revision: str
) -> tuple[set[str], set[str]]:
    """The message indexes `revision` adds to those of `before`, and how they differ from
    those of `before` after its downgrade (nothing, when it drops what it added)."""
    store = Store(store_url)
    try:
        upgrade_to(store, before)
        indexes = message_indexes(store)
        upgrade_to(store, revision)
        upgraded = message_indexes(store)
        alembic = alembic_config()
        with writing(store.engine) as conn:
            alembic.attributes["connection"] = conn
            command.downgrade(alembic, before)
        downgraded = message_indexes(store)
    finally:
        store.close()
    return upgraded - indexes, downgraded ^ indexes


def test_0010_adds_the_index_of_human_client_mail_and_its_downgrade_drops_it(store_url: str):
    added, changed = indexes_added_and_dropped(store_url, "0009", "0010")

    assert added == {"ix_message_human_client_mail"}
    assert changed == set()


# ---------------------------------------------------------------- 0011: human other mail index


def test_0011_adds_the_index_of_human_mail_from_outside_senders_and_its_downgrade_drops_it(
    store_url: str,
):
    added, changed = indexes_added_and_dropped(store_url, "0010", "0011")

    assert added == {"ix_message_human_other_mail"}
    assert changed == set()
