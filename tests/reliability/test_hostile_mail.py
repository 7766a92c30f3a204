"""Any bytes a stranger can put in an email: the parser and the clock never crash, memory
stays bounded on huge input, and a message that cannot be read is set aside and shown."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwatch.adapters.parse import HEADER_FIELDS, UnparsableMessage, parse_message
from mailwatch.cli import main
from mailwatch.core.clock import evaluate
from mailwatch.core.model import Copy
from tests.core.factory import policy

NOW = datetime(2026, 11, 27, 9, tzinfo=UTC)
MIB = 1024 * 1024

NASTY = [
    "=?utf-8?B?",
    "=?x-unknown?Q?=FF=00?=",
    "?=",
    "<",
    ">",
    "@",
    '"',
    "(",
    ")",
    ",",
    ";",
    ":",
    "\\",
    "\r",
    "\n",
    "\r\n",
    "\r\n ",
    "\t",
    "\x00",
    "\x7f",
    "é",
    "\udcff"[:0],
    "💥",
    "alice@rouge.example",
    "jane@acme.example",
    "<id@acme.example>",
    "Mon, 30 Feb 2026 25:61:61 +9999",
    "auto-replied",
    "bulk",
    "Re: Fwd: ",
    "Thanks!",
]
names = st.sampled_from([*HEADER_FIELDS, "X-Junk", "", " ", "From ", "Subject\x00"])
values = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=20)), max_size=12).map("".join)
raw_bytes = st.binary(max_size=40)
header_blocks = st.lists(
    st.one_of(
        st.tuples(names, values).map(lambda nv: f"{nv[0]}: {nv[1]}".encode("utf-8", "replace")),
        raw_bytes,
    ),
    max_size=25,
).flatmap(
    lambda lines: st.sampled_from([b"\r\n", b"\n", b"\r"]).map(lambda eol: eol.join(lines) + eol)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(header_blocks, min_size=1, max_size=6), st.binary(max_size=200))
def test_any_header_block_parses_or_is_unparsable_and_the_clock_evaluates_whatever_parsed(
    blocks, body
):
    messages = {}
    for number, block in enumerate(blocks):
        try:
            message = parse_message(block, body_prefix=body)
        except UnparsableMessage:
            continue
        copy = Copy(
            mailbox="alice",
            folder="INBOX" if number % 2 else "Sent",
            sent_folder=number % 2 == 0,
            internal_date=NOW - timedelta(hours=number),
        )
        messages[message.key] = replace(message, copies=(copy,))
    evaluation = evaluate(list(messages.values()), policy(), NOW, [])
    assert len(evaluation.requests) <= len(messages)


def peak_mib(work) -> float:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def test_a_50_mib_message_with_a_5_mib_header_parses_in_bounded_memory():
    header = b"From: jane@acme.example\r\nMessage-ID: <big@acme.example>\r\n"
    header += b"X-Padding: " + b"a" * 80 + b"\r\n"
    huge = header * (5 * MIB // len(header)) + b"\r\n" + b"body line\r\n" * (45 * MIB // 11)

    peak = peak_mib(lambda: parse_message(huge, body_prefix=huge[-8192:]))

    assert peak < 24, f"{peak:.1f} MiB"


def test_ten_thousand_recipients_and_deeply_nested_mime_parse_in_bounded_memory():
    recipients = ", ".join(f'"Person {n}" <p{n}@acme.example>' for n in range(10_000))
    nested = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(2000)
    )
    raw = (
        f"From: jane@acme.example\r\nTo: {recipients}\r\nMessage-ID: <n@acme.example>\r\n"
        f'Content-Type: multipart/mixed; boundary="top"\r\n\r\n--top\r\n{nested}'
    ).encode()

    peak = peak_mib(lambda: parse_message(raw, body_prefix=raw[-8192:]))

    assert peak < 16, f"{peak:.1f} MiB"


def test_mail_that_cannot_be_read_is_set_aside_with_its_location_and_shown_in_status(
    tmp_path: Path, capsys
):
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1-broken.eml").write_bytes(b"\r\n\r\nno header at all\r\n")
    (folder / "2-fine.eml").write_bytes(
        b"From: jane@acme.example\r\nTo: alice@rouge.example\r\nSubject: Hi\r\n"
        b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <fine@acme.example>\r\n\r\nHi\r\n"
    )
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        '[agency]\nname = "Rouge"\ndomains = ["rouge.example"]\ntimezone = "UTC"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "mw.db"}"\n'
        '[[staff]]\nemail = "alice@rouge.example"\n'
        '[[accounts]]\nname = "Acme"\ndomains = ["acme.example"]\nmanager = "alice@rouge.example"\n'
    )

    imported = main(["--config", str(config), "import", str(folder), "--now", "2026-11-27"])
    imported_out = capsys.readouterr()
    table = main(["--config", str(config), "status", "--now", "2026-11-27"])
    table_out = capsys.readouterr().out
    main(["--config", str(config), "status", "--format", "json", "--now", "2026-11-27"])
    document = json.loads(capsys.readouterr().out)

    broken = folder / "1-broken.eml"
    assert (imported, table) == (0, 0)
    assert "read 2 messages: 1 new, 1 set aside" in imported_out.out
    assert "1 message(s) could not be read and were set aside:" in table_out
    assert f"{broken}: no header fields found" in table_out
    (aside,) = document["quarantined"]
    assert (aside["location"], aside["error"]) == (str(broken), "no header fields found")
    assert [r["opened_by"] for r in document["requests"]] == ["<fine@acme.example>"]
