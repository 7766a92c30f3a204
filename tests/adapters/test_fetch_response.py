"""Our FETCH response parser against imapclient's `parse_fetch_response`, on the same imaplib
data: crafted responses (the common shape parsed on the fast path, everything else handed to
imapclient), generated ones (Hypothesis), and the sync's own FETCHes of hostile corpus mail
from a real Dovecot."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, ProtocolError
from imapclient.response_parser import parse_fetch_response

from mailwatch.adapters.fetch_response import Unrecognised, parse_common_shape, parse_fetch
from mailwatch.adapters.files import ImportedItem, read_path
from mailwatch.adapters.imap import (
    BODY_PREFIX_ITEM,
    BODY_PREFIX_KEY,
    HEADER_ITEM,
    HEADER_KEY,
    open_mailbox,
)
from tests.imap_helpers import hours_ago, mailbox_settings

TRICKY = Path(__file__).parents[3] / "shared" / "corpus" / "tricky"
SYNC_ITEMS = [HEADER_ITEM, "INTERNALDATE", "RFC822.SIZE", "FLAGS"]
SECTION = b"BODY[HEADER.FIELDS (MESSAGE-ID FROM SUBJECT)]"
HEADERS = b"Message-ID: <a@acme.example>\r\nFrom: Carol <carol@acme.example>\r\n\r\n"


def imapclients(data: list[Any]) -> dict[int, dict[bytes, Any]]:
    return dict(parse_fetch_response(data, normalise_times=False, uid_is_key=True))


def described(response: dict[int, dict[bytes, Any]]) -> dict[int, dict[bytes, Any]]:
    """The response with each datetime shown with its zone's offset, name and class: equal
    datetimes in other zones compare equal, and that must not hide a difference."""
    return {
        message: {
            name: (value, value.utcoffset(), value.tzname(), type(value.tzinfo))
            if isinstance(value, datetime)
            else (value, type(value))
            for name, value in items.items()
        }
        for message, items in response.items()
    }


def outcome(parse: Any, data: list[Any]) -> object:
    """What a parser makes of the data: the response described, or the error it raises."""
    try:
        return described(dict(parse(data)))
    except Exception as error:  # imapclient's own errors on what it cannot read either
        return repr(error)


def assert_fast_path_reads_it_as_imapclient(data: list[Any]) -> None:
    assert described(parse_common_shape(data)) == described(imapclients(data))
    assert described(parse_fetch(data)) == described(imapclients(data))


def header_response(seq: int, uid: int, literal: bytes = HEADERS, flags: bytes = b"") -> list[Any]:
    line = (
        f'{seq} (UID {uid} INTERNALDATE "01-Nov-2024 01:37:02 +0000" RFC822.SIZE 31126 '
        f"FLAGS ({flags.decode()}) {SECTION.decode()} {{{len(literal)}}}"
    ).encode()
    return [(line, literal), b")"]


# ---------------------------------------------------------------- crafted responses


def test_the_sync_s_common_shape_is_read_on_the_fast_path_as_imapclient_reads_it():
    data = [
        *header_response(1, 11, flags=b"\\Seen \\Recent"),
        *header_response(2, 12, flags=b"$Waived \\Seen $NoReplyNeeded \\Flagged"),
        *header_response(3, 15),
    ]

    assert_fast_path_reads_it_as_imapclient(data)
    assert parse_fetch(data)[12][b"FLAGS"] == (
        b"$Waived",
        b"\\Seen",
        b"$NoReplyNeeded",
        b"\\Flagged",
    )


def test_an_empty_header_block_is_read_as_imapclient_reads_it():
    data = [*header_response(1, 4, literal=b""), *header_response(2, 5, literal=b"\r\n")]

    assert_fast_path_reads_it_as_imapclient(data)
    assert parse_fetch(data)[4][SECTION] == b""


def test_a_literal_holding_parentheses_braces_and_line_breaks_is_kept_byte_for_byte():
    literal = b'Subject: (re: {12}) "quoted" ]\r\nX: {12}\r\n)\r\n\r\n'

    data = header_response(1, 3, literal=literal)

    assert_fast_path_reads_it_as_imapclient(data)
    assert parse_fetch(data)[3][SECTION] == literal


def test_items_in_another_order_and_two_literals_in_one_response_are_read_as_imapclient_reads_them():
    data = [
        (b"1 (BODY[TEXT]<0> {5}", b"Hi)\r\n"),
        (b" FLAGS (\\Seen) " + SECTION + b" {%d}" % len(HEADERS), HEADERS),
        b' RFC822.SIZE 0 UID 8 INTERNALDATE " 2-Feb-2020 23:59:59 -0800")',
        b"2 ()",
    ]

    assert_fast_path_reads_it_as_imapclient(data)
    assert set(parse_fetch(data)[8]) == {
        b"SEQ",
        b"BODY[TEXT]<0>",
        b"FLAGS",
        SECTION,
        b"RFC822.SIZE",
        b"INTERNALDATE",
    }


def test_the_body_prefix_fetch_is_read_as_imapclient_reads_it():
    data = [(b"4 (UID 21 BODY[TEXT]<0> {11}", b"Thanks!\r\n\xe9\xe9"), b")"]

    assert_fast_path_reads_it_as_imapclient(data)
    assert parse_fetch(data)[21][BODY_PREFIX_KEY] == b"Thanks!\r\n\xe9\xe9"


def test_an_unsolicited_flags_change_mid_batch_is_keyed_and_merged_as_imapclient_does():
    # Without a UID it is keyed by its sequence number; that number here is also a UID
    # asked for, and imapclient merges the two: so must we.
    data = [
        *header_response(1, 6),
        b"7 (FLAGS (\\Seen))",
        *header_response(2, 9),
        b"6 (FLAGS ($Waived))",
    ]

    assert_fast_path_reads_it_as_imapclient(data)
    assert parse_fetch(data)[7] == {b"SEQ": 7, b"FLAGS": (b"\\Seen",)}


@pytest.mark.parametrize(
    "date",
    [
        b"01-Nov-2024 01:37:02 +0000",
        b"01-Nov-2024 01:37:02 -0000",
        b" 1-Jan-2000 00:00:00 +0530",
        b"29-Feb-2024 23:59:59 -0800",
        b"31-Dec-1999 12:00:00 +1345",
        b"15-Jul-2026 08:30:00 -0930",
        b"15-Jul-2026 08:30:00 +0090",
    ],
)
def test_internal_dates_are_the_datetimes_imapclient_gives_with_its_zones(date):
    data = [b'3 (UID 5 INTERNALDATE "' + date + b'")']

    assert_fast_path_reads_it_as_imapclient(data)


def test_no_fetch_response_at_all_is_an_empty_result_as_imapclient_gives():
    assert parse_common_shape([None]) == imapclients([None]) == {}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([b"1 (UID 5 " + SECTION + b' "From: x")'], id="quoted string for a literal"),
        pytest.param([b"1 (UID 5 " + SECTION + b" NIL)"], id="NIL for a literal"),
        pytest.param([b"1 (UID 5 INTERNALDATE NIL)"], id="NIL for a date"),
        pytest.param(
            [b'1 (UID 5 X-GM-LABELS (\\Inbox "Client work") X-GM-THRID 17)'], id="Gmail items"
        ),
        pytest.param([b"1 (UID 5 MODSEQ (12) FLAGS ())"], id="MODSEQ"),
        pytest.param([b"1 (UID 5  FLAGS ())"], id="two spaces"),
        pytest.param([b"1 (uid 5 flags ())"], id="lower-case names"),
        pytest.param(
            [b"1 (UID 5 FLAGS (\\Seen 123 NIL))"], id="flags imapclient reads as int and None"
        ),
        pytest.param([b"1 (UID 5 RFC822.SIZE 0123)"], id="a size with a leading zero"),
        pytest.param(
            [b'1 (UID 5 INTERNALDATE "31-Feb-2024 10:00:00 +0000")'],
            id="a date that does not exist",
        ),
        pytest.param(
            [b'1 (UID 5 INTERNALDATE "01-nov-2024 10:00:00 +0000")'], id="a lower-case month"
        ),
        pytest.param(
            [b'1 (UID 5 INTERNALDATE "01-Nov-0024 10:00:00 +0000")'], id="a year of two digits"
        ),
        pytest.param(
            [b'1 (UID 5 INTERNALDATE "Fri, 01 Nov 2024 10:00:00 +0000")'], id="an RFC 5322 date"
        ),
        pytest.param(
            [(b"1 (UID 5 BODY[TEXT]<0> {3}", b"abc"), b") "], id="a space after the response"
        ),
        pytest.param([b"1 (UID 5 BODY[TEXT]<0> {3}"], id="a literal marker without its literal"),
    ],
)
def test_anything_the_fast_path_does_not_know_is_read_by_imapclient_for_the_whole_batch(data):
    batch = [*header_response(1, 2), *data]

    with pytest.raises(Unrecognised):
        parse_common_shape(batch)
    assert outcome(parse_fetch, batch) == outcome(imapclients, batch)


def test_a_number_too_long_for_python_to_read_raises_imapclient_s_protocol_error():
    batch = [*header_response(1, 2), b"2 (UID " + b"9" * 5000 + b" FLAGS ())"]

    with pytest.raises(ProtocolError):
        parse_fetch(batch)


def test_a_literal_of_the_wrong_length_raises_imapclient_s_protocol_error():
    batch = [*header_response(1, 2), (b"2 (UID 5 " + SECTION + b" {9}", b"short"), b")"]

    with pytest.raises(ProtocolError, match="Expecting literal of size 9, got 5"):
        parse_fetch(batch)


# ---------------------------------------------------------------- any response

COMMON_ITEM = st.one_of(
    st.tuples(st.sampled_from([b"UID", b"RFC822.SIZE"]), st.sampled_from([b"0", b"7", b"31126"])),
    st.tuples(
        st.just(b"INTERNALDATE"),
        st.builds(
            lambda when, zone: b'"' + when.strftime("%d-%b-%Y %H:%M:%S ").encode() + zone + b'"',
            st.datetimes(datetime(1000, 1, 1), datetime(2100, 1, 1)),
            st.sampled_from([b"+0000", b"-0000", b"+0530", b"-0800", b"+0090"]),
        ),
    ),
    st.tuples(
        st.just(b"FLAGS"),
        st.lists(st.sampled_from([b"\\Seen", b"$Waived", b"\\Recent", b"Junk"]), max_size=3).map(
            b" ".join
        ),
    ),
    st.tuples(st.sampled_from([SECTION, b"BODY[TEXT]<0>"]), st.binary(max_size=30)),
)
ODD_ITEM = st.one_of(
    st.tuples(st.just(b"RFC822.SIZE"), st.just(b"042")),
    st.tuples(
        st.just(b"INTERNALDATE"),
        st.sampled_from([b'"31-Feb-2024 10:00:00 +0000"', b'" 1-nov-2024 01:02:03 +0100"', b"NIL"]),
    ),
    st.tuples(
        st.just(b"FLAGS"),
        st.lists(st.text(alphabet='aZ09\\$%*]{}["', min_size=1, max_size=4), max_size=3).map(
            lambda words: " ".join(words).encode()
        ),
    ),
    st.tuples(
        st.sampled_from([SECTION, b"X-GM-THRID", b"MODSEQ"]), st.sampled_from([b"NIL", b"(5)"])
    ),
)
MESSAGES = st.lists(
    st.one_of(
        st.tuples(st.lists(COMMON_ITEM, max_size=6), st.just(b" ")),
        st.tuples(
            st.lists(st.one_of(COMMON_ITEM, ODD_ITEM), max_size=6), st.sampled_from([b" ", b"  "])
        ),
    ),
    min_size=1,
    max_size=4,
)


def records(seq: int, items: list[tuple[bytes, bytes]], separator: bytes) -> list[Any]:
    """One FETCH response as imaplib hands it over: a (line, literal) pair per literal."""
    out: list[Any] = []
    line = b"%d (" % seq
    for number, (name, value) in enumerate(items):
        line += (separator if number else b"") + name + b" "
        if name.startswith(b"BODY[") and value not in (b"NIL", b"(5)"):
            out.append((line + b"{%d}" % len(value), value))
            line = b""
        else:
            line += b"(" + value + b")" if name == b"FLAGS" else value
    return [*out, line + b")"]


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_whatever_the_response_our_parser_gives_what_imapclient_gives(messages):
    data = [
        record
        for seq, (items, separator) in enumerate(messages, start=1)
        for record in records(seq, items, separator)
    ]

    assert outcome(parse_fetch, data) == outcome(imapclients, data)


# ---------------------------------------------------------------- a real Dovecot


@pytest.fixture(scope="module")
def tricky_mail() -> list[ImportedItem]:
    if not TRICKY.is_dir():
        pytest.fail(f"the mail corpus is missing: {TRICKY} (../shared/corpus beside the checkout)")
    return [item for item in read_path(TRICKY) if isinstance(item, ImportedItem)]


def raw_fetch(client: IMAPClient, uids: list[int], items: list[str]) -> list[Any]:
    """The FETCH response as imaplib hands it over, before any parsing."""
    imap = client._imap
    tag = imap._command("UID", "FETCH", ",".join(map(str, uids)), f"({' '.join(items).upper()})")
    typ, data = imap._command_complete("FETCH", tag)
    assert typ == "OK"
    return imap._untagged_response(typ, data, "FETCH")[1]


FLAGS = [(), ("\\Seen",), ("$Waived", "\\Flagged"), ("$NoReplyNeeded", "\\Seen", "\\Answered")]


@pytest.mark.dovecot
def test_the_sync_s_fetches_of_hostile_corpus_mail_give_what_imapclient_s_fetch_gives(
    dovecot, tmp_path, tricky_mail
):
    user = dovecot.new_user("alice")
    with dovecot.client(user) as client:
        for number, item in enumerate(tricky_mail):
            client.append("INBOX", item.raw, FLAGS[number % len(FLAGS)], hours_ago(number))
        client.append("INBOX", b"X-Nothing: asked for\r\n\r\n", (), hours_ago(1))  # empty body
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        expected = client.fetch(uids, SYNC_ITEMS)
        expected_prefixes = client.fetch(uids, [BODY_PREFIX_ITEM])
        raw = [raw_fetch(client, uids[i : i + 200], SYNC_ITEMS) for i in range(0, len(uids), 200)]
        raw_prefixes = raw_fetch(client, uids, [BODY_PREFIX_ITEM])

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [folder for folder in mailbox.folders(None) if folder.name == "INBOX"]
        with mailbox.examine(inbox) as opened:
            fetched = [m for batch in opened.new_messages(None, None, 200) for m in batch.messages]
            prefixes = opened.body_prefixes(uids)

    assert len(uids) > 1000
    # Dovecot's responses take the fast path, and it reads them as imapclient does.
    fast = {uid: items for data in raw for uid, items in parse_common_shape(data).items()}
    assert described(fast) == described(expected)
    assert described(parse_common_shape(raw_prefixes)) == described(expected_prefixes)
    # What the sync makes of them is what it made of imapclient's fetch.
    assert [(m.uid, m.raw_headers, m.internal_date, m.size, m.flags) for m in fetched] == [
        (
            uid,
            data[HEADER_KEY],
            data[b"INTERNALDATE"],
            data[b"RFC822.SIZE"],
            tuple(flag.decode() for flag in data[b"FLAGS"]),
        )
        for uid, data in sorted(expected.items())
    ]
    assert prefixes == {uid: data[BODY_PREFIX_KEY] for uid, data in expected_prefixes.items()}


@pytest.mark.dovecot
def test_a_fetch_the_server_refuses_raises_what_imapclient_s_fetch_raises(dovecot, tmp_path):
    user = dovecot.new_user("alice")
    dovecot.append(user, "INBOX", b"From: carol@acme.example\r\n\r\nHi\r\n", hours_ago(1))
    refused = ["BODY.PEEK[NO-SUCH-SECTION]"]
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        with pytest.raises(IMAPClientError) as by_imapclient:
            client.fetch([1], refused)

    with open_mailbox(mailbox_settings(dovecot, user, tmp_path)) as mailbox:
        (inbox,) = [folder for folder in mailbox.folders(None) if folder.name == "INBOX"]
        with mailbox.examine(inbox) as opened, pytest.raises(IMAPClientError) as by_us:
            opened._uid_fetch([1], refused)

    assert type(by_us.value) is type(by_imapclient.value)
    assert str(by_us.value) == str(by_imapclient.value)
