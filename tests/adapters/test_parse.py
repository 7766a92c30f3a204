"""Raw bytes -> core Message: ids, addresses, subjects, times, rule headers, courtesy."""

from __future__ import annotations

import base64
import re
import time
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.adapters.parse import (
    HEADER_CAP,
    HEADER_FIELDS,
    UnparsableMessage,
    body_prefix_of,
    header_block,
    parse_message,
)

PLAIN = (
    b"Received: from mx.rouge.example by imap.rouge.example; Tue, 4 Mar 2025 10:00:05 +0000\r\n"
    b"Received: from mail.acme.example by mx.rouge.example; Tue, 4 Mar 2025 09:59:59 +0000\r\n"
    b"Message-ID: <CAF123@Mail.Acme.Example>\r\n"
    b"Date: Tue, 4 Mar 2025 10:59:58 +0100\r\n"
    b'From: "Jane Doe" <Jane@Acme.Example>\r\n'
    b"To: Bob <bob@rouge.example>, alice@rouge.example\r\n"
    b"Cc: undisclosed-recipients:;\r\n"
    b"Subject: Homepage banner\r\n"
    b"\r\n"
    b"Could you fix the banner?\r\n"
)


def mail(*header_lines: str, body: str = "Hello") -> bytes:
    return ("\r\n".join(header_lines) + "\r\n\r\n" + body).encode("utf-8")


def test_a_plain_message_becomes_a_core_message() -> None:
    message = parse_message(PLAIN)
    assert message.key == "<CAF123@mail.acme.example>"
    assert message.from_addr == "jane@acme.example"
    assert message.from_name == "Jane Doe"
    assert message.to == ("bob@rouge.example", "alice@rouge.example")
    assert message.cc == ()
    assert message.subject == "Homepage banner"
    assert message.date == datetime(2025, 3, 4, 9, 59, 58, tzinfo=UTC)
    assert message.received_time == datetime(2025, 3, 4, 10, 0, 5, tzinfo=UTC)
    assert message.copies == ()
    assert message.courtesy is False


def test_header_block_ends_at_the_first_blank_line_whatever_the_line_endings() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == b"A: 1\r\nB: 2\r\n\r\n"
    assert header_block(b"A: 1\nB: 2\n\nbody") == b"A: 1\nB: 2\n\n"
    assert header_block(b"A: 1\rB: 2\r\rbody") == b"A: 1\rB: 2\r\r"
    assert header_block(b"A: 1\r\nB: 2\r\n") == b"A: 1\r\nB: 2\r\n"  # header-only fetch


def test_a_cr_only_message_parses() -> None:
    message = parse_message(PLAIN.replace(b"\r\n", b"\r"))
    assert message.key == "<CAF123@mail.acme.example>"
    assert message.subject == "Homepage banner"
    assert message.to == ("bob@rouge.example", "alice@rouge.example")


def test_a_1_mb_header_is_capped_and_parses_quickly() -> None:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"x" * 200) for i in range(5000))
    raw = b"Message-ID: <big@acme.example>\r\nSubject: big\r\n" + filler + b"\r\nbody"
    assert len(raw) > 1_000_000
    started = time.perf_counter()
    message = parse_message(raw)
    assert time.perf_counter() - started < 2
    assert len(header_block(raw)) <= HEADER_CAP
    assert header_block(raw).endswith(b"\r\n")
    assert message.key == "<big@acme.example>"
    assert message.subject == "big"


def test_ten_thousand_recipients_parse_quickly() -> None:
    to = ", ".join(f'"User {i}" <user{i}@acme.example>' for i in range(10_000))
    started = time.perf_counter()
    message = parse_message(mail("Message-ID: <a@b.example>", f"To: {to}"))
    assert time.perf_counter() - started < 2
    assert len(message.to) == 10_000
    assert message.to[-1] == "user9999@acme.example"


def test_a_missing_message_id_gets_a_stable_synthetic_key() -> None:
    lines = ("From: jane@acme.example", "Date: Tue, 4 Mar 2025 10:00:00 +0000", "Subject: Hi")
    first = parse_message(mail("Received: from a by b; Tue, 4 Mar 2025 10:00:01 +0000", *lines))
    second = parse_message(mail("Received: from c by d; Tue, 4 Mar 2025 10:00:09 +0000", *lines))
    third = parse_message(mail(*lines).replace(b"\r\n", b"\n"))
    other = parse_message(mail(*lines[:2], "Subject: Another"))
    assert first.key.startswith("<mw-sha1-") and first.key.endswith("@mailwatch.invalid>")
    assert len(first.key) == len("<mw-sha1-@mailwatch.invalid>") + 40
    assert first.key == second.key == third.key
    assert other.key != first.key


def test_a_missing_or_garbage_date_is_none() -> None:
    assert parse_message(mail("Subject: x")).date is None
    assert parse_message(mail("Subject: x", "Date: next Tuesday-ish")).date is None
    assert parse_message(mail("Subject: x", "Date: Tue, 4 Mar 99999 10:00:00 +0000")).date is None
    assert parse_message(mail("Subject: x", "Date: Tue, 4 Mar 2025 10:00:00 +9900")).date is None


def test_a_date_without_a_zone_is_read_as_utc() -> None:
    for date in ("Tue, 4 Mar 2025 10:00:00 -0000", "Tue, 4 Mar 2025 10:00:00 CEST"):
        parsed = parse_message(mail(f"Date: {date}")).date
        assert parsed == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def test_the_received_time_is_the_top_most_received_header_after_its_last_semicolon() -> None:
    raw = mail(
        "Received: from x (helo; odd) by y; Tue, 4 Mar 2025 10:00:05 +0100",
        "Received: from z by x; Mon, 3 Mar 2025 10:00:00 +0000",
    )
    assert parse_message(raw).received_time == datetime(2025, 3, 4, 9, 0, 5, tzinfo=UTC)
    assert parse_message(mail("Received: from x by y")).received_time is None


def test_message_ids_are_extracted_from_the_raw_value() -> None:
    raw = mail(
        "Message-ID: <a b@Acme.Example>",
        "In-Reply-To: <parent@Acme.Example> (Jane's message of Tue, <jane@acme.example>)",
        "References: <root@x.example>\r\n <Parent@ACME.example> <a b@acme.example> garbage",
    )
    message = parse_message(raw)
    assert message.key == "<ab@acme.example>"
    assert message.in_reply_to == ("<parent@acme.example>",)
    assert message.references == ("<root@x.example>", "<Parent@acme.example>")


def test_a_message_id_without_angle_brackets_is_still_the_key() -> None:
    assert parse_message(mail("Message-ID: id-77@Acme.Example")).key == "<id-77@acme.example>"


def test_references_are_capped_keeping_the_root_and_the_latest() -> None:
    refs = " ".join(f"<r{i}@x.example>" for i in range(300))
    message = parse_message(
        mail("Message-ID: <me@x.example>", f"References: {refs} <me@x.example>")
    )
    assert len(message.references) == 100
    assert message.references[0] == "<r0@x.example>"
    assert message.references[-1] == "<r299@x.example>"
    assert "<me@x.example>" not in message.references


def test_encoded_words_are_decoded_and_abuse_does_not_crash() -> None:
    raw = mail(
        "Subject: =?utf-8?Q?Angebot_f=C3=BCr?= =?iso-8859-1?B?UTI=?= =?x-unknown?Q?caf=E9?=",
        "From: =?iso-8859-1?Q?M=FCller=2C_J=FCrgen?= <jm@acme.example>",
        "To: =?utf-8?B?!!!not-base64?= <a@acme.example>, =?utf-8?Q?=ZZ?= <b@acme.example>",
    )
    message = parse_message(raw)
    assert message.subject == "Angebot fürQ2caf\ufffd"  # no space between encoded words
    assert message.from_name == "Müller, Jürgen"
    assert message.from_addr == "jm@acme.example"
    assert message.to == ("a@acme.example", "b@acme.example")


def test_raw_8bit_headers_are_read_as_utf8_with_replacement() -> None:
    raw = b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xf6ln\r\nFrom: J\xfcrgen <j@acme.example>\r\n\r\n"
    message = parse_message(raw)
    assert message.subject == "Grüße aus K\ufffdln"
    assert message.from_addr == "j@acme.example"


def test_control_characters_and_line_breaks_leave_the_subject() -> None:
    raw = mail("Subject: =?utf-8?Q?a=0D=0Ab=07c?=\r\n\tfolded\there")
    assert parse_message(raw).subject == "a bc folded here"


def test_garbage_addresses_are_dropped_without_an_exception() -> None:
    raw = mail(
        "From: <<<>>>",
        "To: not an address, @nolocal.example, nodomain@, ok@Acme.Example, ok@acme.example",
        "Cc: ;;;;;;;;;; <@@@>",
        "Bcc: Bob <bob@rouge.example>",
        "Sender: shared@rouge.example",
    )
    message = parse_message(raw)
    assert message.from_addr is None
    assert message.to == ("ok@acme.example",)
    assert message.cc == ()
    assert message.bcc == ("bob@rouge.example",)
    assert message.sender_addr == "shared@rouge.example"


def test_the_outlook_thread_index_gives_its_conversation_guid() -> None:
    guid = bytes(range(16))
    index = base64.b64encode(b"\x01" + b"\x02" * 5 + guid + b"\x03" * 5).decode()
    assert parse_message(mail(f"Thread-Index: {index}")).thread_index == guid.hex()
    assert parse_message(mail("Thread-Index: short")).thread_index is None
    assert parse_message(mail("Thread-Index: ***")).thread_index is None
    assert parse_message(mail("Subject: x")).thread_index is None


def test_only_the_fields_the_rules_read_are_kept_decoded_and_capped() -> None:
    raw = mail(
        "Auto-Submitted: auto-replied",
        "X-Spam-Score: 12",
        "List-Id: =?utf-8?Q?Acme_N=C3=BCws?= <news.acme.example>",
        "X-CampaignID: 42",
        "X-Auto-Response-Suppress: All",
        "Content-Type: multipart/report;\r\n report-type=delivery-status; boundary=x",
        "Precedence: " + "b" * 5000,
        "Precedence: bulk",
    )
    headers = parse_message(raw).headers
    assert [name for name, _ in headers] == [
        "auto-submitted",
        "list-id",
        "x-campaignid",
        "x-auto-response-suppress",
        "content-type",
        "precedence",
        "precedence",
    ]
    assert dict(headers)["list-id"] == "Acme Nüws <news.acme.example>"
    assert dict(headers)["content-type"] == (
        "multipart/report; report-type=delivery-status; boundary=x"
    )
    assert len(headers[5][1]) == 1000


def test_header_fields_cover_every_field_the_parser_reads() -> None:
    fields = set(HEADER_FIELDS)
    needed = {"message-id", "in-reply-to", "references", "date", "received", "from", "sender"}
    needed |= {"to", "cc", "bcc", "subject", "thread-index", "content-type", "auto-submitted"}
    needed |= {"list-id", "list-unsubscribe", "precedence", "return-path", "x-mailwatch"}
    needed |= {"content-transfer-encoding", "feedback-id", "x-autoreply", "importance"}
    assert needed <= fields
    assert all(name == name.lower() and " " not in name for name in HEADER_FIELDS)


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02\xff" * 100, b"   \r\n\r\n", b"\r\n\r\nbody"])
def test_input_without_any_header_is_unparsable(raw: bytes) -> None:
    with pytest.raises(UnparsableMessage):
        parse_message(raw)


def test_a_header_only_fetch_with_a_body_prefix_decides_courtesy() -> None:
    head = mail("Subject: Re: banner", "Content-Type: text/plain; charset=utf-8", body="")
    assert parse_message(head, body_prefix=b"Thanks, perfect!\r\n\r\n> old text").courtesy
    assert not parse_message(head, body_prefix=b"Thanks, but when?").courtesy
    assert not parse_message(head).courtesy


def test_courtesy_is_found_in_the_first_text_part_of_nested_mime() -> None:
    thanks = base64.b64encode(b"Vielen Dank, passt!\r\n").decode()
    raw = mail(
        "Subject: Re: banner",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="outer"',
        body=(
            "--outer\r\n"
            'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
            "--inner\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            f"{thanks}\r\n"
            "--inner\r\n"
            "Content-Type: text/html\r\n\r\n<p>Vielen Dank, passt!</p>\r\n"
            "--inner--\r\n"
            "--outer\r\n"
            "Content-Type: application/pdf\r\n\r\nJVBERi0xLjQK\r\n"
            "--outer--\r\n"
        ),
    )
    assert parse_message(raw, body_prefix=body_prefix_of(raw)).courtesy


def test_an_html_only_body_is_read_without_its_tags() -> None:
    raw = mail("Content-Type: text/html; charset=utf-8", body="<div><b>Merci</b> !</div>")
    assert parse_message(raw, body_prefix=body_prefix_of(raw)).courtesy


def test_a_truncated_body_prefix_still_parses() -> None:
    raw = mail("Content-Type: multipart/mixed; boundary=b", body="--b\r\nContent-Type: text/pl")
    assert parse_message(raw, body_prefix=body_prefix_of(raw)).courtesy is False


@pytest.mark.parametrize(
    ("junk", "kept"),
    [
        (b";" * 900_000, ("ok@acme.example",)),
        (b"<<<>>>" * 150_000, ("ok@acme.example",)),
        (b"<" * 900_000, ()),  # an unclosed bracket swallows the rest of the list
        (b"(" * 900_000, ()),
        (b"(" * 1500, ()),  # deeper than the stdlib parser can recurse
    ],
)
def test_hostile_address_lists_are_dropped_quickly(junk: bytes, kept: tuple[str, ...]) -> None:
    started = time.perf_counter()
    message = parse_message(
        b"Message-ID: <x@acme.example>\r\nTo: " + junk + b", ok@acme.example\r\n\r\n"
    )
    assert time.perf_counter() - started < 3
    assert message.to == kept


# any character but a line break or the "=" of an encoded word, white space and controls often
_SUBJECT_CHARACTERS = st.one_of(
    st.sampled_from([" ", "\t", "\x0b", "\x00", "\x85", "\u00a0", "\u2028", "a", "é"]),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n="),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SUBJECT_CHARACTERS, max_size=40).map("".join))
def test_a_subject_loses_its_control_characters_and_runs_of_white_space_whatever_it_holds(
    text: str,
) -> None:
    # the general rule, which the parser takes a shortcut from for the common printable subject
    kept = "".join(
        " " if ch == "\t" else ch for ch in text if unicodedata.category(ch) != "Cc" or ch == "\t"
    )
    expected = re.sub(r"\s+", " ", kept).strip()

    message = parse_message(mail("Message-ID: <s@acme.example>", f"Subject: {text}"))

    assert message.subject == expected


_LOCAL = st.text("abcdefghij.-_0123456789", min_size=1, max_size=8)
_DOMAIN = st.sampled_from(["acme.example", "Rouge.Example", "b.c.example"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_LOCAL, _DOMAIN, st.sampled_from(["", " ", "  ", "\t"])), max_size=6))
def test_a_bare_address_list_gives_each_address_once_in_order(
    addresses: list[tuple[str, str, str]],
) -> None:
    to = ",".join(f"{space}{local}@{domain}{space}" for local, domain, space in addresses)

    message = parse_message(mail("Message-ID: <a@acme.example>", f"To: {to}"))

    expected = dict.fromkeys(f"{local}@{domain}".lower() for local, domain, _ in addresses)
    assert message.to == tuple(expected)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([",", ";", ":", ">", ")", " ", "@", "a", "b.example", "x@y.example"]),
        max_size=12,
    ).map("".join)
)
def test_an_address_list_with_nothing_to_hide_a_comma_splits_as_the_general_rule_splits_it(
    to: str,
) -> None:
    # an empty quoted name adds no address, and sends the list through the general rule
    shortcut = parse_message(mail("Message-ID: <a@acme.example>", f"To: {to}"))
    general = parse_message(mail("Message-ID: <a@acme.example>", f'To: {to}, ""'))

    assert shortcut.to == general.to


@settings(max_examples=300, deadline=None)
@given(st.lists(_SUBJECT_CHARACTERS.filter(str.isprintable), max_size=30).map("".join))
def test_a_printable_subject_is_cleaned_as_one_holding_a_control_character(text: str) -> None:
    # the control character, dropped, sends the subject through the general rule
    shortcut = parse_message(mail("Message-ID: <s@acme.example>", f"Subject: {text}"))
    general = parse_message(mail("Message-ID: <s@acme.example>", f"Subject: {text}\x01"))

    assert shortcut.subject == general.subject


def test_no_printable_character_but_the_space_is_white_space() -> None:
    # what lets a printable subject skip the squeezing of white space other than spaces
    assert [
        code for code in range(0x110000) if chr(code).isprintable() and chr(code).isspace()
    ] == [0x20]
