"""Waivers from the mail client, through a real Dovecot: the waive keyword on the client's
chaser and a copy of the first message in the waive folder each waive the whole request;
`explain` and the JSON say how, by which mailbox and when; `unwaive` cannot take them back."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from mailwatch import output, services
from mailwatch.core.model import Status
from mailwatch.requests_as_of import current_requests
from mailwatch.sync import poll_all
from tests.e2e.test_imap_to_report import settings_for
from tests.imap_helpers import NOW, hours_ago, mail, mailbox_settings

pytestmark = pytest.mark.dovecot

LATER = NOW + timedelta(hours=1)
CHASER = "Subject: Re: Homepage banner\r\nIn-Reply-To: <w1@acme.example>\r\n"


def first_and_chaser(dovecot, user) -> int:
    """The first message and the client's chaser in INBOX; the chaser's UID."""
    dovecot.append(user, "INBOX", mail("<w1@acme.example>"), hours_ago(30))
    return dovecot.append(
        user, "INBOX", mail("<w2@acme.example>", subject="", extra=CHASER), hours_ago(5)
    )


def waiver_json(settings, store) -> dict:
    document = json.loads(output.requests_document(LATER, current_requests(settings, store, LATER)))
    (request,) = document["requests"]
    assert request["status"] == "waived"
    return request["waiver"]


def test_the_keyword_on_the_chaser_waives_the_whole_request(dovecot, store, tmp_path):
    alice = dovecot.new_user("alice")
    chaser = first_and_chaser(dovecot, alice)
    settings = settings_for(mailbox_settings(dovecot, alice, tmp_path))
    poll_all(settings, store, NOW)
    dovecot.set_flags(alice, "INBOX", [chaser], ["$NoReplyNeeded"])

    poll_all(settings, store, LATER)

    (request,) = current_requests(settings, store, LATER)
    assert (request.status, request.messages) == (
        Status.WAIVED,
        ("<w1@acme.example>", "<w2@acme.example>"),
    )
    assert waiver_json(settings, store) == {
        "via": "keyword",
        "by": "alice",
        "seen_at": "2026-11-02T10:00:00Z",
        "reason": "",
    }
    explained = services.explain(settings, store, "<w1@acme.example>", LATER)
    text = output.explanation_text(explained, "UTC")
    assert "waived (no reply needed) via keyword by alice on 2026-11-02 10:00" in text


def test_a_copy_of_the_first_message_in_the_waive_folder_waives_the_chaser_too(
    dovecot, store, tmp_path
):
    alice = dovecot.new_user("alice")
    first_and_chaser(dovecot, alice)
    dovecot.append(alice, "No reply needed", mail("<w1@acme.example>"), hours_ago(30))
    settings = settings_for(mailbox_settings(dovecot, alice, tmp_path))

    poll_all(settings, store, NOW)

    (request,) = current_requests(settings, store, LATER)
    assert len(request.messages) == 2
    assert waiver_json(settings, store)["via"] == "folder"
    assert waiver_json(settings, store)["by"] == "alice"


def test_unwaive_of_a_keyword_waiver_says_the_keyword_lasts_while_the_mail_carries_it(
    dovecot, store, tmp_path
):
    alice = dovecot.new_user("alice")
    dovecot.append(alice, "INBOX", mail("<w1@acme.example>"), hours_ago(3), (b"$NoReplyNeeded",))
    settings = settings_for(mailbox_settings(dovecot, alice, tmp_path))
    poll_all(settings, store, NOW)

    with pytest.raises(services.Refused, match="lasts while the mail carries it"):
        services.unwaive(settings, store, "w1@acme.example", LATER)
    (request,) = current_requests(settings, store, LATER)
    assert request.status is Status.WAIVED
