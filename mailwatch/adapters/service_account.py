"""A Google service account's JSON key file: read and checked, for the configuration
(refused at load time) and for built-in OAuth2 (read again whenever a token is needed)."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # for a key file that names none


@dataclass(frozen=True)
class ServiceAccount:
    """What mailwatch needs from a Google service account's JSON key file."""

    client_email: str
    client_id: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    token_uri: str


def load_service_account(path: Path) -> ServiceAccount:
    """Read and check a key file; ValueError says what is wrong, never the key."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} is not JSON (expected a service account's key file)") from None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise ValueError(f'{path} is not a service account key file (no "type": "service_account")')
    fields = ("client_email", "client_id", "private_key_id", "private_key")
    missing = [name for name in fields if not isinstance(data.get(name), str) or not data[name]]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    token_uri = data.get("token_uri", GOOGLE_TOKEN_URL)
    if not isinstance(token_uri, str) or not _acceptable_token_uri(token_uri):
        raise ValueError(f"{path}: token_uri is not an https:// URL")
    try:
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: private_key is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: private_key is not an RSA key")
    return ServiceAccount(
        client_email=data["client_email"],
        client_id=data["client_id"],
        private_key_id=data["private_key_id"],
        private_key=key,
        token_uri=token_uri,
    )


def _acceptable_token_uri(uri: str) -> bool:
    """https, or plain http to this machine only (the signed assertion must not cross
    a network in clear)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")
