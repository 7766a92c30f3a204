"""Mail on disk for `mailwatch import`: maildirs, folders, mbox files, single messages."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailwatch.adapters.files import ImportedItem, ImportWarning, is_sent_folder, read_path


def message(n: int, body: str = "Hello") -> bytes:
    return f"Message-ID: <m{n}@acme.example>\nSubject: m{n}\n\n{body}\n".encode()


def items(path: Path, **kwargs: bool) -> list[ImportedItem]:
    found = list(read_path(path, **kwargs))
    assert all(isinstance(item, ImportedItem) for item in found), found
    return found  # type: ignore[return-value]


def test_a_maildir_yields_the_messages_of_cur_and_new(tmp_path: Path) -> None:
    maildir = tmp_path / "Sent Items"
    for sub, n in (("cur", 1), ("new", 2), ("tmp", 3)):
        (maildir / sub).mkdir(parents=True)
        (maildir / sub / f"{n}:2,S").write_bytes(message(n))
    found = items(maildir)
    assert [item.raw for item in found] == [message(1), message(2)]
    assert {item.folder for item in found} == {"Sent Items"}
    assert all(item.sent_folder and item.envelope_time is None for item in found)


def test_maildir_plus_plus_subfolders_are_folders_of_their_own(tmp_path: Path) -> None:
    for folder, n in ((tmp_path / "Maildir", 1), (tmp_path / "Maildir" / ".Sent", 2)):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
        (folder / "cur" / f"{n}:2,").write_bytes(message(n))
    found = items(tmp_path / "Maildir")
    assert [(item.folder, item.sent_folder) for item in found] == [
        ("Maildir", False),
        ("Maildir/.Sent", True),
    ]


def test_a_plain_folder_is_walked_recursively_with_relative_folder_names(tmp_path: Path) -> None:
    root = tmp_path / "badeer-r"
    (root / "_sent_mail").mkdir(parents=True)
    (root / "inbox" / "2001").mkdir(parents=True)
    (root / "_sent_mail" / "1.").write_bytes(message(1))
    (root / "inbox" / "2001" / "2.").write_bytes(message(2))
    (root / "notes.eml").write_bytes(message(3))
    found = {item.folder: item for item in items(root)}
    assert set(found) == {"badeer-r", "badeer-r/_sent_mail", "badeer-r/inbox/2001"}
    assert found["badeer-r/_sent_mail"].sent_folder
    assert not found["badeer-r/inbox/2001"].sent_folder
    assert found["badeer-r/inbox/2001"].location == str(root / "inbox" / "2001" / "2.")


def test_the_sent_flag_marks_everything_as_sent(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(message(1))
    assert items(tmp_path / "a.eml", sent=True)[0].sent_folder
    assert not items(tmp_path / "a.eml")[0].sent_folder


@pytest.mark.parametrize(
    ("folder", "sent"),
    [
        ("Sent", True),
        ("Sent Items", True),
        ("sent messages", True),
        ("sent-mail", True),
        ("sent_mail", True),
        ("_sent_mail", True),
        ("sent_items", True),
        ("INBOX.Sent", True),
        ("[Gmail]/Sent Mail", True),
        ("dean-c/sent/2001", True),
        ("Gesendete Elemente", True),
        ("Inbox", False),
        ("Consent forms", False),
        ("sentiment", False),
        ("", False),
    ],
)
def test_sent_folders_are_recognised_by_name(folder: str, sent: bool) -> None:
    assert is_sent_folder(folder) is sent


def test_an_mbox_is_split_on_from_lines_with_envelope_times_and_unquoting(tmp_path: Path) -> None:
    mbox = tmp_path / "Sent.mbox"
    mbox.write_bytes(
        b"From jane@acme.example Tue Mar  4 10:00:05 2025\n"
        + message(1, "First\n>From the start, quoted\n>>From twice")
        + b"\n"
        + b"From bob@rouge.example Wed Mar  5 09:01:00 +0100 2025\n"
        + message(2, "Second\nFrom here on, an mboxo line without a blank line before")
    )
    found = items(mbox)
    assert len(found) == 2
    assert found[0].raw == message(1, "First\nFrom the start, quoted\n>From twice")
    assert found[0].envelope_time == datetime(2025, 3, 4, 10, 0, 5, tzinfo=UTC)
    assert found[1].envelope_time == datetime(2025, 3, 5, 9, 1, tzinfo=UTC)
    assert found[1].raw.endswith(b"without a blank line before\n")
    assert [item.location for item in found] == [f"{mbox}#1", f"{mbox}#2"]
    assert all(item.folder == "Sent" and item.sent_folder for item in found)


def test_a_gzipped_mbox_is_read_through(tmp_path: Path) -> None:
    path = tmp_path / "2010-January.txt.gz"
    path.write_bytes(gzip.compress(b"From a@b.example Fri Jan  1 00:00:00 2010\n" + message(1)))
    found = items(path)
    assert [item.raw for item in found] == [message(1)]


def test_a_cr_only_mbox_is_split_too(tmp_path: Path) -> None:
    path = tmp_path / "mac.mbox"
    data = b"From a@b.example Fri Jan  1 00:00:00 2010\n" + message(1) + b"\n"
    data += b"From a@b.example Fri Jan  1 00:00:01 2010\n" + message(2)
    path.write_bytes(data.replace(b"\n", b"\r"))
    found = items(path)
    assert [item.raw for item in found] == [message(1).replace(b"\n", b"\r")] + [
        message(2).replace(b"\n", b"\r")
    ]


def test_an_obsolete_from_header_is_not_an_mbox(tmp_path: Path) -> None:
    path = tmp_path / "example13.eml"
    path.write_bytes(b"From  : John Doe <jdoe@machine.example>\r\nSubject: hi\r\n\r\nbody")
    found = items(path)
    assert len(found) == 1 and found[0].raw.startswith(b"From  : John")


def test_any_other_file_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(message(1).replace(b"\n", b"\r\n"))
    found = items(path)
    assert [(item.raw, item.location, item.folder) for item in found] == [
        (message(1).replace(b"\n", b"\r\n"), str(path), "")
    ]


def test_empty_files_and_empty_mbox_messages_are_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "empty.eml").write_bytes(b"")
    (tmp_path / "box.mbox").write_bytes(
        b"From a@b.example Fri Jan  1 00:00:00 2010\n\nFrom a@b.example Fri Jan  1 00:00:01 2010\n"
        + message(1)
    )
    found = list(read_path(tmp_path))
    warnings = [item for item in found if isinstance(item, ImportWarning)]
    assert [(w.location, w.text) for w in warnings] == [
        (f"{tmp_path / 'box.mbox'}#1", "empty mbox message skipped"),
        (str(tmp_path / "empty.eml"), "empty file skipped"),
    ]
    assert [item.raw for item in found if isinstance(item, ImportedItem)] == [message(1)]


def test_a_big_mbox_is_streamed_one_message_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    with path.open("wb") as out:
        for n in range(2000):
            out.write(
                b"From a@b.example Fri Jan  1 00:00:00 2010\n" + message(n, "x" * 2000) + b"\n"
            )
    stream = read_path(path)
    first = next(stream)
    assert isinstance(first, ImportedItem) and first.raw.startswith(b"Message-ID: <m0@")
    assert sum(1 for _ in stream) == 1999


def test_server_state_files_and_hidden_files_are_not_mail(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1:2,").write_bytes(message(1))
    (maildir / "stray-message").write_bytes(message(2))
    for state in ("dovecot-uidlist", "dovecot.index.log", "maildirfolder", "subscriptions"):
        (maildir / state).write_bytes(b"3 V1 N2\n")
    (maildir / ".mbsyncstate").write_bytes(b"FarUidValidity 1\n")
    assert [item.raw for item in items(maildir)] == [message(1), message(2)]
