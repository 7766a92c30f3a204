"""The Mailer against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mailwatch.adapters.render import RenderedEmail
from mailwatch.adapters.smtp import Mailer, TransportError
from mailwatch.config import Secret, SmtpSettings
from tests.fixtures.smtp import HOST, SmtpSink, free_port

RENDERED = RenderedEmail(
    subject="2 client emails need a reply — Acme due in 1h 40m",
    text="Hello Alice,\n\nTwo client emails need a reply.\n",
    html="<p>Hello Alice,</p><p>Two client emails need a reply.</p>",
)
TO = ["alice@rouge.example"]


@pytest.fixture
def password(monkeypatch, smtp_server: SmtpSink) -> Secret:
    monkeypatch.setenv("MW_TEST_SMTP_PASSWORD", smtp_server.password)
    return Secret("env MW_TEST_SMTP_PASSWORD")


def settings(sink: SmtpSink, **changes) -> SmtpSettings:
    values = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "sender": "Mailwatch <mailwatch@rouge.example>",
        "timeout": 5.0,
        **changes,
    }
    return SmtpSettings(**values)


def rouge_staff(address: str) -> bool:
    return address.endswith("@rouge.example")


def staff_mailer(smtp: SmtpSettings) -> Mailer:
    return Mailer(smtp, is_staff=rouge_staff)


def failure(mailer: Mailer) -> TransportError:
    with pytest.raises(TransportError) as caught:
        mailer.send(TO, RENDERED, headers={"X-Mailwatch": "nudge"})
    return caught.value


def test_a_nudge_arrives_as_text_and_html_marked_as_automatic(smtp_server):
    message_id = staff_mailer(settings(smtp_server)).send(
        ["alice@rouge.example", "bob@rouge.example"], RENDERED, headers={"X-Mailwatch": "nudge"}
    )
    (received,) = smtp_server.messages
    assert received.mail_from == "mailwatch@rouge.example"
    assert received.rcpt_tos == ("alice@rouge.example", "bob@rouge.example")
    message = received.message
    assert message["Message-ID"] == message_id
    assert message_id.endswith("@rouge.example>")
    assert message["From"] == "Mailwatch <mailwatch@rouge.example>"
    assert message["To"] == "alice@rouge.example, bob@rouge.example"
    assert message["Subject"] == RENDERED.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["X-Mailwatch"] == "nudge"
    assert message["Date"].datetime.tzinfo is not None
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n") == RENDERED.text
    assert message.get_body(("html",)).get_content().strip() == RENDERED.html


def test_each_message_gets_its_own_message_id(smtp_server):
    mailer = staff_mailer(settings(smtp_server))
    first = mailer.send(TO, RENDERED)
    second = mailer.send(TO, RENDERED)
    assert first != second
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [first, second]


def test_a_4xx_reply_is_a_temporary_failure(smtp_server):
    smtp_server.answer_next("451 4.3.0 Mail server temporarily rejected message")
    error = failure(staff_mailer(settings(smtp_server)))
    assert not error.permanent
    assert "451 4.3.0 Mail server temporarily rejected message" in str(error)
    assert smtp_server.messages == []


def test_a_5xx_reply_is_a_permanent_failure(smtp_server):
    smtp_server.answer_next("554 5.7.1 Message rejected as spam")
    error = failure(staff_mailer(settings(smtp_server)))
    assert error.permanent
    assert "554" in str(error)


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 No such user", True), ("450 4.2.1 Mailbox busy", False)],
)
def test_a_refused_recipient_is_sorted_by_its_reply_code(smtp_server, reply, permanent):
    smtp_server.refused[TO[0]] = reply
    error = failure(staff_mailer(settings(smtp_server)))
    assert error.permanent is permanent
    assert f"recipients refused: {TO[0]}: {reply}" in str(error)


def test_the_next_message_goes_through_after_a_temporary_failure(smtp_server):
    smtp_server.answer_next("421 4.7.0 Try again later")
    mailer = staff_mailer(settings(smtp_server))
    assert not failure(mailer).permanent
    mailer.send(TO, RENDERED)
    assert len(smtp_server.messages) == 1


def test_a_server_that_is_down_is_a_temporary_failure_and_sending_resumes_when_it_is_back(
    smtp_server,
):
    mailer = staff_mailer(settings(smtp_server))
    smtp_server.stop()
    error = failure(mailer)
    assert not error.permanent
    assert f"SMTP {HOST}:{smtp_server.port}" in str(error)
    smtp_server.restart()
    mailer.send(TO, RENDERED)
    assert len(smtp_server.messages) == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind((HOST, free_port()))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_is_a_temporary_failure(silent_server, smtp_server):
    sink = SmtpSink(port=silent_server)
    error = failure(staff_mailer(settings(sink, timeout=0.5)))
    assert not error.permanent


def test_it_logs_in_with_the_password(smtp_server, password):
    mailer = staff_mailer(settings(smtp_server, username=smtp_server.username, password=password))
    mailer.send(TO, RENDERED)
    assert smtp_server.logins and len(smtp_server.messages) == 1


def test_a_refused_password_is_permanent_and_never_shown(smtp_server, password, monkeypatch):
    monkeypatch.setenv("MW_TEST_SMTP_PASSWORD", "wrong-password-123")
    mailer = staff_mailer(settings(smtp_server, username=smtp_server.username, password=password))
    error = failure(mailer)
    assert error.permanent
    assert "authentication failed: 535" in str(error)
    assert "wrong-password-123" not in repr(error) and error.__cause__ is None


def test_it_logs_in_with_an_oauth2_token(smtp_server, monkeypatch):
    monkeypatch.setenv("MW_TEST_SMTP_TOKEN", smtp_server.token)
    token = Secret("env MW_TEST_SMTP_TOKEN")
    mailer = staff_mailer(settings(smtp_server, username=smtp_server.username, oauth2_token=token))
    mailer.send(TO, RENDERED)
    assert smtp_server.logins == ["XOAUTH2"]


def test_a_refused_oauth2_token_is_permanent(smtp_server, monkeypatch):
    monkeypatch.setenv("MW_TEST_SMTP_TOKEN", "expired-token")
    token = Secret("env MW_TEST_SMTP_TOKEN")
    mailer = staff_mailer(settings(smtp_server, username=smtp_server.username, oauth2_token=token))
    error = failure(mailer)
    assert error.permanent and "expired-token" not in str(error)


def test_a_certificate_that_does_not_verify_is_a_permanent_failure(smtps_server):
    error = failure(staff_mailer(settings(smtps_server, security="ssl")))
    assert error.permanent
    assert "certificate not trusted" in str(error)


def test_a_private_ca_file_makes_the_certificate_trusted(smtps_server, smtp_certificate):
    mailer = staff_mailer(settings(smtps_server, security="ssl", ca_file=smtp_certificate))
    mailer.send(TO, RENDERED)
    assert len(smtps_server.messages) == 1


def test_starttls_on_a_server_without_it_is_a_permanent_failure(smtp_server):
    error = failure(staff_mailer(settings(smtp_server, security="starttls")))
    assert error.permanent


def test_check_logs_in_without_sending(smtp_server, password):
    staff_mailer(settings(smtp_server, username=smtp_server.username, password=password)).check()
    assert smtp_server.logins and smtp_server.messages == []


def test_a_recipient_who_is_not_staff_is_refused_logged_and_nothing_is_sent(smtp_server, caplog):
    mailer = staff_mailer(settings(smtp_server))
    with pytest.raises(TransportError) as caught:
        mailer.send(["alice@rouge.example", "Jane <jane@acme.example>"], RENDERED)
    assert caught.value.permanent  # recorded as a failed send, never tried again
    assert "jane@acme.example" in str(caught.value) and "not a staff address" in str(caught.value)
    assert "jane@acme.example" in caplog.text
    assert smtp_server.messages == []
