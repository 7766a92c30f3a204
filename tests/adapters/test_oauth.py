"""Built-in OAuth2 against a real token endpoint on loopback (plain HTTP, standing in
for Microsoft's and Google's), and the SMTP and IMAP logins that use its tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from freezegun import freeze_time

from mailwatch.adapters import oauth
from mailwatch.adapters.imap import MailboxError, check_mailbox
from mailwatch.adapters.oauth import OAuthError, access_token
from mailwatch.adapters.render import RenderedEmail
from mailwatch.adapters.service_account import load_service_account
from mailwatch.adapters.smtp import Mailer, TransportError
from mailwatch.config import (
    GoogleServiceAccount,
    MailboxSettings,
    MicrosoftApp,
    Secret,
    SmtpSettings,
)
from mailwatch.sync import hash_secret
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.token_server import TokenServer
from tests.imap_helpers import mailbox_settings

CLIENT_SECRET = "q8R~s3cret.client-value"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
USER = "support@rouge.example"
RENDERED = RenderedEmail(subject="A nudge", text="Hello\n", html="<p>Hello</p>")


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_cached_tokens(monkeypatch) -> None:
    monkeypatch.setattr(oauth, "TOKENS", oauth.TokenCache())


@pytest.fixture
def microsoft(token_server: TokenServer, monkeypatch) -> MicrosoftApp:
    url = token_server.url("/{tenant}/oauth2/v2.0/token")
    monkeypatch.setattr(oauth, "MICROSOFT_TOKEN_URL", url)
    monkeypatch.setenv("MW_TEST_CLIENT_SECRET", CLIENT_SECRET)
    secret = Secret("env MW_TEST_CLIENT_SECRET", "mailwatch.toml", "mailboxes[0].client_secret_env")
    return MicrosoftApp(tenant="rouge.example", client_id=CLIENT_ID, client_secret=secret)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key_file(path: Path, key: rsa.RSAPrivateKey, token_uri: str) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = {
        "type": "service_account",
        "project_id": "rouge-mailwatch",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "mailwatch@rouge-mailwatch.iam.gserviceaccount.com",
        "client_id": "104242424242424242424",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(key_file))
    return path


@pytest.fixture
def google(token_server: TokenServer, private_key, tmp_path: Path) -> GoogleServiceAccount:
    key_file = write_key_file(tmp_path / "sa.json", private_key, token_server.url("/token"))
    return GoogleServiceAccount(key_file=key_file)


def refusal(app, user: str = USER) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        access_token(app, user)
    return caught.value


# ---------------------------------------------------------------- Microsoft


def test_a_microsoft_app_gets_its_token_with_the_client_credentials_grant(microsoft, token_server):
    assert access_token(microsoft, USER) == "token-1"
    (request,) = token_server.requests
    assert request.path == "/rouge.example/oauth2/v2.0/token"
    assert request.form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "https://outlook.office365.com/.default",
    }


def test_one_app_token_serves_every_mailbox_of_the_app(microsoft, token_server):
    assert access_token(microsoft, "alice@rouge.example") == "token-1"
    assert access_token(microsoft, "support@rouge.example") == "token-1"
    assert len(token_server.requests) == 1


def test_a_token_is_reused_until_five_minutes_before_it_expires_then_fetched_again(
    microsoft, token_server
):
    with freeze_time("2026-03-02 09:00:00") as clock:
        assert access_token(microsoft, USER) == "token-1"
        clock.tick(3599 - 301)
        assert access_token(microsoft, USER) == "token-1"
        clock.tick(2)
        assert access_token(microsoft, USER) == "token-2"
        assert access_token(microsoft, USER) == "token-2"
    assert len(token_server.requests) == 2


SECRET_KEY = "client_secret_env MW_TEST_CLIENT_SECRET"


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        (
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
            "request is the client secret value, not the client secret ID.\r\nTrace ID: 1",
            "AADSTS7000215: the client secret is wrong or expired: create a new one in Entra ID "
            "> App registrations > the app > Certificates & secrets (copy its Value, not its "
            f"Secret ID) and update {SECRET_KEY}",
        ),
        (
            "invalid_client",
            "AADSTS7000222: The provided client secret keys for app '…' are expired.",
            "AADSTS7000222: the client secret has expired: create a new one in Entra ID > App "
            f"registrations > the app > Certificates & secrets and update {SECRET_KEY}",
        ),
        (
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{CLIENT_ID}' was not found in the "
            "directory 'Rouge'.",
            f"AADSTS700016: no app with client_id {CLIENT_ID} in tenant rouge.example: copy the "
            "Application (client) ID from Entra ID > App registrations > the app > Overview "
            "into client_id, and check tenant",
        ),
        (
            "invalid_request",
            "AADSTS90002: Tenant 'rouge.example' not found.",
            "AADSTS90002: tenant rouge.example not found: set tenant to the Directory (tenant) "
            "ID from Entra ID > Overview, or to a verified domain of the organisation",
        ),
    ],
)
def test_each_known_microsoft_refusal_is_permanent_and_says_the_fix_in_one_line(
    microsoft, token_server, error, code, expected
):
    token_server.answer_next(400, {"error": error, "error_description": code})
    refused = refusal(microsoft)
    assert refused.permanent
    assert refused.message == f"Microsoft 365 token: {expected}"
    assert CLIENT_SECRET not in refused.message


def test_an_unknown_refusal_keeps_the_first_line_of_the_providers_words(microsoft, token_server):
    description = "AADSTS50000: Something new went wrong.\r\nTrace ID: abc\r\nTimestamp: now"
    token_server.answer_next(401, {"error": "invalid_client", "error_description": description})
    refused = refusal(microsoft)
    assert refused.permanent
    assert (
        refused.message
        == "Microsoft 365 token: invalid_client: AADSTS50000: Something new went wrong."
    )


def test_a_provider_that_echoes_the_client_secret_never_gets_it_into_the_message(
    microsoft, token_server
):
    echoed = f"bad secret {CLIENT_SECRET} for the app"
    token_server.answer_next(401, {"error": "invalid_client", "error_description": echoed})
    refused = refusal(microsoft)
    assert CLIENT_SECRET not in refused.message
    assert refused.message == "Microsoft 365 token: invalid_client: bad secret … for the app"


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        (503, "<html>Service Unavailable</html>"),
        (500, {"error": "server_error"}),
        (429, {"error": "too_many_requests"}),
        (400, {"error": "temporarily_unavailable", "error_description": "AADSTS90033"}),
    ],
)
def test_a_server_error_or_throttling_is_temporary(microsoft, token_server, status, reply):
    token_server.answer_next(status, reply)
    refused = refusal(microsoft)
    assert not refused.permanent
    assert (
        refused.message == f"Microsoft 365 token: 127.0.0.1:{token_server.port} answered {status}"
    )


def test_an_endpoint_that_is_down_is_temporary(microsoft, token_server):
    port = token_server.port
    token_server.stop()
    refused = refusal(microsoft)
    assert not refused.permanent
    assert refused.message == f"Microsoft 365 token: 127.0.0.1:{port}: Connection refused"


def test_a_failed_fetch_caches_nothing_and_the_next_call_asks_again(microsoft, token_server):
    token_server.answer_next(503, "down")
    refusal(microsoft)
    assert access_token(microsoft, USER) == "token-2"


# ---------------------------------------------------------------- Google


def _decoded(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_service_account_asks_for_the_mailbox_users_mail_with_a_signed_jwt(
    google, token_server, private_key
):
    with freeze_time("2026-03-02 09:00:00"):
        assert access_token(google, USER) == "token-1"
    (request,) = token_server.requests
    assert request.path == "/token"
    assert request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header, claims, signature = request.form["assertion"].split(".")
    assert _decoded(header) == {"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef"}
    issued = 1772442000  # 2026-03-02 09:00:00 UTC
    assert _decoded(claims) == {
        "iss": "mailwatch@rouge-mailwatch.iam.gserviceaccount.com",
        "sub": USER,
        "scope": "https://mail.google.com/",
        "aud": token_server.url("/token"),
        "iat": issued,
        "exp": issued + 3600,
    }
    # Raises InvalidSignature unless the test key's private half signed exactly this.
    private_key.public_key().verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{header}.{claims}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_each_mailbox_user_gets_a_token_of_its_own(google, token_server):
    assert access_token(google, "alice@rouge.example") == "token-1"
    assert access_token(google, "bob@rouge.example") == "token-2"
    assert access_token(google, "alice@rouge.example") == "token-1"
    assert [_decoded(r.form["assertion"].split(".")[1])["sub"] for r in token_server.requests] == [
        "alice@rouge.example",
        "bob@rouge.example",
    ]


@pytest.mark.parametrize(
    ("error", "description", "expected"),
    [
        (
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not "
            "authorized for any of the scopes requested.",
            "unauthorized_client: domain-wide delegation is not granted: in the Google Admin "
            "console > Security > Access and data control > API controls > Manage Domain Wide "
            "Delegation, add client ID 104242424242424242424 with scope https://mail.google.com/",
        ),
        (
            "invalid_grant",
            "Invalid email or User ID",
            f"invalid_grant: {USER} is not a user of this Google Workspace: check username",
        ),
        (
            "invalid_grant",
            "Invalid JWT Signature.",
            "invalid_grant: the key in {key_file} was deleted or revoked: create a new key in "
            "the Google Cloud console > IAM & Admin > Service accounts > "
            "mailwatch@rouge-mailwatch.iam.gserviceaccount.com > Keys and update "
            "service_account_file",
        ),
        (
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
            "invalid_grant: this machine's clock is wrong: synchronise it (NTP)",
        ),
    ],
)
def test_each_known_google_refusal_is_permanent_and_says_the_fix_in_one_line(
    google, token_server, error, description, expected
):
    token_server.answer_next(400, {"error": error, "error_description": description})
    refused = refusal(google)
    assert refused.permanent
    expected = expected.format(key_file=google.key_file)
    assert refused.message == f"Google token for {USER}: {expected}"
    assert "PRIVATE KEY" not in refused.message


def test_a_key_file_replaced_by_something_else_is_a_permanent_error_without_the_key(
    google, token_server
):
    google.key_file.write_text('{"type": "authorized_user"}')
    refused = refusal(google)
    assert refused.permanent
    assert refused.message == (
        f"Google token for {USER}: {google.key_file} is not a service account key file "
        '(no "type": "service_account")'
    )
    assert token_server.requests == []


def test_a_key_file_may_send_its_assertion_over_plain_http_only_to_this_machine(
    tmp_path, private_key
):
    key_file = write_key_file(tmp_path / "sa.json", private_key, "http://tokens.example/token")
    with pytest.raises(ValueError, match="token_uri is not an https:// URL"):
        load_service_account(key_file)


# ---------------------------------------------------------------- SMTP and IMAP logins


def rouge_staff(address: str) -> bool:
    return address.endswith("@rouge.example")


def smtp_settings(sink: SmtpSink, app) -> SmtpSettings:
    return SmtpSettings(
        host=sink.host,
        port=sink.port,
        security="none",
        username=sink.username,
        oauth2=app,
        sender="Mailwatch <mailwatch@rouge.example>",
        timeout=5.0,
    )


def test_mail_is_sent_with_xoauth2_and_the_apps_token(microsoft, token_server, smtp_server):
    token_server.token = smtp_server.token
    Mailer(smtp_settings(smtp_server, microsoft), is_staff=rouge_staff).send(
        ["alice@rouge.example"], RENDERED
    )
    assert smtp_server.logins == ["XOAUTH2"]
    assert len(smtp_server.messages) == 1


def test_a_service_accounts_token_sends_mail_too(google, token_server, smtp_server):
    token_server.token = smtp_server.token
    Mailer(smtp_settings(smtp_server, google), is_staff=rouge_staff).check()
    assert smtp_server.logins == ["XOAUTH2"]
    assert _decoded(token_server.requests[0].form["assertion"].split(".")[1])["sub"] == (
        smtp_server.username
    )


def test_a_granted_token_that_smtp_refuses_says_which_permission_and_is_fetched_anew(
    microsoft, token_server, smtp_server
):
    mailer = Mailer(smtp_settings(smtp_server, microsoft), is_staff=rouge_staff)
    with pytest.raises(TransportError) as caught:
        mailer.check()
    assert caught.value.permanent
    message = caught.value.args[0]
    assert message.startswith(
        f"SMTP 127.0.0.1:{smtp_server.port}: authentication failed (535 5.7.8 Username and "
        f"Password not accepted): the app's token was refused for {smtp_server.username}: "
        "grant the app SMTP.SendAsApp"
    )
    assert "token-1" not in message
    token_server.token = smtp_server.token
    mailer.check()  # the refused token was dropped: a new one is fetched
    assert len(token_server.requests) == 2


def test_a_refused_app_token_stops_smtp_before_it_connects_with_the_fix(
    microsoft, token_server, smtp_server
):
    token_server.answer_next(
        401,
        {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"},
    )
    with pytest.raises(TransportError) as caught:
        Mailer(smtp_settings(smtp_server, microsoft), is_staff=rouge_staff).check()
    assert caught.value.permanent
    assert caught.value.args[0].startswith(
        f"SMTP 127.0.0.1:{smtp_server.port}: Microsoft 365 token: AADSTS7000215: the client "
        "secret is wrong or expired"
    )
    assert smtp_server.logins == []


@pytest.mark.dovecot
def test_a_refused_token_fetch_fails_the_mailbox_permanently_with_the_fix(
    dovecot, tmp_path, microsoft, token_server
):
    user = dovecot.new_user("support")
    settings = mailbox_settings(dovecot, user, tmp_path, password=None, oauth2=microsoft)
    token_server.answer_next(
        400, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."}
    )
    with pytest.raises(MailboxError) as raised:
        check_mailbox(settings, None)
    assert raised.value.permanent
    assert raised.value.message == (
        "support: Microsoft 365 token: AADSTS90002: tenant rouge.example not found: set tenant "
        "to the Directory (tenant) ID from Entra ID > Overview, or to a verified domain of the "
        "organisation"
    )


@pytest.mark.dovecot
def test_an_imap_server_that_refuses_the_granted_token_names_the_missing_permission(
    dovecot, tmp_path, microsoft, token_server
):
    # The test Dovecot offers no XOAUTH2: it refuses the token as Exchange refuses an app
    # without access to the mailbox.
    user = dovecot.new_user("support")
    settings = mailbox_settings(dovecot, user, tmp_path, password=None, oauth2=microsoft)
    with pytest.raises(MailboxError) as raised:
        check_mailbox(settings, None)
    assert raised.value.permanent
    assert raised.value.message.startswith(
        f"support: login refused by 127.0.0.1: the app's token was refused for {user.username}: "
        "grant the app IMAP.AccessAsApp"
    )
    assert "token-1" not in raised.value.message and "\n" not in raised.value.message
    with pytest.raises(MailboxError):
        check_mailbox(settings, None)
    assert len(token_server.requests) == 2  # the refused token was not used again


def test_a_refused_login_waits_for_a_new_client_secret_not_for_a_new_token(microsoft, monkeypatch):
    mailbox = MailboxSettings(
        name="support",
        host="outlook.office365.com",
        port=993,
        security="ssl",
        username=USER,
        oauth2=microsoft,
    )
    before = hash_secret(mailbox)
    monkeypatch.setenv("MW_TEST_CLIENT_SECRET", "a-new-secret")
    assert hash_secret(mailbox) != before
    assert CLIENT_SECRET not in before
