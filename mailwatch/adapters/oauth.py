"""Built-in OAuth2 for Microsoft 365 and Google Workspace: mailwatch fetches its own tokens.

Microsoft 365, app-only access: the client credentials grant (RFC 6749 4.4) at the
tenant's v2.0 endpoint, scope `https://outlook.office365.com/.default`.  The token
is the app's, not a user's, so one token serves every mailbox the app was given
(user and shared mailboxes alike); XOAUTH2 names the mailbox by its username.

Google Workspace, a service account with domain-wide delegation: the JWT bearer
grant (RFC 7523), an RS256-signed assertion whose `sub` is the mailbox's user,
scope `https://mail.google.com/`, posted to the key file's `token_uri`.

Tokens live in memory only, one per (provider, identity), and are fetched again
shortly before they expire.  No token, client secret or private key reaches a
log, the database or a message.  Failures leave as `OAuthError(message,
permanent)`: a refused client, secret, tenant or delegation will fail the same
way next time (permanent, and the message says what to fix); a network failure,
a timeout or a 5xx will not (temporary).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mailwatch.adapters.service_account import ServiceAccount, load_service_account
from mailwatch.config.settings import GoogleServiceAccount, MicrosoftApp, OAuth2App

log = logging.getLogger("mailwatch.oauth")

# Formatted with the tenant. Tests point it at a loopback server; it is not an option.
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
HTTP_TIMEOUT = 30.0  # seconds; a hung token endpoint must not hang a poll
# Fetch a new token this long before the old one expires: a token that expires
# between the fetch and the AUTHENTICATE command is a refused login.
REFRESH_MARGIN = 300.0  # seconds
ASSERTION_LIFETIME = 3600  # seconds; Google's maximum
DESCRIPTION_LIMIT = 200  # characters of a provider's unrecognised error that a message keeps


class OAuthError(Exception):
    """No token: `permanent` failures need a person to change something first."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


# ---------------------------------------------------------------- tokens


def access_token(app: OAuth2App, user: str) -> str:
    """A current access token for `user`'s mailbox; reused until shortly before it expires.
    Raises OAuthError, or ConfigError when the client secret cannot be fetched."""
    if isinstance(app, MicrosoftApp):
        return TOKENS.get(_microsoft_key(app), lambda: _microsoft_token(app))
    return TOKENS.get(_google_key(app, user), lambda: _google_token(app, user))


def discard_token(app: OAuth2App, user: str) -> None:
    """Forget the cached token after a server refused it: permissions granted since it
    was issued show only in a new one."""
    key = _microsoft_key(app) if isinstance(app, MicrosoftApp) else _google_key(app, user)
    TOKENS.discard(key)


def refused_token_fix(app: OAuth2App, user: str, protocol: str) -> str:
    """What to fix when the provider granted a token and the IMAP or SMTP server refused it:
    the app may not open this mailbox yet."""
    if isinstance(app, MicrosoftApp):
        permission = "IMAP.AccessAsApp" if protocol == "IMAP" else "SMTP.SendAsApp"
        smtp_auth = (
            "" if protocol == "IMAP" else f", and turn SMTP AUTH on for {user} (Set-CASMailbox)"
        )
        return (
            f"the app's token was refused for {user}: grant the app {permission} "
            "(Office 365 Exchange Online, application permission, admin consent), register "
            "its service principal in Exchange Online (New-ServicePrincipal) and give it "
            f"FullAccess to {user} (Add-MailboxPermission){smtp_auth}"
        )
    where = "IMAP" if protocol == "IMAP" else "sending mail"
    return (
        f"the service account's token was refused for {user}: check that {user} has Gmail "
        f"with {where} allowed (Google Admin console > Apps > Google Workspace > Gmail > "
        "End User Access)"
    )


def _microsoft_key(app: MicrosoftApp) -> tuple[str, ...]:
    return ("microsoft", app.tenant, app.client_id)


def _google_key(app: GoogleServiceAccount, user: str) -> tuple[str, ...]:
    return ("google", str(app.key_file), user.lower())


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # time.monotonic()


class TokenCache:
    """Tokens by identity, shared by every thread of the process."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], fetch: Callable[[], tuple[str, float]]) -> str:
        with self._lock:
            token = self._tokens.get(key)
        if token is not None and time.monotonic() < token.refresh_at:
            return token.value
        # Fetched outside the lock: one slow endpoint must not stall the other identities.
        value, lifetime = fetch()
        # Short-lived tokens (not seen in practice) are renewed halfway instead.
        refresh_at = time.monotonic() + max(lifetime - REFRESH_MARGIN, lifetime / 2)
        with self._lock:
            self._tokens[key] = _Token(value, refresh_at)
        return value

    def discard(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


TOKENS = TokenCache()


# ---------------------------------------------------------------- Microsoft


def _microsoft_token(app: MicrosoftApp) -> tuple[str, float]:
    secret = app.client_secret.reveal()
    url = MICROSOFT_TOKEN_URL.format(tenant=urllib.parse.quote(app.tenant, safe=""))
    form = {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": secret,
        "scope": MICROSOFT_SCOPE,
    }
    return _post(
        url, form, "Microsoft 365 token", lambda reply: _microsoft_refusal(app, reply), secret
    )


def _microsoft_refusal(app: MicrosoftApp, reply: dict[str, Any]) -> str:
    code, description = _aadsts(reply)
    secret_key = _secret_key(app)
    registration = "Entra ID > App registrations > the app"
    fixes = {
        "7000215": (
            "the client secret is wrong or expired: create a new one in "
            f"{registration} > Certificates & secrets (copy its Value, not its Secret ID) "
            f"and update {secret_key}"
        ),
        "7000222": (
            "the client secret has expired: create a new one in "
            f"{registration} > Certificates & secrets and update {secret_key}"
        ),
        "700016": (
            f"no app with client_id {app.client_id} in tenant {app.tenant}: copy the "
            f"Application (client) ID from {registration} > Overview into client_id, "
            "and check tenant"
        ),
        "90002": (
            f"tenant {app.tenant} not found: set tenant to the Directory (tenant) ID from "
            "Entra ID > Overview, or to a verified domain of the organisation"
        ),
        "900023": (
            f"{app.tenant} is not a tenant: set tenant to the Directory (tenant) ID from "
            "Entra ID > Overview, or to a verified domain of the organisation"
        ),
        "7000229": (
            f"the app has no service principal in tenant {app.tenant}: an administrator "
            f"must grant admin consent in {registration} > API permissions"
        ),
    }
    if code in fixes:
        return f"AADSTS{code}: {fixes[code]}"
    return _unrecognised(reply, description)


def _aadsts(reply: dict[str, Any]) -> tuple[str | None, str]:
    description = reply.get("error_description")
    description = description if isinstance(description, str) else ""
    found = re.search(r"AADSTS(\d+)", description)
    if found:
        return found[1], description
    codes = reply.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return str(codes[0]), description
    return None, description


def _secret_key(app: MicrosoftApp) -> str:
    """`client_secret_env NAME`: where the secret lives, in the file's own words."""
    kind, _, where = str(app.client_secret).partition(" ")
    return f"client_secret_{kind} {where}"


# ---------------------------------------------------------------- Google


def _google_token(app: GoogleServiceAccount, user: str) -> tuple[str, float]:
    try:
        account = load_service_account(app.key_file)
    except ValueError as error:
        raise OAuthError(f"Google token for {user}: {error}", permanent=True) from None
    assertion = signed_assertion(account, user, int(time.time()))
    form = {"grant_type": JWT_BEARER, "assertion": assertion}
    return _post(
        account.token_uri,
        form,
        f"Google token for {user}",
        lambda reply: _google_refusal(app, account, user, reply),
        assertion,
    )


def signed_assertion(account: ServiceAccount, user: str, now: int) -> str:
    """The RS256 JWT that asks for `user`'s mail (RFC 7523 2.1; Google's service-account
    flow): issued by the service account, for `user`, to the token endpoint."""
    header = {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    claims = {
        "iss": account.client_email,
        "sub": user,
        "scope": GOOGLE_SCOPE,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    signature = account.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{_b64url(signature)}"


def _b64(part: dict[str, Any]) -> str:
    return _b64url(json.dumps(part, separators=(",", ":")).encode())


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _google_refusal(
    app: GoogleServiceAccount, account: ServiceAccount, user: str, reply: dict[str, Any]
) -> str:
    error = reply.get("error")
    description = reply.get("error_description")
    description = description if isinstance(description, str) else ""
    lowered = description.lower()
    if error == "unauthorized_client":
        return (
            "unauthorized_client: domain-wide delegation is not granted: in the Google Admin "
            "console > Security > Access and data control > API controls > Manage Domain "
            f"Wide Delegation, add client ID {account.client_id} with scope {GOOGLE_SCOPE}"
        )
    if error == "invalid_grant" and ("email" in lowered or "user" in lowered):
        return f"invalid_grant: {user} is not a user of this Google Workspace: check username"
    if error == "invalid_grant" and "signature" in lowered:
        return f"invalid_grant: {_new_key(app, account, 'was deleted or revoked')}"
    if error == "invalid_grant" and ("iat" in lowered or "exp" in lowered or "time" in lowered):
        return "invalid_grant: this machine's clock is wrong: synchronise it (NTP)"
    if error == "invalid_client":
        return f"invalid_client: {_new_key(app, account, 'or its account was deleted or disabled')}"
    return _unrecognised(reply, description)


def _new_key(app: GoogleServiceAccount, account: ServiceAccount, what: str) -> str:
    return (
        f"the key in {app.key_file} {what}: create a new key in the Google Cloud console > "
        f"IAM & Admin > Service accounts > {account.client_email} > Keys and update "
        "service_account_file"
    )


# ---------------------------------------------------------------- HTTP


def _post(
    url: str,
    form: dict[str, str],
    what: str,
    refusal: Callable[[dict[str, Any]], str],
    secret: str,
) -> tuple[str, float]:
    """POST the grant; (access token, lifetime in seconds) or OAuthError. `secret` (the
    client secret or assertion) is struck out of anything the provider says back."""
    where = urllib.parse.urlsplit(url).netloc
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise _http_error(what, where, error, refusal, secret) from None
    except TimeoutError:
        raise OAuthError(f"{what}: {where}: timed out", permanent=False) from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or str(error.reason)
        raise OAuthError(f"{what}: {where}: {reason}", permanent=False) from None
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise OAuthError(f"{what}: {where}: {reason}", permanent=False) from None
    reply = _json(body)
    token = reply.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthError(f"{what}: {where} answered without an access token", permanent=False)
    lifetime = reply.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)  # Microsoft's v1 endpoint sent it as a string
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = 3600  # both providers' documented lifetime
    log.debug("%s: fetched from %s, valid %d s", what, where, lifetime)
    return token, float(lifetime)


def _http_error(
    what: str,
    where: str,
    error: urllib.error.HTTPError,
    refusal: Callable[[dict[str, Any]], str],
    secret: str,
) -> OAuthError:
    try:
        reply = _json(error.read())
    except OSError:
        reply = {}
    finally:
        error.close()
    # 408 and 429 pass with time, and so does a provider's own "temporarily_unavailable".
    passing = error.code >= 500 or error.code in (408, 429)
    if passing or reply.get("error") == "temporarily_unavailable":
        return OAuthError(f"{what}: {where} answered {error.code}", permanent=False)
    if "error" not in reply:
        return OAuthError(f"{what}: {where} answered {error.code}", permanent=True)
    return OAuthError(f"{what}: {_struck(refusal(reply), secret)}", permanent=True)


def _json(body: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(body)
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def _unrecognised(reply: dict[str, Any], description: str) -> str:
    """An error without a known fix: the provider's own words, first line, bounded."""
    error = reply.get("error")
    code = error if isinstance(error, str) else "refused"
    lines = description.strip().splitlines()
    said = lines[0][:DESCRIPTION_LIMIT] if lines else ""
    return f"{code}: {said}" if said else code


def _struck(text: str, secret: str) -> str:
    # Providers do not echo secrets; this makes sure a future one cannot through us.
    return text.replace(secret, "…") if secret else text
