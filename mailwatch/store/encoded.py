"""The columns of a message's row that cost CPU to encode: its header block compressed and
its lists as JSON. A long first sync has the parsing process encode them beside the parse
(the polling process, which stores, is the busier of the two: docs/benchmarks.md, step
12); they are encoded when stored otherwise. Imports neither the database nor SQLAlchemy,
so that process starts light."""

from __future__ import annotations

import json
import zlib
from typing import Any, NamedTuple

from mailwatch.core.model import Message


class Encoded(NamedTuple):
    """A message's encoded columns, as the driver takes them."""

    raw_headers: bytes  # zlib-compressed
    to: str
    cc: str
    bcc: str
    in_reply_to: str
    references: str
    headers: str


def encoded(message: Message, raw_headers: bytes) -> Encoded:
    return Encoded(
        zlib.compress(raw_headers),
        json_text(message.to),
        json_text(message.cc),
        json_text(message.bcc),
        json_text(message.in_reply_to),
        json_text(message.references),
        json_text(message.headers),
    )


def json_text(value: Any) -> str:
    """A JSON column's value as its column type encodes it (`json_strings` reads it); a
    tuple as a list."""
    # most messages have no Cc, no Bcc, and a first one no references
    return "[]" if value == [] or value == () else json.dumps(value)
