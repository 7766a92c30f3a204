"""imaplib's untagged FETCH data, parsed into exactly what imapclient's
`parse_fetch_response(data, normalise_times=False, uid_is_key=True)` returns.

imapclient's lexer reads a response one character at a time, the ~450-character echoed
`BODY[HEADER.FIELDS (...)]` of every message included: most of a header fetch's time. This
parser matches whole items with regular expressions instead, for the items the sync asks:
UID, INTERNALDATE, RFC822.SIZE, FLAGS and `BODY[...]` sections sent as literals. Anything
else (another item, NIL, a quoted section, odd spacing, a date it cannot read exactly as
imapclient reads it) hands the whole batch to imapclient: correctness first, the fast path
for the common shape.

imaplib gives a FETCH response as records: a message without literals is one line
(b'7 (FLAGS (\\Seen))'); one with literals is a (line up to "{n}", literal) tuple per
literal, then the rest of the line (b')' or b' FLAGS (...))').
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

from imapclient.fixed_offset import FixedOffset
from imapclient.response_parser import parse_fetch_response

# A message's items by name, as imapclient gives them: {b"SEQ": 3, b"FLAGS": (b"\\Seen",), ...}.
FetchItems = dict[bytes, Any]
Record = bytes | tuple[bytes, bytes] | None

MESSAGE_START = re.compile(rb"([0-9]+) \(")
# A flag as imapclient's lexer reads it as one token, kept conservative: no character its
# lexer treats specially, nothing it would turn into an int, NIL or a literal.
FLAG = rb"\\?[^\x00-\x20()%\"\[\]{}\\\x7f-\xff]+"
ITEM = re.compile(
    rb"UID (?P<uid>[0-9]+)"
    # imapclient keeps "0123" as bytes, not an int: leave that to it.
    rb"|RFC822\.SIZE (?P<size>0|[1-9][0-9]*)"
    rb'|INTERNALDATE "(?P<date>[^"\\]*)"'
    rb"|FLAGS \((?P<flags>(?:" + FLAG + rb"(?: " + FLAG + rb")*)?)\)"
    # A section's literal always ends imaplib's record.
    rb"|(?P<section>BODY\[[^\]]*\](?:<[0-9]+>)?) \{(?P<length>[0-9]+)\}\Z"
)
# RFC 3501's date-time, read the way email.utils.parsedate_tz (imapclient's parser) reads it;
# years before 1000 it would read as two-digit years, so they are left to it.
MONTHS = {
    month.encode(): number
    for number, month in enumerate(
        "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1
    )
}
INTERNALDATE = re.compile(
    rb"( [1-9]|[0-9]{2})-(" + b"|".join(MONTHS) + rb")-([1-9][0-9]{3}) "
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-][0-9]{4})\Z"
)


class Unrecognised(Exception):
    """A response the fast path does not fully recognise: imapclient parses the batch."""


def parse_fetch(data: list[Record]) -> dict[int, FetchItems]:
    """Messages by UID (by sequence number for an unsolicited response without UID), each
    with its items and b"SEQ", as imapclient parses them; several responses for one
    message are merged, as imapclient merges them."""
    try:
        return parse_common_shape(data)
    except (Unrecognised, ValueError):  # ValueError: a number past int()'s 4,300 digits
        return dict(parse_fetch_response(data, normalise_times=False, uid_is_key=True))


def parse_common_shape(data: list[Record]) -> dict[int, FetchItems]:
    """`parse_fetch`'s fast path: raises Unrecognised on anything but the common shape."""
    if data == [None]:  # imaplib's "no FETCH response at all"
        return {}
    parsed: dict[int, FetchItems] = {}
    records = iter(data)
    for record in records:
        with_literals: list[tuple[bytes, bytes]] = []
        while isinstance(record, tuple):
            with_literals.append(record)
            record = next(records, None)
        if not isinstance(record, bytes):
            raise Unrecognised
        message_id, items = parse_message([*with_literals, (record, None)])
        parsed.setdefault(message_id, {}).update(items)
    return parsed


def parse_message(lines: list[tuple[bytes, bytes | None]]) -> tuple[int, FetchItems]:
    """One FETCH response: its lines each with the literal that ends it (None on the last)."""
    start = MESSAGE_START.match(lines[0][0])
    if start is None:
        raise Unrecognised
    message_id = int(start[1])
    items: FetchItems = {b"SEQ": message_id}
    position, first = start.end(), True
    for line, literal in lines:
        while not (literal is None and closes(line, position)):
            if not first:
                if line[position : position + 1] != b" ":
                    raise Unrecognised
                position += 1
            item = ITEM.match(line, position)
            if item is None:
                raise Unrecognised
            position, first = item.end(), False
            if item.lastgroup == "uid":
                message_id = int(item["uid"])
            elif item.lastgroup == "length":
                items[section_key(item["section"])] = section_value(item, literal)
                break  # its literal ends the line; the response goes on in the next
            else:
                name, value = item_value(item)
                items[name] = value
        position = 0
    return message_id, items


def closes(line: bytes, position: int) -> bool:
    """Whether all that is left of the response's last line is its closing parenthesis."""
    return position == len(line) - 1 and line.endswith(b")")


def item_value(item: re.Match[bytes]) -> tuple[bytes, Any]:
    if item.lastgroup == "size":
        return b"RFC822.SIZE", int(item["size"])
    if item.lastgroup == "date":
        return b"INTERNALDATE", internal_date(item["date"])
    return b"FLAGS", flags(item["flags"])


@functools.lru_cache(maxsize=16)
def section_key(section: bytes) -> bytes:
    # imapclient upper-cases item names; cached, as every message echoes the same long one.
    return section.upper()


def section_value(item: re.Match[bytes], literal: bytes | None) -> bytes:
    if literal is None or len(literal) != int(item["length"]):
        raise Unrecognised  # imapclient raises ProtocolError on a literal of another length
    return literal


def flags(listed: bytes) -> tuple[bytes, ...]:
    if not listed:
        return ()
    found = tuple(listed.split(b" "))
    if any(flag == b"NIL" or flag.isdigit() for flag in found):
        raise Unrecognised  # imapclient reads those as None and as an int
    return found


def internal_date(text: bytes) -> datetime:
    """An aware datetime equal to imapclient's, its zone imapclient's FixedOffset too."""
    parts = INTERNALDATE.match(text)
    if parts is None:
        raise Unrecognised
    day, month, year, hour, minute, second, zone = parts.groups()
    try:
        return datetime(
            int(year),
            MONTHS[month],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=fixed_offset(zone),
        )
    except ValueError:
        raise Unrecognised from None  # imapclient gives None for a date that does not exist


@functools.lru_cache(maxsize=256)
def fixed_offset(zone: bytes) -> FixedOffset:
    # parsedate_tz's arithmetic: "+0590" is 5 h 90 min, "-0000" is UTC.
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    seconds = (hours * 3600 + minutes * 60) * (-1 if zone[:1] == b"-" else 1)
    return FixedOffset(seconds / 60)
