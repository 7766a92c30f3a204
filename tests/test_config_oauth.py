"""The built-in OAuth2 keys of [[mailboxes]] and [smtp]: what loads and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailwatch.config import (
    ConfigError,
    GoogleServiceAccount,
    MicrosoftApp,
    load_settings,
)

PASTED_SECRET = "q8R~pasted.client-secret-value"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"

AGENCY = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
"""
MAILBOX = """
[[mailboxes]]
name = "support"
host = "outlook.office365.com"
username = "support@rouge.example"
"""
MICROSOFT = f"""oauth2 = "microsoft"
tenant = "rouge.example"
client_id = "{CLIENT_ID}"
client_secret_env = "MAILWATCH_M365_SECRET"
"""
GOOGLE = 'oauth2 = "google"\nservice_account_file = "sa.json"\n'


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def key_file(directory: Path, pem: str, **changes: object) -> Path:
    data = {
        "type": "service_account",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "mailwatch@rouge-mailwatch.iam.gserviceaccount.com",
        "client_id": "104242424242424242424",
        "token_uri": "https://oauth2.googleapis.com/token",
        **changes,
    }
    path = directory / "sa.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return path


def load(directory: Path, text: str):
    path = directory / "mailwatch.toml"
    path.write_text(AGENCY + text)
    path.chmod(0o600)
    return load_settings(path)


def refused(directory: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(directory, text)
    message = str(caught.value)
    assert "\n" not in message and PASTED_SECRET not in message
    return message.removeprefix(f"{directory / 'mailwatch.toml'}: ")


def test_a_microsoft_app_mailbox_loads_with_its_secret_named_not_fetched(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILWATCH_M365_SECRET", raising=False)
    mailbox = load(tmp_path, MAILBOX + MICROSOFT).mailboxes[0]
    assert mailbox.password is None and mailbox.oauth2_token is None
    assert isinstance(mailbox.oauth2, MicrosoftApp)
    assert (mailbox.oauth2.tenant, mailbox.oauth2.client_id) == ("rouge.example", CLIENT_ID)
    assert str(mailbox.oauth2.client_secret) == "env MAILWATCH_M365_SECRET"


def test_a_client_secret_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "m365").write_text("the-secret\n")
    text = MAILBOX + MICROSOFT.replace(
        'client_secret_env = "MAILWATCH_M365_SECRET"', 'client_secret_file = "m365"'
    )
    assert load(tmp_path, text).mailboxes[0].oauth2.client_secret.reveal() == "the-secret"


def test_a_google_service_account_mailbox_loads_with_its_key_file(tmp_path, key_pem):
    key_file(tmp_path, key_pem)
    mailbox = load(tmp_path, MAILBOX + GOOGLE).mailboxes[0]
    assert mailbox.oauth2 == GoogleServiceAccount(key_file=tmp_path / "sa.json")
    assert "PRIVATE KEY" not in repr(mailbox)


def test_smtp_takes_the_same_keys(tmp_path):
    text = '[smtp]\nhost = "smtp.office365.com"\nusername = "mailwatch@rouge.example"\n'
    text += 'sender = "mailwatch@rouge.example"\n' + MICROSOFT
    assert isinstance(load(tmp_path, text).smtp.oauth2, MicrosoftApp)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            MAILBOX + 'password_env = "X"\n' + MICROSOFT,
            "mailboxes[0].oauth2: two secret sources (password_env and oauth2): keep one",
        ),
        (
            MAILBOX + 'oauth2_token_command = "token"\n' + GOOGLE,
            "mailboxes[0].oauth2: two secret sources (oauth2_token_command and oauth2): keep one",
        ),
        (
            MAILBOX + 'oauth2 = "yahoo"\n',
            "mailboxes[0].oauth2: expected one of microsoft, google, got 'yahoo'",
        ),
        (
            MAILBOX + MICROSOFT.replace('tenant = "rouge.example"\n', ""),
            'mailboxes[0].tenant: missing (required with oauth2 = "microsoft")',
        ),
        (
            MAILBOX + MICROSOFT.replace(f'client_id = "{CLIENT_ID}"\n', ""),
            'mailboxes[0].client_id: missing (required with oauth2 = "microsoft")',
        ),
        (
            MAILBOX + MICROSOFT.replace('client_secret_env = "MAILWATCH_M365_SECRET"\n', ""),
            'mailboxes[0]: oauth2 = "microsoft" needs client_secret_env, client_secret_file '
            "or client_secret_command",
        ),
        (
            MAILBOX + MICROSOFT + 'client_secret_command = "pass show m365"\n',
            "mailboxes[0].client_secret_command: two secret sources (client_secret_env and "
            "client_secret_command): keep one",
        ),
        (
            MAILBOX + MICROSOFT.replace(CLIENT_ID, PASTED_SECRET),
            "mailboxes[0].client_id: expected the Application (client) ID, like "
            "00000000-0000-0000-0000-…",
        ),
        (
            MAILBOX + MICROSOFT.replace('"rouge.example"', '"https://login.example/x"'),
            "mailboxes[0].tenant: expected the Directory (tenant) ID or a domain like "
            "rouge.example",
        ),
        (
            MAILBOX + MICROSOFT.replace('"MAILWATCH_M365_SECRET"', f'"{PASTED_SECRET}"'),
            "mailboxes[0].client_secret_env: not an environment variable name",
        ),
        (
            MAILBOX + MICROSOFT + f'client_secret = "{PASTED_SECRET}"\n',
            "mailboxes[0].client_secret: secrets are never written in the file: use "
            "client_secret_env, client_secret_file, client_secret_command",
        ),
        (
            MAILBOX + MICROSOFT + 'service_account_file = "sa.json"\n',
            'mailboxes[0].service_account_file: not used with oauth2 = "microsoft"',
        ),
        (
            MAILBOX + GOOGLE + 'tenant = "rouge.example"\n',
            'mailboxes[0].tenant: not used with oauth2 = "google"',
        ),
        (
            MAILBOX + 'password_env = "X"\ntenant = "rouge.example"\n',
            'mailboxes[0].tenant: only with oauth2 = "microsoft" or "google"',
        ),
        (
            MAILBOX + 'oauth2 = "google"\n',
            'mailboxes[0].service_account_file: missing (required with oauth2 = "google")',
        ),
        (
            '[smtp]\nhost = "smtp.office365.com"\nsender = "m@rouge.example"\n' + MICROSOFT,
            "smtp.oauth2: needs smtp.username: the mailbox that sends",
        ),
    ],
)
def test_a_wrong_oauth2_setup_is_refused_in_one_line_naming_the_key(tmp_path, text, problem):
    assert refused(tmp_path, text) == problem


def test_a_missing_service_account_file_is_refused(tmp_path):
    assert refused(tmp_path, MAILBOX + GOOGLE) == (
        f"mailboxes[0].service_account_file: no such file: {tmp_path / 'sa.json'}"
    )


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"type": "authorized_user"},
            'is not a service account key file (no "type": "service_account")',
        ),
        ({"client_email": None}, "lacks client_email"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n"},
            "private_key is not a PEM private key",
        ),
        ({"token_uri": "http://tokens.example/token"}, "token_uri is not an https:// URL"),
    ],
)
def test_a_key_file_that_is_not_a_service_accounts_is_refused_without_its_contents(
    tmp_path, key_pem, changes, problem
):
    path = key_file(tmp_path, key_pem, **changes)
    message = refused(tmp_path, MAILBOX + GOOGLE)
    assert message.startswith(f"mailboxes[0].service_account_file: {path}")
    assert message.endswith(problem)
    assert "not a key" not in message


def test_a_key_file_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "sa.json").write_text("-----BEGIN PRIVATE KEY-----")
    assert refused(tmp_path, MAILBOX + GOOGLE) == (
        f"mailboxes[0].service_account_file: {tmp_path / 'sa.json'} is not JSON "
        "(expected a service account's key file)"
    )
