"""The first text of a (possibly truncated) message body, without the stdlib's MIME tree.

A client's reply is read only to tell a "thanks!"-only message (`core.automated.
looks_like_courtesy`), from its first BODY_PREFIX_BYTES. The stdlib's parser builds the
whole tree of that prefix (compiling a regular expression per boundary); this walks the
parts in the same order as `email.message.Message.walk`, reading each part's header with
`headers.split_fields`, and decodes only the part it returns: the first text/plain part,
else the first text/html part with its tags removed, else nothing.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import urllib.parse

from mailwatch.adapters.headers import Fields, header_length, split_fields

_PART_FIELDS = frozenset({"content-type", "content-transfer-encoding"})
_TAG = re.compile(r"<[^>]*>")
_PARAMETER = r'(?:^|;)\s*{name}(\*)?\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))'
_BOUNDARY = re.compile(_PARAMETER.format(name="boundary"), re.IGNORECASE)
_CHARSET = re.compile(_PARAMETER.format(name="charset"), re.IGNORECASE)
_LINE_END = re.compile(r"\r\n|\r|\n")
# Nested MIME deeper than this is hostile: the rest is not read.
MAX_DEPTH = 20


def first_text(message: bytes) -> str:
    """The first text part of `message` (a header block and the start of its body)."""
    # Bytes as the stdlib reads them: each byte one character, so offsets stay aligned.
    text = message.decode("ascii", "surrogateescape")
    found: dict[str, str] = {}
    _walk(text, "text/plain", found, 0)
    return found.get("text/plain") or found.get("text/html") or ""


def _walk(entity: str, default_type: str, found: dict[str, str], depth: int) -> bool:
    """Look through one entity (header and body) in walk() order; True once text/plain
    is found (the search ends there)."""
    head, body = _split_entity(entity)
    fields = split_fields(head, _PART_FIELDS.__contains__)
    kind = content_type(fields, default_type)
    if kind.startswith("multipart/"):
        boundary = _parameter(_BOUNDARY, fields.get("content-type"))
        if boundary is None or depth >= MAX_DEPTH:
            return False
        inner = "message/rfc822" if kind == "multipart/digest" else "text/plain"
        return any(_walk(part, inner, found, depth + 1) for part in _parts(body, boundary))
    if kind == "message/rfc822" and depth < MAX_DEPTH:
        return _walk(body, "text/plain", found, depth + 1)
    if kind == "text/plain":
        found[kind] = _decoded(fields, body)
        return True
    if kind == "text/html" and kind not in found:
        found[kind] = _TAG.sub(" ", _decoded(fields, body))
    return False


def _split_entity(entity: str) -> tuple[str, str]:
    """Header and body, where the stdlib's parser splits them: at the first line that is
    neither a field nor a continuation; a blank line there is the separator."""
    length = header_length(entity)
    head, rest = entity[:length], entity[length:]
    separator = _LINE_END.match(rest)
    return head, rest[separator.end() :] if separator else rest


def content_type(fields: Fields, default: str) -> str:
    """As `email.message.Message.get_content_type`: a malformed value means text/plain."""
    value = fields.get("content-type")
    if value is None:
        return default
    kind = value.partition(";")[0].strip().lower()
    return kind if kind.count("/") == 1 else "text/plain"


def _parameter(pattern: re.Pattern[str], value: str | None) -> str | None:
    match = pattern.search(value or "")
    if match is None:
        return None
    extended, quoted, bare = match.groups()
    value = quoted if quoted is not None else bare
    if extended:  # RFC 2231: charset'language'percent-encoded
        value = urllib.parse.unquote(value.split("'", 2)[-1])
    return value.rstrip() or None


def _parts(body: str, boundary: str) -> list[str]:
    """The parts between `--boundary` lines (no preamble, no epilogue); the line break
    before a boundary line belongs to the boundary. A truncated body ends in a cut part."""
    delimiter = "--" + boundary
    parts: list[str] = []
    start: int | None = None  # where the part being read begins
    found = body.find(delimiter)
    while found >= 0:
        line_end = _LINE_END.search(body, found)
        after_end = line_end.start() if line_end else len(body)
        rest = body[found + len(delimiter) : after_end].rstrip(" \t")
        at_line_start = found == 0 or body[found - 1] in "\r\n"
        if at_line_start and rest in ("", "--"):
            if start is not None:
                before = found - 2 if body[found - 2 : found] == "\r\n" else found - 1
                parts.append(body[start : max(start, before)])
            if rest == "--":
                return parts
            start = line_end.end() if line_end else len(body)
        found = body.find(delimiter, found + len(delimiter))
    if start is not None:
        parts.append(body[start:])
    return parts


def _decoded(fields: Fields, body: str) -> str:
    data = body.encode("ascii", "surrogateescape")
    encoding = (fields.get("content-transfer-encoding") or "").lower()
    if encoding == "quoted-printable":
        data = quopri.decodestring(data)
    elif encoding == "base64":
        data = _base64(data)
    charset = (_parameter(_CHARSET, fields.get("content-type")) or "utf-8").lower()
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _base64(data: bytes) -> bytes:
    """Base64 cut at any point (the prefix ends mid-line): what decodes, decoded."""
    compact = b"".join(data.split())
    compact = compact[: len(compact) - len(compact) % 4]
    try:
        return base64.b64decode(compact)
    except (binascii.Error, ValueError):
        return b""
