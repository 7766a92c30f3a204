"""The configuration file: read, validated and turned into frozen settings.

A bad file is refused before anything runs, with one line that names the file,
the key and what is wrong (`mailwatch.toml: accounts[2].manager: not a staff
address: carol@rouge.example`), so `mailwatch check` and a SIGHUP reload can
print it as it is.  Secrets are never written in the file, only where they live.

Import from here; the modules, in the order a file goes through them:

- `reader`: TOML in, unknown keys refused, typed access to tables, `ConfigError`
- `policy`: the agency's policy tables into a core `Policy`
- `builders`: `load_settings`, the servers and the remaining tables
- `settings`: the frozen settings types the rest of mailwatch runs on
- `secrets`: `Secret`, where a password or token lives and fetching it when needed
"""

from mailwatch.config.builders import load_settings
from mailwatch.config.policy import public_mail_domains
from mailwatch.config.reader import ConfigError, config_path, parse_duration
from mailwatch.config.secrets import Secret
from mailwatch.config.settings import (
    LOG_FORMATS,
    AlertSettings,
    CheckInSettings,
    ClientReportSettings,
    DaemonSettings,
    DigestSettings,
    GoogleServiceAccount,
    HealthSettings,
    LessonSettings,
    MailboxSettings,
    MicrosoftApp,
    OAuth2App,
    Settings,
    SmtpSettings,
    SyncSettings,
)

__all__ = [
    "AlertSettings",
    "CheckInSettings",
    "ClientReportSettings",
    "LOG_FORMATS",
    "ConfigError",
    "DaemonSettings",
    "DigestSettings",
    "GoogleServiceAccount",
    "HealthSettings",
    "LessonSettings",
    "MailboxSettings",
    "MicrosoftApp",
    "OAuth2App",
    "Secret",
    "Settings",
    "SmtpSettings",
    "SyncSettings",
    "config_path",
    "load_settings",
    "parse_duration",
    "public_mail_domains",
]
