"""A header block split into the fields mailwatch reads, as the standard library's parser
(`email`, compat32 policy) would split it, at a fraction of its cost.

The stdlib's feed parser spends most of a sync's parsing time on machinery mailwatch
does not use (defect objects, a line buffer fed line by line, every field kept and looked
up by a linear scan). This splitter follows the same rules line by line (see
`email.feedparser.FeedParser._parsegen` and `_parse_headers`, and
`email.policy.Compat32.header_source_parse`), keeps only the wanted fields, and so gives
the same values on broken mail too: one broken field costs that field only. The common
block (named fields, LF or CRLF, no bare CR) is read by regular expressions instead, to
the same result. `tests/adapters/test_headers.py` compares them with the stdlib on the
tricky corpus and on generated broken lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# The stdlib's line ends (email.feedparser.NLCRE_crack) and the lines that continue a
# header block (email.feedparser.headerRE): a field, a continuation, or an mbox From_ line.
_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
# The common block: fields with a name, each line ended by LF or CRLF (no bare CR),
# continuations starting with a space or a tab. Such a block (and the blank line after it)
# is split by regular expressions; any other goes line by line. Possessive: a hostile line
# of blanks costs one pass, not one per blank.
_SIMPLE_FIELD = r"([\041-\071\073-\176]++):[ \t]*+([^\r\n]*+\r?\n(?:[ \t][^\r\n]*+\r?\n)*+)"
_SIMPLE_FIELDS = re.compile(_SIMPLE_FIELD)
_SIMPLE_RUN = re.compile(f"(?:{_SIMPLE_FIELD})++")


class Fields:
    """The wanted fields of one header block, names compared case-insensitively."""

    __slots__ = ("_values", "items", "seen_any")

    def __init__(self, items: list[tuple[str, str]], seen_any: bool) -> None:
        self.items = items  # (name as written, value), in order of appearance
        self.seen_any = seen_any  # any field at all, wanted or not
        self._values: dict[str, list[str]] = {}
        for name, value in items:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        """The first value of field `name` (lower-case), or None."""
        values = self._values.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name, [])


def split_fields(text: str, wanted: Callable[[str], bool]) -> Fields:
    """The fields of `text` (a header block, possibly followed by a body) whose lower-cased
    name is `wanted`, with the values compat32 gives: unfolded only by joining the lines."""
    run = _SIMPLE_RUN.match(text)
    if run and text[run.end() :] in ("", "\n", "\r\n"):
        found = _SIMPLE_FIELDS.findall(text)
        fields = [(name, value.rstrip("\r\n")) for name, value in found if wanted(name.lower())]
        return Fields(fields, True)
    items: list[tuple[str, str]] = []
    seen_any = False
    lines = header_lines(text)
    name: str | None = None  # the field being read, None when it is not wanted
    value: list[str] = []
    current = False  # a field is being read (wanted or not): a continuation belongs to it
    for number, line in enumerate(lines):
        if line[0] in " \t":
            if current and name is not None:
                value.append(line)
            continue  # a continuation of a field not wanted, or of nothing
        if name is not None:
            items.append((name, "".join(value).rstrip("\r\n")))
        name, value, current = None, [], False
        if line.startswith("From "):
            if number == len(lines) - 1:
                break  # the first line of the body, in the stdlib's reading
            continue  # an mbox From_ line, or one misplaced: not a field
        colon = line.find(":")
        if colon == 0:
            continue  # no field name: the stdlib drops the line (and its continuations)
        seen_any, current = True, True
        if wanted(line[:colon].lower()):
            name, value = line[:colon], [line[colon + 1 :].lstrip(" \t")]
    if name is not None:
        items.append((name, "".join(value).rstrip("\r\n")))
    return Fields(items, seen_any)


def header_lines(text: str) -> list[str]:
    """The lines of the header block, with their line ends: up to the first line that is
    neither a field nor a continuation (the blank line, or the body's first line)."""
    pieces = _LINE_BREAK.split(text[: _header_end(text)])
    lines = []
    for index in range(0, len(pieces), 2):
        line = pieces[index] + (pieces[index + 1] if index + 1 < len(pieces) else "")
        if not line or not _HEADER_LINE.match(line):
            break
        lines.append(line)
    return lines


def header_length(text: str) -> int:
    """How long the header block `header_lines` reads is: a common block followed by a
    blank line (or nothing) is found by one regular expression."""
    run = _SIMPLE_RUN.match(text)
    if run and text[run.end() : run.end() + 1] in ("", "\r", "\n"):
        return run.end()
    return sum(map(len, header_lines(text)))


def _header_end(text: str) -> int:
    """Where the first blank line ends (no header block goes past it), else the end: only
    that much is split into lines. Plain `find`s are far faster here than a regular
    expression: LF LF, LF CRLF (so CRLF CRLF too), CR CR."""
    end = len(text)
    # each pair looked for only before the end found so far: a body is not read through
    for pair in ("\n\r\n", "\n\n", "\r\r"):
        if (at := text.find(pair, 0, end)) >= 0:
            end = at + len(pair)
    return end
