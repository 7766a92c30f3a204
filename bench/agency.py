"""The benchmark agency's configuration file: staff, client accounts and mailboxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.mail import AGENCY, HEAD, STAFF, accounts, staff_address
from bench.servers import PASSWORD

PASSWORD_ENV = "MAILWATCH_BENCH_PASSWORD"
ENVIRONMENT = {PASSWORD_ENV: PASSWORD}


@dataclass(frozen=True)
class Mailbox:
    name: str
    port: int
    username: str
    folders: tuple[str, ...] = ("INBOX", "Sent")


def write_config(path: Path, database_url: str, mailboxes: list[Mailbox]) -> Path:
    lines = [
        "[agency]",
        'name = "Rouge"',
        f'domains = ["{AGENCY}"]',
        'timezone = "Europe/London"',
        f'head_of_client_management = ["{staff_address(HEAD)}"]',
        "[database]",
        f'url = "{database_url}"',
        "retention_days = 3650",
        "[sync]",
        "history_days = 0",  # years of history: the whole mailbox
    ]
    for mailbox in mailboxes:
        folders = ", ".join(f'"{folder}"' for folder in mailbox.folders)
        lines += [
            "[[mailboxes]]",
            f'name = "{mailbox.name}"',
            'host = "127.0.0.1"',
            f"port = {mailbox.port}",
            'security = "none"',
            f'username = "{mailbox.username}"',
            f'password_env = "{PASSWORD_ENV}"',
            f"folders = [{folders}]",
        ]
    for person in (*STAFF, HEAD):
        lines += ["[[staff]]", f'email = "{staff_address(person)}"']
    for account in accounts():
        lines += [
            "[[accounts]]",
            f'name = "{account.name}"',
            f'domains = ["{account.domain}"]',
            f'manager = "{staff_address(account.manager)}"',
            f'backups = ["{staff_address(account.backup)}"]',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path
