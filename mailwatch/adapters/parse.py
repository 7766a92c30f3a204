"""Raw message bytes -> core `Message`.

Header fields are split as the standard library's `compat32` policy splits them (raw
values, never an exception on access), by `headers.split_fields`, which reads only the
fields used here at a fraction of the stdlib parser's cost; decoding is done here, value
by value, so that one broken field costs that field only.  (`email.policy.default` is
correct but slow on big address lists and mis-parses odd Message-IDs (mail-engineering
notes 2.1 and 5).  mail-parser adds nothing we need for headers, so it is not used.)
The body's first text, for the "thanks!"-only check, comes from `mime.first_text`.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import quopri
import re
import unicodedata
from datetime import UTC, datetime

from mailwatch.adapters.headers import Fields, split_fields
from mailwatch.adapters.mime import first_text
from mailwatch.core.automated import looks_like_courtesy
from mailwatch.core.model import Message

# A real header block is a few KiB, but 10,000 recipients with display names
# take about 400 KiB.  Past 1 MiB a header is hostile: the rest is dropped
# at a line break, so parsing stays linear and bounded (the fields we read
# come first in practice; a field cut off is simply not seen).
HEADER_CAP = 1024 * 1024
# How much of the body decides "only thanks": the IMAP adapter fetches
# BODY.PEEK[TEXT]<0.BODY_PREFIX_BYTES>.
BODY_PREFIX_BYTES = 8192
MAX_REFERENCES = 100
MAX_ID_LENGTH = 250
MAX_HEADER_VALUE = 1000
MAX_ADDRESS_LENGTH = 2000  # RFC 5322 lines stop at 998 characters

# The fields the automation rules read, kept in `Message.headers`.
RULE_FIELDS = tuple(
    """
    auto-submitted x-autoreply x-autorespond x-autoresponder precedence x-precedence
    list-id list-unsubscribe list-post feedback-id x-unsubscribe return-path content-type
    importance x-priority priority x-ms-exchange-inbox-rules-loop x-mailwatch
    x-auto-response-suppress
    """.split()
)
_RULE_PREFIXES = ("x-campaign",)

# Everything parse_message reads, for an IMAP BODY.PEEK[HEADER.FIELDS (...)] fetch.
# X-Campaign* has no fixed name; the common ESP spellings are listed.
HEADER_FIELDS = (
    *"message-id in-reply-to references date received from sender to cc bcc subject".split(),
    *"thread-index content-transfer-encoding".split(),
    *RULE_FIELDS,
    *"x-campaign x-campaign-id x-campaignid".split(),
)

_READ_FIELDS = frozenset(HEADER_FIELDS)

# RFC 5322 breaks lines at CRLF only; a bare CR inside a field is (obsolete) text.  Files
# stored on Unix break at LF, and old Mac files at CR: a CR is a break only in mail with
# no LF at all.
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CR_ONLY_BLANK_LINE = re.compile(rb"\r\r")
_BARE_CR = re.compile(rb"\r(?!\n)")
# RFC 5322 4.5.3 (obsolete syntax) allows white space before the colon: "Subject  : x".
_OBSOLETE_FIELD_NAME = re.compile(r"^([\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_ENCODED_WORDS = re.compile(r"(\?=)\s+(=\?)")
_FOLDING = re.compile(r"\r\n|\r|\n")
_SPACES = re.compile(r"\s+")
# `jane@acme.example`, `Jane Doe <jane@acme.example>`, `"Doe, Jane" <jane@acme.example>`.
# No two parts can match the same characters, so a failed match stays linear.
_ADDR_SPEC = r'[^\s<>()",;:\\@]+@[^\s<>()",;:\\@]+'
_SIMPLE_ADDRESS = re.compile(
    rf'(?P<bare>{_ADDR_SPEC})|(?:"(?P<qname>[^"\\]*)"\s*|(?P<name>[^<>()",;:\\@]*))<(?P<addr>{_ADDR_SPEC})>'
)
_ADDRESS_LIST_GROUPING = re.compile(r'[\\"(<]')  # what can hide a comma in an address list
_NOT_IN_ADDRESS = re.compile(r"[\s<>()\[\],;:\\]")


class UnparsableMessage(Exception):
    """The input has no header at all (empty, or not a mail message)."""


def header_block(raw: bytes) -> bytes:
    """The header block (up to and including the blank line), at most HEADER_CAP bytes.

    Works for CRLF, LF and CR-only mail, and for a header-only IMAP fetch that
    has no body (or even no final blank line).
    """
    window = raw[:HEADER_CAP]
    cr_only = b"\n" not in window
    # a bare CR becomes a space of the same length, so positions stay those of `raw`
    lines = window if cr_only else _BARE_CR.sub(b" ", window)
    if blank := (_CR_ONLY_BLANK_LINE if cr_only else _BLANK_LINE).search(lines):
        return raw[: blank.end()]
    if len(raw) <= HEADER_CAP:
        return raw
    last_break = window.rfind(b"\r" if cr_only else b"\n")
    return window[: last_break + 1] if last_break >= 0 else window


def body_prefix_of(raw: bytes) -> bytes:
    """The first BODY_PREFIX_BYTES of a full message's body, for `parse_message`."""
    head = header_block(raw)
    return raw[len(head) : len(head) + BODY_PREFIX_BYTES]


def parse_message(raw: bytes, *, body_prefix: bytes | None = None) -> Message:
    """Parse a full message or a header block into a core Message (with no copies)."""
    head = header_block(raw)
    fields = _parse_fields(head)
    if not fields.seen_any:
        raise UnparsableMessage("no header fields found")
    key = _message_id(fields) or _synthetic_key(fields)
    from_addresses = _addresses(fields, "from")
    # `From: MAILER-DAEMON <>` has no address; its name still tells who sent it.
    from_addr, from_name = from_addresses[0] if from_addresses else (None, _display_name(fields))
    senders = _addresses(fields, "sender")
    return Message(
        key=key,
        from_addr=from_addr,
        from_name=from_name,
        sender_addr=senders[0][0] if senders else None,
        to=_addr_specs(fields, "to"),
        cc=_addr_specs(fields, "cc"),
        bcc=_addr_specs(fields, "bcc"),
        subject=_clean_text(_decode(_first(fields, "subject"))),
        date=_parse_date(_first(fields, "date")),
        received_time=_received_time(fields),
        in_reply_to=tuple(i for i in _ids(_first(fields, "in-reply-to")) if i != key),
        references=_references(_first(fields, "references"), key),
        thread_index=_thread_index(_first(fields, "thread-index")),
        headers=_rule_headers(fields),
        courtesy=body_prefix is not None and looks_like_courtesy(_body_text(head, body_prefix)),
    )


# ---------------------------------------------------------------- fields


def _parse_fields(head: bytes) -> Fields:
    # Decoding first means raw 8-bit header bytes become UTF-8 (with
    # replacement characters) before any parsing.
    lines = head.replace(b"\r", b"\n") if b"\n" not in head else _BARE_CR.sub(b" ", head)
    text = _OBSOLETE_FIELD_NAME.sub(r"\1:", lines.decode("utf-8", "replace"))
    return split_fields(text, _read)


def _read(name: str) -> bool:
    """The fields parse_message reads (a lower-cased name)."""
    return name in _READ_FIELDS or name.startswith(_RULE_PREFIXES)


def _first(fields: Fields, name: str) -> str:
    value = fields.get(name)
    return _unfold(value) if value is not None else ""


def _unfold(value: str) -> str:
    if "\n" not in value and "\r" not in value:  # most values: nothing to unfold
        return value.strip()
    return _FOLDING.sub("", value).strip()


def _decode(value: str) -> str:
    """RFC 2047 decoding that tolerates unknown charsets and broken encoded words."""
    if "=?" not in value:  # no encoded word
        return value
    value = _BETWEEN_ENCODED_WORDS.sub(r"\1\2", value)
    return _ENCODED_WORD.sub(_decode_word, value)


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, text = match.groups()
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if encoding in "bB":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = quopri.decodestring(
                text.replace("_", " ").encode("ascii", "replace"), header=True
            )
    except (binascii.Error, ValueError):
        return match.group(0)
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _clean_text(value: str) -> str:
    if value.isprintable():  # no control character, no line break: nothing to drop
        # and no white space but the ASCII space: only runs of it are changed
        return (_SPACES.sub(" ", value) if "  " in value else value).strip()
    without_controls = "".join(
        " " if ch in "\t\r\n" else ch
        for ch in value
        if unicodedata.category(ch) != "Cc" or ch in "\t\r\n"
    )
    return _SPACES.sub(" ", without_controls).strip()


def _rule_headers(fields: Fields) -> tuple[tuple[str, str], ...]:
    kept = []
    for name, value in fields.items:
        name = name.lower()
        if name in RULE_FIELDS or name.startswith(_RULE_PREFIXES):
            kept.append((name, _clean_text(_decode(value))[:MAX_HEADER_VALUE]))
    return tuple(kept)


# ---------------------------------------------------------------- addresses


def _addresses(fields: Fields, name: str) -> list[tuple[str, str]]:
    """(addr-spec lower-cased, decoded display name) pairs; garbage is dropped."""
    found: dict[str, str] = {}
    for value in fields.get_all(name):
        for display, addr in _address_pairs(_unfold(value)):
            addr = addr.strip().lower()
            local, _, domain = addr.rpartition("@")
            if addr not in found and local and domain and not _NOT_IN_ADDRESS.search(addr):
                found[addr] = _clean_text(_decode(display))
    return list(found.items())


def _display_name(fields: Fields) -> str:
    pairs = _address_pairs(_first(fields, "from"))
    return _clean_text(_decode(pairs[0][0])) if pairs else ""


def _address_pairs(value: str) -> list[tuple[str, str]]:
    # email.utils.getaddresses is fast on real lists but slows down badly on
    # long runs of ";" or "<" and recurses once per "(": give it one address
    # at a time (common shapes by regex), and treat a "single address" longer
    # than any real one as garbage.
    pairs: list[tuple[str, str]] = []
    for piece in _split_addresses(value):
        piece = piece.strip()
        if len(piece) > MAX_ADDRESS_LENGTH:
            continue
        if simple := _SIMPLE_ADDRESS.fullmatch(piece):
            name = simple["qname"] or (simple["name"] or "").strip()
            pairs.append((name, simple["bare"] or simple["addr"]))
            continue
        try:
            pairs.extend(email.utils.getaddresses([piece]))
        except RecursionError:
            continue
    return pairs


def _split_addresses(value: str) -> list[str]:
    """Split an address list at the commas outside quotes, <> and (comments)."""
    # one address, or nothing that can hide a comma: every comma splits
    if "," not in value or not _ADDRESS_LIST_GROUPING.search(value):
        return value.split(",")
    pieces, start, quoted, depth, escaped = [], 0, False, 0, False
    for index, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"' and not depth:
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "(<":
            depth += 1
        elif ch in ")>" and depth:
            depth -= 1
        elif ch == "," and not depth:
            pieces.append(value[start:index])
            start = index + 1
    pieces.append(value[start:])
    return pieces


def _addr_specs(fields: Fields, name: str) -> tuple[str, ...]:
    return tuple(addr for addr, _ in _addresses(fields, name))


# ---------------------------------------------------------------- ids


def _ids(value: str) -> list[str]:
    """Normalised `<local@domain>` ids of a Message-ID / In-Reply-To / References value."""
    ids: dict[str, None] = {}
    for found in _ANGLE_ID.findall(_strip_comments(value)):
        if normal := _normalise_id(found):
            ids[normal] = None
    return list(ids)


def _normalise_id(found: str) -> str | None:
    # Folding or sloppy clients put white space inside ids (`<a b@c>`); the
    # same id is then spelled the same way everywhere once it is removed.
    # (an id without a space and printable has no white space of any kind)
    compact = found if " " not in found and found.isprintable() else _SPACES.sub("", found)
    if not compact or len(compact) > MAX_ID_LENGTH:
        return None
    local, at, domain = compact.rpartition("@")
    if not at:
        return f"<{compact}>"
    return f"<{local}@{domain.lower()}>"


def _strip_comments(value: str) -> str:
    """Drop (comments) outside <ids>: `<id@x> (Jane's message of Tue <j@x>)`."""
    if "(" not in value:
        return value
    kept, depth, in_id = [], 0, False
    for ch in value:
        if depth == 0 and ch == "<":
            in_id = True
        elif in_id and ch == ">":
            in_id = False
        elif not in_id and ch == "(":
            depth += 1
            continue
        elif not in_id and ch == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            kept.append(ch)
    return "".join(kept)


def _message_id(fields: Fields) -> str | None:
    value = _first(fields, "message-id")
    if ids := _ids(value):
        return ids[0]
    bare = value.split()
    if bare and "@" in bare[0]:
        return _normalise_id(bare[0].strip("<>"))
    return None


def _synthetic_key(fields: Fields) -> str:
    # Only fields every copy shares: Received lines differ per mailbox, and
    # CRLF vs LF copies must get the same key.
    stable = "\n".join(
        _SPACES.sub(" ", _first(fields, name))
        for name in ("from", "to", "cc", "date", "subject", "in-reply-to", "references")
    )
    return f"<mw-sha1-{hashlib.sha1(stable.encode('utf-8')).hexdigest()}@mailwatch.invalid>"


def _references(value: str, key: str) -> tuple[str, ...]:
    ids = [i for i in _ids(value) if i != key]
    if len(ids) > MAX_REFERENCES:
        # RFC 5322 3.6.4: keep the root (first) and the closest ancestors (last).
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return tuple(ids)


def _thread_index(value: str) -> str | None:
    """The 16-byte conversation GUID of an Outlook Thread-Index (MS-OXOMSG 2.2.1.3)."""
    compact = "".join(value.split())
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return None
    return data[6:22].hex() if len(data) >= 22 else None


# ---------------------------------------------------------------- times


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # -0000, unknown zone names, no zone: read as UTC
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _received_time(fields: Fields) -> datetime | None:
    """The time of the top-most Received header (the last hop, our own server)."""
    received = fields.get_all("received")
    if not received:
        return None
    top = _unfold(received[0])
    _, semicolon, stamp = top.rpartition(";")
    return _parse_date(stamp) if semicolon else None


# ---------------------------------------------------------------- body


def courtesy_of(raw_headers: bytes, body_prefix: bytes) -> bool:
    """Does this message's text only thank or acknowledge? (read from its first bytes)"""
    return looks_like_courtesy(_body_text(header_block(raw_headers), body_prefix))


def _body_text(head: bytes, body_prefix: bytes) -> str:
    """The first text part of a (possibly truncated) body, decoded to plain text."""
    return first_text(head + body_prefix[:BODY_PREFIX_BYTES])
