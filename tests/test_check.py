"""`mailwatch check` against a real Dovecot: what it says about each mailbox."""

from __future__ import annotations

import pytest

from mailwatch.cli import main
from tests.reliability.agency import MAILBOX, PASSWORD_ENV, write_config

pytestmark = pytest.mark.dovecot


def test_check_says_in_which_mailboxes_the_no_reply_needed_folder_exists(
    dovecot, tmp_path, monkeypatch, capsys
):
    alice, bob, carol = (dovecot.new_user(name, "pw") for name in ("alice", "bob", "carol"))
    for user in (alice, carol):
        with dovecot.client(user) as client:
            client.create_folder("No reply needed")
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    every_folder = MAILBOX.format(
        name="carol",
        port=dovecot.port,
        username=carol.username,
        password_env=PASSWORD_ENV,
        timeout=10,
    ).replace('folders = ["INBOX", "Sent"]\n', "")
    config = write_config(
        tmp_path, [("alice", dovecot.port, alice), ("bob", dovecot.port, bob)], extra=every_folder
    )

    assert main(["--config", str(config), "check"]) == 0

    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "waive folder" in line] == [
        "alice: waive folder 'No reply needed' found but not watched "
        "(add it to this mailbox's folders)",
        "bob: waive folder 'No reply needed' not found "
        "(create it to let people waive by moving mail there)",
        "carol: waive folder 'No reply needed' found (folder): "
        "moving or copying mail there waives it",
    ]
    assert not any(line.startswith(("alice: alice:", "bob: bob:")) for line in printed)
