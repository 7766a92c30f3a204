"""Sending mailwatch's own mail: the only importer of smtplib.

Every failure leaves as a `TransportError` that says whether trying again
can help: a 5xx reply, refused credentials or a certificate that does not
verify will fail the same way next time (and retrying a bad password gets
the account locked); a 4xx reply, a refused or reset connection or a timeout
may pass later.  A connection lost after the whole message went out, before the
server's reply, is neither: the server may have accepted it, so it is reported
as permanent and never resent (at most once, like the claims of nudging.py).
Secrets never reach a message or a log line.

mailwatch mails staff only.  The configuration refuses a recipient who is not
staff, and the Mailer refuses one again, whatever the caller: it logs the refusal
and raises a permanent `TransportError`, so the caller records it as a failed send
(the claim of that nudge or digest, which `mailwatch health` reads).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING

from mailwatch.adapters.oauth import OAuthError, access_token, discard_token, refused_token_fix

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

    from mailwatch.adapters.render import RenderedEmail
    from mailwatch.config import OAuth2App, SmtpSettings

log = logging.getLogger(__name__)


class NotConfigured(Exception):
    """Mail must be sent but no [smtp] server is configured."""


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str  # "text/html"


def compose(
    sender: str,
    to: Sequence[str],
    rendered: RenderedEmail,
    headers: Mapping[str, str],
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """The message as it will be sent: text and HTML alternatives (text only when the HTML
    is empty), then the attachments, marked automatic."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    # RFC 3834: auto-responders must not answer this, and mailwatch's own
    # classifier reads it to never count its mail as a human reply.
    message["Auto-Submitted"] = "auto-generated"
    # Outlook and Exchange: no out-of-office or read receipts back to us.
    message["X-Auto-Response-Suppress"] = "All"
    for name, value in headers.items():
        del message[name]
        message[name] = value
    message.set_content(rendered.text)
    if rendered.html:
        message.add_alternative(rendered.html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.mime_type.partition("/")
        message.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


class Mailer:
    def __init__(self, settings: SmtpSettings, *, is_staff: Callable[[str], bool]):
        self._settings = settings
        self._is_staff = is_staff

    def send(
        self,
        to: Sequence[str],
        rendered: RenderedEmail,
        *,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> str:
        """Submit one message to `to`; returns its Message-ID. Raises TransportError."""
        self._refuse_strangers(to)
        now = datetime.now(UTC)
        message = compose(self._settings.sender, to, rendered, headers or {}, now, attachments)
        settings = self._settings
        with self._session() as smtp:
            try:
                smtp.send_message(message, from_addr=_address(settings.sender), to_addrs=list(to))
            except smtplib.SMTPResponseException:
                raise  # the server answered: it said what became of the message
            except OSError as error:  # disconnected, reset, timed out (SMTPException too)
                if not smtp.handed_over:
                    raise
                raise TransportError(
                    f"SMTP {settings.host}:{settings.port}: connection lost after the message "
                    f"was handed over ({error}): it may have been delivered, so it is not sent "
                    "again",
                    permanent=True,
                ) from None
        return str(message["Message-ID"])

    def _refuse_strangers(self, to: Sequence[str]) -> None:
        """Nothing is sent when any recipient is not staff: the others can be sent again."""
        strangers = [address for address in to if not self._is_staff(_address(address))]
        if strangers:
            problem = (
                f"refused to send to {', '.join(strangers)}: not a staff address "
                "(mailwatch mails staff only)"
            )
            log.error("%s", problem)
            raise TransportError(problem, permanent=True)

    def check(self) -> None:
        """Connect and log in without sending anything. Raises TransportError."""
        with self._session() as smtp:
            smtp.noop()

    @contextmanager
    def _session(self) -> Iterator[_Smtp]:
        settings = self._settings
        with _sorted_failures(f"SMTP {settings.host}:{settings.port}"):
            smtp = self._connect()
            try:
                if settings.security == "starttls":
                    smtp.starttls(context=self._tls())
                self._authenticate(smtp)
                yield smtp
            finally:
                _close(smtp)

    def _connect(self) -> _Smtp:
        settings = self._settings
        if settings.security == "ssl":
            return _SmtpSsl(
                settings.host, settings.port, timeout=settings.timeout, context=self._tls()
            )
        return _Smtp(settings.host, settings.port, timeout=settings.timeout)

    def _tls(self) -> ssl.SSLContext:
        ca_file = self._settings.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _authenticate(self, smtp: smtplib.SMTP) -> None:
        settings = self._settings
        if not settings.username:
            return
        if settings.oauth2 is not None:
            self._authenticate_as_app(smtp, settings.oauth2, settings.username)
        elif settings.oauth2_token is not None:
            token = settings.oauth2_token.reveal()
            smtp.ehlo_or_helo_if_needed()
            smtp.auth("XOAUTH2", _xoauth2(settings.username, token))
        elif settings.password is not None:
            smtp.login(settings.username, settings.password.reveal())

    def _authenticate_as_app(self, smtp: smtplib.SMTP, app: OAuth2App, username: str) -> None:
        token = access_token(app, username)
        smtp.ehlo_or_helo_if_needed()
        try:
            smtp.auth("XOAUTH2", _xoauth2(username, token))
        except smtplib.SMTPAuthenticationError as error:
            # A token that was granted and then refused: the mailbox's permissions are wrong.
            discard_token(app, username)
            settings = self._settings
            raise TransportError(
                f"SMTP {settings.host}:{settings.port}: authentication failed "
                f"({_reply(error.smtp_code, error.smtp_error)}): "
                f"{refused_token_fix(app, username, 'SMTP')}",
                permanent=True,
            ) from None


class _Smtp(smtplib.SMTP):
    """Remembers whether a message's final "." went out: after it, a lost connection
    leaves the delivery unknown (RFC 5321 6.1; RFC 1047)."""

    handed_over = False

    def send(self, s: Buffer | str) -> None:
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.handed_over = True


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    pass


def _xoauth2(username: str, token: str) -> Callable[..., str]:
    """The XOAUTH2 initial response; on failure the server sends a JSON challenge
    that must be answered with an empty line before it gives its final 535."""

    def answer(challenge: bytes | None = None) -> str:
        return "" if challenge else f"user={username}\x01auth=Bearer {token}\x01\x01"

    return answer


@contextmanager
def _sorted_failures(where: str) -> Iterator[None]:
    try:
        yield
    except OAuthError as error:
        raise TransportError(f"{where}: {error.message}", permanent=error.permanent) from None
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        details = "; ".join(f"{rcpt}: {_reply(c, m)}" for rcpt, (c, m) in error.recipients.items())
        permanent = all(code >= 500 for code in codes)
        raise TransportError(
            f"{where}: recipients refused: {details}", permanent=permanent
        ) from None
    except smtplib.SMTPAuthenticationError as error:
        raise TransportError(
            f"{where}: authentication failed: {_reply(error.smtp_code, error.smtp_error)}",
            permanent=True,
        ) from None
    except smtplib.SMTPResponseException as error:
        reply = _reply(error.smtp_code, error.smtp_error)
        raise TransportError(f"{where}: {reply}", permanent=error.smtp_code >= 500) from None
    except smtplib.SMTPServerDisconnected as error:
        raise TransportError(f"{where}: disconnected: {error}", permanent=False) from None
    except smtplib.SMTPException as error:
        # The rest are local refusals (no STARTTLS offered, no usable AUTH
        # mechanism): the configuration must change first.
        raise TransportError(f"{where}: {error}", permanent=True) from None
    except ssl.SSLCertVerificationError as error:
        raise TransportError(
            f"{where}: certificate not trusted: {error.verify_message}", permanent=True
        ) from None
    except OSError as error:  # refused, reset, timed out, name not resolved, TLS cut short
        raise TransportError(f"{where}: {error.strerror or error}", permanent=False) from None


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()  # the session already failed; a failed goodbye adds nothing


def _address(sender: str) -> str:
    return parseaddr(sender)[1]


def _domain(sender: str) -> str:
    return _address(sender).rpartition("@")[2]
