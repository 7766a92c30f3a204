"""The header splitter and the first-text walker against the standard library they replace:
on every message of the tricky corpus (../shared/corpus/tricky: broken, hostile and odd mail
from the test suites of a dozen mail parsers) they give the stdlib's fields, and the same
"thanks!"-only decision."""

from __future__ import annotations

import re
from email import policy
from email.message import Message as EmailMessage
from email.parser import BytesParser, Parser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.adapters.files import ImportedItem, read_path
from mailwatch.adapters.headers import header_length, header_lines, split_fields
from mailwatch.adapters.mime import first_text
from mailwatch.adapters.parse import BODY_PREFIX_BYTES, HEADER_FIELDS, header_block
from mailwatch.core.automated import looks_like_courtesy

TRICKY = Path(__file__).parents[3] / "shared" / "corpus" / "tricky"
WANTED = frozenset(HEADER_FIELDS)
_TAG = re.compile(r"<[^>]*>")


@pytest.fixture(scope="module")
def tricky_mail() -> list[ImportedItem]:
    if not TRICKY.is_dir():
        pytest.fail(f"the mail corpus is missing: {TRICKY} (../shared/corpus beside the checkout)")
    return [item for item in read_path(TRICKY) if isinstance(item, ImportedItem)]


def stdlib_text(message: bytes) -> str:
    """What mailwatch read before the walker: the stdlib's whole MIME tree."""
    html = None
    for part in BytesParser(policy=policy.compat32).parsebytes(message).walk():
        if part.is_multipart():
            continue
        if part.get_content_type() == "text/plain":
            return stdlib_part_text(part)
        if part.get_content_type() == "text/html" and html is None:
            html = _TAG.sub(" ", stdlib_part_text(part))
    return html or ""


def stdlib_part_text(part: EmailMessage) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def test_the_splitter_gives_the_stdlib_fields_on_every_message_of_the_tricky_corpus(tricky_mail):
    assert len(tricky_mail) > 1000
    differ = []
    for item in tricky_mail:
        text = header_block(item.raw).decode("utf-8", "replace")
        stdlib = Parser(policy=policy.compat32).parsestr(text, headersonly=True)
        fields = split_fields(text, WANTED.__contains__)
        wanted = [(name, value) for name, value in stdlib.items() if name.lower() in WANTED]
        if fields.items != wanted or fields.seen_any != bool(stdlib.keys()):
            differ.append(item.location)
    assert differ == []


def test_the_walker_decides_thanks_only_as_the_stdlib_on_every_message_of_the_tricky_corpus(
    tricky_mail,
):
    differ = []
    for item in tricky_mail:
        head = header_block(item.raw)
        message = head + item.raw[len(head) : len(head) + BODY_PREFIX_BYTES]
        if looks_like_courtesy(first_text(message)) != looks_like_courtesy(stdlib_text(message)):
            differ.append(item.location)
    assert differ == []


def test_a_field_broken_in_the_middle_costs_that_field_only():
    text = "From: jane@acme.example\r\n: no name\r\n continued\r\nSubject: Hello\r\n\r\nbody"
    fields = split_fields(text, {"from", "subject"}.__contains__)
    assert fields.items == [("From", "jane@acme.example"), ("Subject", "Hello")]


def test_continuations_of_fields_not_read_are_skipped_with_them():
    text = "Received: from a\r\n\tby b\r\nSubject: Hi\r\n there\r\n\r\n"
    fields = split_fields(text, {"subject"}.__contains__)
    assert (fields.items, fields.seen_any) == ([("Subject", "Hi\r\n there")], True)


# Lines as broken mail has them: fields, continuations, From_ lines, nameless or
# non-ASCII names, bare CRs inside values, the three line ends, a block cut mid-line.
_NAMES = st.sampled_from(["Subject", "From", "to", "X-Mailer", "From ", " ", "\t", "", "A B", "Ré"])
_LINES = st.tuples(
    _NAMES,
    st.sampled_from([":", ": ", ":\t", " :", ""]),
    st.text(alphabet=" \t:aé\r", max_size=6),
    st.sampled_from(["\n", "\r\n", "\r", ""]),
)


# Lines as most mail has them (a field, or its continuation), now and then a broken one:
# most such blocks take the shortcut, a broken line sends one the long way.
_FIELD_LINE = st.tuples(
    st.sampled_from(["Subject", "From", "to", "X-Mailer"]),
    st.sampled_from([":", ": "]),
    st.text(alphabet=" \t:aé", max_size=6),
    st.sampled_from(["\n", "\r\n"]),
)
_CONTINUATION = st.tuples(
    st.sampled_from([" ", "\t"]), st.just(""), st.text(alphabet=" :a", max_size=4), st.just("\r\n")
)
_COMMON_LINES = st.one_of(_FIELD_LINE, _FIELD_LINE, _FIELD_LINE, _CONTINUATION, _LINES)
_BLOCKS = st.one_of(
    st.lists(_LINES, max_size=8),
    st.tuples(_FIELD_LINE, st.lists(_COMMON_LINES, max_size=7)).map(lambda b: [b[0], *b[1]]),
)


@settings(max_examples=400, deadline=None)
@given(_BLOCKS, st.sampled_from(["", "\n", "\r\n", "\nbody\n"]))
def test_the_splitter_gives_the_stdlib_fields_whatever_the_lines(lines, after):
    # the common block takes a shortcut (two regular expressions), any other goes line by
    # line: both must give what the stdlib gives
    text = "".join(name + colon + value + end for name, colon, value, end in lines) + after
    stdlib = Parser(policy=policy.compat32).parsestr(text, headersonly=True)
    fields = split_fields(text, WANTED.__contains__)
    wanted = [(name, value) for name, value in stdlib.items() if name.lower() in WANTED]
    assert (fields.items, fields.seen_any) == (wanted, bool(stdlib.keys()))


@settings(max_examples=400, deadline=None)
@given(_BLOCKS, st.sampled_from(["", "\n", "\r\n", "\r", "\nbody\n"]))
def test_the_header_length_is_that_of_the_lines_read_whatever_the_lines(lines, after):
    text = "".join(name + colon + value + end for name, colon, value, end in lines) + after
    assert header_length(text) == len("".join(header_lines(text)))


MULTIPART = (
    b"Content-Type: multipart/mixed; boundary*=us-ascii''outer\r\n\r\n"
    b"preamble\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b></p>\r\n"
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nVGhhbmtzLCBwZXJmZWN0IQ==\r\n--inner--\r\n"
    b"--outer--\r\n"
)


def test_the_first_plain_text_is_found_through_nested_parts_and_decoded():
    assert first_text(MULTIPART) == "Thanks, perfect!"


def test_html_alone_gives_its_text_without_tags_and_a_cut_base64_part_what_decodes():
    html = b"Content-Type: text/html\r\n\r\n<p>Thanks!</p>"
    cut = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nVGhhbmtz\r\nIQ==\r\nVGh"
    assert (first_text(html).strip(), first_text(cut)) == ("Thanks!", "Thanks!")
