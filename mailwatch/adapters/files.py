"""Mail on disk for `mailwatch import`: maildirs, folders of files, mbox files, single messages.

A folder holding `cur/` and `new/` is a maildir; any other folder is walked
recursively; a file whose first line starts with `From ` is an mbox; any
other file is one message.  Gzipped files (mailing-list archives) are read
through gzip.  Mbox files are streamed one message at a time, so memory
stays bounded by the largest message, not the file.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")
# "From sender@example.com Mon Jan ...", not an obsolete "From  : Jane <j@x>" header.
_FROM_LINE = re.compile(rb"From [^\s:]")
_QUOTED_FROM = re.compile(rb">+From ")
# "From sender@example.com Mon Jan  4 10:00:00 2010" (asctime; some writers
# add a zone before the year).  The time carries no zone: it is read as UTC.
_ENVELOPE_TIME = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(\d{1,2})\s+"
    rb"(\d{1,2}):(\d{2})(?::(\d{2}))?\s+(?:[A-Z]{2,5}\s+|[+-]\d{4}\s+)?(\d{4})"
)
_MONTHS = b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
# Folder names that hold a person's sent mail (Thunderbird, Outlook, Apple
# Mail, Gmail, the Enron export, and the usual translations).
_SENT_NAMES = frozenset(
    {
        *("sent", "sent items", "sent messages", "sent mail", "sent email"),
        *("gesendet", "gesendete elemente", "gesendete objekte"),
        *("éléments envoyés", "envoyés", "messages envoyés"),
        *("enviados", "elementos enviados"),
        *("verzonden", "verzonden items"),
        *("posta inviata", "inviati", "elementi inviati"),
    }
)


_MAILDIR_STATE_FILES = frozenset({"maildirfolder", "maildirsize", "subscriptions"})


@dataclass(frozen=True)
class ImportedItem:
    """One message read from disk, with where it came from."""

    raw: bytes
    location: str  # a file path, or "path#n" for the n-th message of an mbox
    folder: str  # the folder it lies in, relative to the import root
    sent_folder: bool
    envelope_time: datetime | None = None  # an mbox From_ line's time, read as UTC


@dataclass(frozen=True)
class ImportWarning:
    """Something skipped on import, and why."""

    location: str
    text: str


def read_path(path: Path, *, sent: bool = False) -> Iterator[ImportedItem | ImportWarning]:
    """Every message under `path`; `sent` marks them all as the user's sent mail."""
    if path.is_dir():
        yield from _read_folder(path, path.name, sent)
    else:
        yield from _read_file(path, "", sent)


def size_of(path: Path) -> int:
    """The bytes under `path`, to tell how far an import is (gzipped files count as stored)."""
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def is_sent_folder(folder: str) -> bool:
    """A folder named like a Sent folder at any level ("Sent", "INBOX.Sent Items", "_sent_mail")."""
    for component in re.split(r"[/\\]", folder):
        last_part = component.rsplit(".", 1)[-1]
        if re.sub(r"[\s_-]+", " ", last_part).strip().casefold() in _SENT_NAMES:
            return True
    return False


def _read_folder(folder: Path, name: str, sent: bool) -> Iterator[ImportedItem | ImportWarning]:
    # Hidden folders are Maildir++ folders (.Sent); hidden files and the
    # servers' own files are state (.mbsyncstate, dovecot-uidlist), not mail.
    children = sorted(folder.iterdir())
    if (folder / "cur").is_dir() and (folder / "new").is_dir():
        for sub in ("cur", "new"):
            for file in sorted((folder / sub).iterdir()):
                if file.is_file() and not _is_state_file(file.name):
                    yield from _read_file(file, name, sent)
        children = [p for p in children if p.name not in ("cur", "new", "tmp")]
    for child in children:
        if child.is_dir():
            yield from _read_folder(child, _join(name, child.name), sent)
        elif child.is_file() and not _is_state_file(child.name):
            yield from _read_file(child, name, sent)


def _is_state_file(name: str) -> bool:
    return name.startswith((".", "dovecot", "courier")) or name in _MAILDIR_STATE_FILES


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child


def _read_file(path: Path, folder: str, sent: bool) -> Iterator[ImportedItem | ImportWarning]:
    try:
        yield from _read_messages(path, folder, sent)
    except (OSError, EOFError) as error:  # unreadable, or a truncated gzip file
        yield ImportWarning(str(path), f"cannot read: {error}")


def _read_messages(path: Path, folder: str, sent: bool) -> Iterator[ImportedItem | ImportWarning]:
    with path.open("rb") as raw_file:
        is_gzip = raw_file.read(2) == _GZIP_MAGIC
    with gzip.open(path, "rb") if is_gzip else path.open("rb") as stream:
        lines = _lines(stream)
        first_line = next(lines, b"")
        if not first_line:
            yield ImportWarning(str(path), "empty file skipped")
        elif _FROM_LINE.match(first_line):
            mbox_folder = _join(folder, path.name.removesuffix(".gz").removesuffix(".mbox"))
            yield from _read_mbox(first_line, lines, path, mbox_folder, sent)
        else:
            raw = first_line + b"".join(lines)
            yield ImportedItem(raw, str(path), folder, sent or is_sent_folder(folder))


def _lines(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """Lines with their endings, for LF, CRLF and CR-only (old Mac) files alike."""
    buffer = b""
    while True:
        chunk = stream.read(_CHUNK)
        buffer += chunk
        start = 0
        for end in _LINE_END.finditer(buffer):
            if chunk and end.end() == len(buffer) and buffer.endswith(b"\r"):
                break  # this CR may be the first half of a CRLF split across chunks
            yield buffer[start : end.end()]
            start = end.end()
        buffer = buffer[start:]
        if not chunk:
            if buffer:
                yield buffer
            return


def _read_mbox(
    first_line: bytes, lines: Iterator[bytes], path: Path, folder: str, sent: bool
) -> Iterator[ImportedItem | ImportWarning]:
    sent_folder = sent or is_sent_folder(folder)
    number = 0
    envelope = first_line
    message: list[bytes] = []
    previous_blank = False

    def finish() -> ImportedItem | ImportWarning:
        location = f"{path}#{number}"
        # The blank line before the next From_ line is the separator, not content.
        if message and not message[-1].strip():
            message.pop()
        if not any(line.strip() for line in message):
            return ImportWarning(location, "empty mbox message skipped")
        raw = b"".join(message)
        return ImportedItem(raw, location, folder, sent_folder, _envelope_time(envelope))

    for line in lines:
        # mboxo writers do not escape "From " in bodies; a From_ line also
        # needs a blank line before it.
        if previous_blank and _FROM_LINE.match(line):
            number += 1
            yield finish()
            envelope, message = line, []
        else:
            message.append(line[1:] if _QUOTED_FROM.match(line) else line)
        previous_blank = not line.strip()
    number += 1
    yield finish()


def _envelope_time(from_line: bytes) -> datetime | None:
    match = _ENVELOPE_TIME.search(from_line)
    if not match:
        return None
    month, day, hour, minute, second, year = match.groups()
    try:
        return datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
