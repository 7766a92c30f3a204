"""A reply sent from a mailbox mailwatch does not watch, seen only through the client's
answer to it, on a real IMAP server."""

from __future__ import annotations

import pytest

from mailwatch.core.model import Status
from mailwatch.requests_as_of import current_requests
from mailwatch.sync import poll_all
from tests.e2e.test_imap_to_report import settings_for
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings

pytestmark = pytest.mark.dovecot

BOBS_REPLY = mail(
    "<bob-reply@agency.test>",
    sender="bob@agency.test",
    to="carol@acme.example",
    subject="Re: Homepage banner",
    extra="In-Reply-To: <q1@acme.example>\r\nReferences: <q1@acme.example>\r\n",
)
CAROLS_CHASER = mail(
    "<q2@acme.example>",
    subject="Re: Homepage banner",
    body="Thanks Bob, and the footer?",
    extra=(
        "In-Reply-To: <bob-reply@agency.test>\r\n"
        "References: <q1@acme.example> <bob-reply@agency.test>\r\n"
    ),
)


def test_a_reply_from_an_unwatched_mailbox_is_flagged_until_that_mailbox_is_watched(
    dovecot, store, tmp_path
):
    alice, bob = dovecot.new_user("alice"), dovecot.new_user("bob")
    dovecot.append(alice, "INBOX", mail("<q1@acme.example>"), hours_ago(50))
    dovecot.append(bob, "Sent", BOBS_REPLY, hours_ago(48), (b"\\Seen",))
    dovecot.append(alice, "INBOX", CAROLS_CHASER, hours_ago(20))
    watching_alice = settings_for(mailbox_settings(dovecot, alice, tmp_path))

    poll_all(watching_alice, store, NOW)
    (request,) = current_requests(watching_alice, store, NOW)

    assert (request.status, request.reply_possibly_unseen) == (Status.OVERDUE, True)

    watching_both = settings_for(
        mailbox_settings(dovecot, alice, tmp_path), mailbox_settings(dovecot, bob, tmp_path)
    )
    poll_all(watching_both, store, NOW)
    answered, chaser = current_requests(watching_both, store, NOW)

    assert (answered.status, answered.answered_by) == (Status.MET, "<bob-reply@agency.test>")
    assert not answered.reply_possibly_unseen and not chaser.reply_possibly_unseen
