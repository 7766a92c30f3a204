"""From a real IMAP server to measured requests: poll, thread across folders, evaluate."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailwatch.config import Settings
from mailwatch.core.model import Account, Policy, StaffMember, Status, WaiverVia
from mailwatch.requests_as_of import current_requests
from mailwatch.sync import poll_all
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings, sync_settings

pytestmark = pytest.mark.dovecot

POLICY = Policy(
    agency_domains=("agency.test",),
    staff=(StaffMember("alice@agency.test"), StaffMember("bob@agency.test")),
    accounts=(
        Account(
            "Acme",
            domains=("acme.example",),
            manager="alice@agency.test",
            backups=("bob@agency.test",),
        ),
    ),
)


def settings_for(*mailboxes) -> Settings:
    return Settings(
        source=None, agency_name="Test", policy=POLICY, mailboxes=mailboxes, sync=sync_settings()
    )  # type: ignore[arg-type]


def test_a_reply_in_the_sent_folder_answers_the_inbox_message_it_threads_with(
    dovecot, store, tmp_path
):
    alice = dovecot.new_user("alice")
    dovecot.append(alice, "INBOX", mail("<q1@acme.example>"), hours_ago(5))
    reply = mail(
        "<r1@agency.test>",
        sender="alice@agency.test",
        to="carol@acme.example",
        subject="Re: Homepage banner",
        extra="In-Reply-To: <q1@acme.example>\r\n",
    )
    dovecot.append(alice, "Sent", reply, hours_ago(3), (b"\\Seen",))
    settings = settings_for(mailbox_settings(dovecot, alice, tmp_path))

    poll_all(settings, store, NOW)
    (request,) = current_requests(settings, store, NOW)

    assert (request.status, request.answered_by) == (Status.MET, "<r1@agency.test>")
    assert request.response_seconds == 2 * 3600


def test_a_message_cc_d_to_two_watched_mailboxes_counts_once(dovecot, store, tmp_path):
    alice, bob = dovecot.new_user("alice"), dovecot.new_user("bob")
    shared = mail("<cc1@acme.example>", to="alice@agency.test, bob@agency.test")
    dovecot.append(alice, "INBOX", shared, hours_ago(30))
    dovecot.append(bob, "INBOX", shared, hours_ago(30) + timedelta(seconds=2))
    settings = settings_for(
        mailbox_settings(dovecot, alice, tmp_path), mailbox_settings(dovecot, bob, tmp_path)
    )

    poll_all(settings, store, NOW)
    (request,) = current_requests(settings, store, NOW)

    assert (request.status, request.received_at) == (Status.OVERDUE, hours_ago(30))


def test_the_waive_keyword_set_by_a_person_waives_the_request(dovecot, store, tmp_path):
    alice = dovecot.new_user("alice")
    dovecot.append(alice, "INBOX", mail("<w1@acme.example>"), hours_ago(30), (b"$NoReplyNeeded",))
    settings = settings_for(mailbox_settings(dovecot, alice, tmp_path))

    poll_all(settings, store, NOW)
    (request,) = current_requests(settings, store, NOW)

    assert request.status is Status.WAIVED
    assert (request.waiver.via, request.waiver.by) == (
        WaiverVia.KEYWORD,
        settings.mailboxes[0].name,
    )
