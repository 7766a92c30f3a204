"""Which mail is automated, which rule said so, and what only says thanks."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailwatch.core import automated
from mailwatch.core.automated import automation_reason, is_out_of_office, looks_like_courtesy
from mailwatch.core.model import Message, Policy

POLICY = Policy(agency_domains=("rouge.example",), human_lists=("<helpdesk.acme.example>",))


def message(
    subject: str = "Homepage banner",
    from_addr: str | None = "jane@acme.example",
    from_name: str = "",
    **headers: str,
) -> Message:
    return Message(
        key="<m1@acme.example>",
        from_addr=from_addr,
        from_name=from_name,
        subject=subject,
        headers=tuple((name.replace("_", "-"), value) for name, value in headers.items()),
    )


@pytest.mark.parametrize(
    ("mail", "reason"),
    [
        (message(auto_submitted="auto-replied"), "Auto-Submitted: auto-replied"),
        (message(auto_submitted="Auto-Generated"), "Auto-Submitted: auto-generated"),
        (message(auto_submitted="auto-replied; owner-email=x@y"), "Auto-Submitted: auto-replied"),
        (message(x_autoreply="yes"), "X-Autoreply: yes"),
        (message(x_autorespond="On"), "X-Autorespond: On"),
        (message(x_autoresponder=""), "X-Autoresponder"),
        (message(precedence="bulk"), "Precedence: bulk"),
        (message(precedence="JUNK"), "Precedence: junk"),
        (message(precedence="list"), "Precedence: list"),
        (message(precedence="auto_reply"), "Precedence: auto_reply"),
        (message(x_precedence="auto_reply"), "X-Precedence: auto_reply"),
        (message(list_id="Acme news <x.lists.example>"), "List-Id <x.lists.example>"),
        (message(list_unsubscribe="<mailto:u@x.example>"), "List-Unsubscribe"),
        (message(feedback_id="a:b:esp", x_unsubscribe="x"), "Feedback-ID with X-Unsubscribe"),
        (message(feedback_id="a:b:esp", x_campaignid="42"), "Feedback-ID with X-Campaign"),
        (message(return_path="<>"), "null envelope sender (Return-Path: <>)"),
        (message(from_addr="MAILER-DAEMON@mx.acme.example"), "sender is mailer-daemon"),
        (message(from_addr="postmaster@acme.example"), "sender is postmaster"),
        (message(from_addr=None, from_name="MAILER-DAEMON"), "sender is mailer-daemon"),
        (message(return_path="<MAILER-DAEMON@mx.example>"), "sender is mailer-daemon"),
        (
            message(content_type="multipart/report; report-type=delivery-status; boundary=x"),
            "multipart/report (delivery or read receipt)",
        ),
        (
            message(content_type="multipart/report; report-type=disposition-notification"),
            "multipart/report (delivery or read receipt)",
        ),
        (message(content_type='text/calendar; method="REPLY"; charset=utf-8'), "calendar response"),
        (message(from_addr="noreply@acme.example"), "sender no-reply"),
        (message(from_addr="no-reply@acme.example"), "sender no-reply"),
        (message(from_addr="DoNotReply@acme.example"), "sender no-reply"),
        (message(from_addr="do-not-reply+bounce@acme.example"), "sender no-reply"),
        (message(x_mailwatch="nudge", auto_submitted="auto-generated"), "sent by mailwatch"),
    ],
)
def test_each_header_rule_names_itself(mail: Message, reason: str) -> None:
    assert automation_reason(mail, POLICY) == reason


@pytest.mark.parametrize(
    "mail",
    [
        message(),
        message(auto_submitted="no"),
        message(x_auto_response_suppress="All"),
        message(x_auto_response_suppress="DR, RN, NRN, OOF, AutoReply"),
        message(precedence="first-class"),
        message(feedback_id="a:b:esp"),  # transactional senders use it alone
        message(content_type="text/calendar; method=REQUEST"),
        message(content_type="multipart/alternative; boundary=x"),
        message(return_path="<jane@acme.example>"),
        message(from_addr="reply@acme.example"),
        message(from_addr="noreplyneeded.jane@acme.example"),
        message(x_ms_exchange_inbox_rules_loop="jane@acme.example"),
    ],
)
def test_ordinary_human_mail_is_not_automated(mail: Message) -> None:
    assert automation_reason(mail, POLICY) is None


@pytest.mark.parametrize(
    "list_id",
    [
        "<support.rouge.example>",  # a list under an agency domain
        "Support <help.support.rouge.example>",
        "<rouge.example>",
        "Helpdesk <helpdesk.acme.example>",  # named in automation.human_lists
    ],
)
def test_the_agency_own_lists_do_not_make_mail_automated(list_id: str) -> None:
    mail = message(list_id=list_id, list_post="<mailto:s@rouge.example>", precedence="list")
    assert automation_reason(mail, POLICY) is None
    assert automation_reason(message(list_id=list_id, precedence="bulk"), POLICY) is None


def test_an_agency_list_still_relays_auto_replies_as_automated() -> None:
    mail = message(list_id="<support.rouge.example>", auto_submitted="auto-replied")
    assert automation_reason(mail, POLICY) == "Auto-Submitted: auto-replied"
    assert automation_reason(message(list_id="<support.rouge.example>", precedence="junk"), POLICY)


def test_a_list_id_that_only_ends_like_an_agency_domain_is_not_the_agency() -> None:
    mail = message(list_id="<news.notrouge.example>")
    assert automation_reason(mail, POLICY) == "List-Id <news.notrouge.example>"


def test_feedback_id_does_not_pair_with_the_agency_own_list_headers() -> None:
    mail = message(feedback_id="a:b", list_id="<support.rouge.example>", list_post="<mailto:x>")
    assert automation_reason(mail, POLICY) is None


@pytest.mark.parametrize(
    "subject",
    [
        # English
        "Out of Office: Homepage banner",
        "out of the office: Homepage banner",
        "Out of Office AutoReply: Quote",
        "Automatic reply: Homepage banner",
        "Auto reply: Nyaan",
        "Auto-Response: your mail",
        "Autoreply: hello",
        "AutoResponse: hello",
        "AUTO: Smith, John is out of the office. (returning 05/01/2010)",
        "OOO: back Monday",
        # German
        "Abwesenheitsnotiz: Angebot",
        "Automatische Antwort: Angebot",
        "Abwesend: Angebot",
        # French
        "Réponse automatique : Devis",
        "Reponse automatique: Devis",
        "Absent(e) du bureau : Devis",
        # Spanish
        "Respuesta automática: Presupuesto",
        "Fuera de la oficina: Presupuesto",
        # Dutch
        "Automatisch antwoord: Offerte",
        "Afwezig: Offerte",
        # Italian
        "Risposta automatica: Preventivo",
        "Fuori sede: Preventivo",
        "Risposta Non al computer: Preventivo",
        # Nordic, Polish, Portuguese
        "Autosvar: Tilbud",
        "Automatisk svar: Tilbud",
        "Frånvaro: Offert",
        "Automaattinen vastaus: Tarjous",
        "[Automatyczna odpowiedź ] test",
        "Resposta automática: Orçamento",
    ],
)
def test_an_auto_reply_subject_in_many_languages_is_automated(subject: str) -> None:
    reason = automation_reason(message(subject), POLICY)
    assert reason is not None and reason.startswith("subject starts with '")


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Out of office banner",
        "Out of office banner looks wrong",
        "Out of the office",  # people title their own announcements like this
        "Our automatic reply settings",
        "Fwd: Automatic reply: Homepage banner",
        "Absentee list",
        "Afwezigheid volgende week",
    ],
)
def test_a_subject_that_merely_mentions_absence_is_human(subject: str) -> None:
    assert automation_reason(message(subject), POLICY) is None


def test_the_reason_quotes_the_subject_prefix() -> None:
    reason = automation_reason(message("Out of Office: Homepage banner"), POLICY)
    assert reason == "subject starts with 'Out of Office'"


@pytest.mark.parametrize(
    "subject",
    [
        "Accepted: Kick-off",
        "Declined: Kick-off",
        "Tentative: Kick-off",
        "Angenommen: Kick-off",
        "Abgelehnt: Kick-off",
        "Mit Vorbehalt angenommen: Kick-off",
        "Mit Vorbehalt: Kick-off",
        "Accepté : Kick-off",
        "Refusé: Kick-off",
        "Provisoire: Kick-off",
        "Aceptado: Kick-off",
        "Rechazado: Kick-off",
        "Provisional: Kick-off",
        "Geaccepteerd: Kick-off",
        "Geweigerd: Kick-off",
        "Voorlopig: Kick-off",
        "Accettato: Kick-off",
        "Rifiutato: Kick-off",
        "Provvisorio: Kick-off",
    ],
)
def test_a_meeting_response_subject_is_a_calendar_response(subject: str) -> None:
    assert automation_reason(message(subject), POLICY) == "calendar response"


def test_a_subject_about_acceptance_is_human() -> None:
    assert automation_reason(message("Accepted the quote, next steps"), POLICY) is None
    assert automation_reason(message("Re: Accepted: Kick-off"), POLICY) is None


@pytest.mark.parametrize(
    "mail",
    [
        message("Out of Office: Homepage banner"),
        message(auto_submitted="auto-replied"),
        message(x_autoreply="yes", precedence="bulk", auto_submitted="auto-replied"),  # Gmail
        message(auto_submitted="auto-replied", return_path="<>"),  # RFC 3834 null sender
        message(precedence="auto_reply"),
    ],
)
def test_an_automatic_reply_is_an_out_of_office(mail: Message) -> None:
    assert is_out_of_office(mail, POLICY)


@pytest.mark.parametrize(
    "mail",
    [
        message(),
        message(x_auto_response_suppress="All"),
        message(from_addr="mailer-daemon@mx.acme.example", auto_submitted="auto-replied"),
        message(auto_submitted="auto-replied", content_type="multipart/report; report-type=x"),
        message("Accepted: Kick-off", auto_submitted="auto-replied"),
        message(list_id="<news.example>", precedence="bulk"),
        message(auto_submitted="auto-generated"),
        message(from_addr="noreply@acme.example", auto_submitted="auto-replied"),
    ],
)
def test_bounces_bulk_receipts_and_human_mail_are_not_out_of_office(mail: Message) -> None:
    assert not is_out_of_office(mail, POLICY)


@pytest.mark.parametrize(
    "text",
    [
        "Thanks!",
        "Thank you, perfect",
        "Great, thanks a lot",
        "ok thanks",
        "👍",
        "Thanks for the quick fix, everything works now.\n\nBest regards,\nAnna Schmidt",
        "Hi Bob,\n\nthank you!\n\nJane\n\nOn Tue, 4 Mar 2025, Bob wrote:\n> Could you check it?",
        "Thanks!\n-- \nJane Doe | Acme | Can we talk? +44 20 1234",
        "Thanks\n\n-----Original Message-----\nFrom: bob@rouge.example\nWhat do you need?",
        "Danke!",
        "Vielen Dank, passt so.\n\nViele Grüße\nJürgen",
        "Merci",
        "Merci beaucoup, parfait !",
        "Muchas gracias",
        "Perfecto, gracias",
        "Bedankt!",
        "Dank je wel, helder.",
        "Grazie mille",
        "Perfetto, grazie",
    ],
)
def test_a_message_that_only_thanks_is_courtesy(text: str) -> None:
    assert looks_like_courtesy(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Thanks, when will it be live?",
        "Thanks. But the banner is still broken on mobile.",
        "Thanks! Please also update the footer.",
        "Danke, aber es geht noch nicht.",
        "Merci, mais ça ne marche pas encore.",
        "Gracias, pero todavía no funciona.",
        "Bedankt, maar het werkt nog niet.",
        "Grazie, ma non funziona ancora.",
        "Homepage banner is wrong",
        "Thanks. We looked at the draft together with the marketing team yesterday and decided "
        "to move the launch to the first week of the next quarter instead.",
        "The new banner arrived.",
    ],
)
def test_a_message_with_a_request_or_real_content_is_not_courtesy(text: str) -> None:
    assert not looks_like_courtesy(text)


_COURTESY_WORDS = (
    *"thanks thank you very much ok got it d'accord merci danke schön perfect ty".split(),
    *"please but banner logo the site we x1 a_b thanks2 OK Thanks THX ok'ty it's".split(),
    # matched by a phrase whatever the case, though lower() makes them no phrase's word
    *("MERCİ", "thankſ", "\u212aool", "\U0001f44d", "", "'", "’"),
)
_SEPARATORS = ("", " ", "  ", ", ", "! ", ". ", "\n", "'", "’")


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_COURTESY_WORDS), st.sampled_from(_SEPARATORS)), max_size=30
    ).map(lambda pairs: "".join(word + separator for word, separator in pairs))
)
@example("Merci! " + "MERCİ " * 13)  # a thank-you, though its words lower() to no phrase's
@example("thankſ " * 13)
@example("Thanks! " + "logo " * 12)  # twelve other words: still a thank-you
@example("Thanks! " + "logo " * 13)
def test_a_long_text_is_ruled_out_before_looking_for_phrases_only_when_the_rule_would(text):
    """The count of words no phrase holds only shortens the rule: a text it rules out has
    more other words than a thank-you may have, however the phrases are taken out."""
    with patch.object(automated, "_more_than_other_words", lambda text: False):
        by_the_rule = looks_like_courtesy(text)

    assert looks_like_courtesy(text) == by_the_rule
    if automated._more_than_other_words(text):
        assert not by_the_rule
