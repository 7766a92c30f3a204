"""Any bytes a stranger can put in an email: the parser and the clock never crash, memory
stays bounded on huge input, and a message that cannot be read is set aside and shown."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mailwatch.adapters.parse import HEADER_FIELDS, UnparsableMessage, parse_message
from mailwatch.adapters.render import Renderer
from mailwatch.cli import main
from mailwatch.config import Settings
from mailwatch.core.clock import evaluate
from mailwatch.core.model import Copy
from mailwatch.requests_as_of import current_requests
from mailwatch.sync import poll_all
from tests.core.factory import policy
from tests.imap_helpers import NOW as NOW_IMAP
from tests.imap_helpers import hours_ago, mailbox_settings, sync_settings

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
    config = agency_config(tmp_path)

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


def agency_config(tmp_path: Path) -> Path:
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        '[agency]\nname = "Rouge"\ndomains = ["rouge.example"]\ntimezone = "UTC"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "mw.db"}"\n'
        '[[staff]]\nemail = "alice@rouge.example"\n'
        '[[accounts]]\nname = "Acme"\ndomains = ["acme.example"]\nmanager = "alice@rouge.example"\n'
    )
    return config


def client_mail(message_id: str, date: str, subject: str = "Banner colours") -> bytes:
    return (
        f"From: jane@acme.example\r\nTo: alice@rouge.example\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: {message_id}\r\n\r\nHello\r\n"
    ).encode()


FAR = "Fri, 31 Dec 9999 10:00:00 +0000"


@pytest.mark.parametrize("received", [False, True], ids=["date", "received-and-date"])
def test_a_date_in_the_year_9999_is_not_trusted_and_every_later_command_still_works(
    tmp_path: Path, capsys, received: bool
):
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1-fine.eml").write_bytes(
        client_mail("<fine@acme.example>", "Thu, 26 Nov 2026 10:00:00 +0000")
    )
    far = client_mail("<far@acme.example>", FAR)
    if received:  # the top Received: stands in for INTERNALDATE in an import
        far = f"Received: from mx.acme.example; {FAR}\r\n".encode() + far
    (folder / "2-far.eml").write_bytes(far)
    config = agency_config(tmp_path)
    now = ["--now", "2026-11-27"]

    codes = [
        main(["--config", str(config), "import", str(folder), *now]),
        main(["--config", str(config), "status", *now]),
        main(["--config", str(config), "report", *now]),
    ]
    out = capsys.readouterr().out

    assert codes == [0, 0, 0]
    assert "1 message(s) carry no usable time and are not measured: <far@acme.example>" in out
    assert out.count("Banner colours") == 2  # the fine request, in status and in report


@pytest.mark.dovecot
def test_an_internaldate_far_in_the_future_falls_back_to_the_next_trustworthy_time(
    dovecot, store, tmp_path: Path
):
    alice = dovecot.new_user("alice")
    settings = Settings(
        source=None,
        agency_name="Test",
        policy=policy(),
        mailboxes=(mailbox_settings(dovecot, alice, tmp_path),),
        sync=sync_settings(),
    )
    poll_all(settings, store, NOW_IMAP)  # the first sync: later mail is fetched by UID
    sent = hours_ago(5)
    raw = client_mail("<old@acme.example>", format_datetime(sent), subject="Invoice query")
    # Dovecot reports a pre-1901 APPEND date as 2038-01-19: not a time that has happened
    dovecot.append(alice, "INBOX", raw, datetime(1899, 12, 31, tzinfo=UTC))

    poll_all(settings, store, NOW_IMAP)
    (request,) = current_requests(settings, store, NOW_IMAP)

    assert (request.opened_by, request.received_at) == ("<old@acme.example>", sent)


def failing_on(bad_key: str):
    """`evaluate` as it would be with a bug that one thread's mail triggers."""

    def evaluate_or_fail(messages, *args, **kwargs):
        messages = list(messages)
        if any(m.key == bad_key for m in messages):
            raise OverflowError("date value out of range")
        return evaluate(messages, *args, **kwargs)

    return evaluate_or_fail


def test_a_thread_whose_evaluation_fails_is_set_aside_and_the_others_are_measured(
    tmp_path: Path, capsys, monkeypatch
):
    folder = tmp_path / "mail"
    folder.mkdir()
    date = "Thu, 26 Nov 2026 10:00:00 +0000"
    (folder / "1.eml").write_bytes(client_mail("<good@acme.example>", date, "Banner colours"))
    (folder / "2.eml").write_bytes(client_mail("<bad@acme.example>", date, "Invoice query"))
    config = agency_config(tmp_path)
    monkeypatch.setattr("mailwatch.evaluation_parts.evaluate", failing_on("<bad@acme.example>"))

    imported = main(["--config", str(config), "import", str(folder), "--now", "2026-11-27"])
    status = main(["--config", str(config), "status", "--now", "2026-11-27"])
    health = main(["--config", str(config), "health"])
    out = capsys.readouterr().out

    assert (imported, status, health) == (0, 0, 1)
    assert "Banner colours" in out
    assert "1 thread(s) could not be evaluated and were set aside:" in out
    assert (
        "not evaluated, set aside: the thread of <bad@acme.example>: "
        "OverflowError: date value out of range"
    ) in out


def out_of_range(*args, **kwargs):
    raise OverflowError("date value out of range")


def test_health_fails_while_evaluation_fails_and_recovers_when_it_succeeds(
    tmp_path: Path, capsys, monkeypatch
):
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1.eml").write_bytes(
        client_mail("<one@acme.example>", "Thu, 26 Nov 2026 10:00:00 +0000")
    )
    config = agency_config(tmp_path)
    with monkeypatch.context() as broken:
        broken.setattr("mailwatch.evaluation.mail_context", out_of_range)
        with contextlib.suppress(OverflowError):
            main(["--config", str(config), "import", str(folder), "--now", "2026-11-27"])
        failing = main(["--config", str(config), "health"])
        failing_out = capsys.readouterr().out
    main(["--config", str(config), "import", str(folder), "--now", "2026-11-27"])
    healthy = main(["--config", str(config), "health"])

    assert (failing, healthy) == (1, 0)
    assert "the last evaluation of requests failed at " in failing_out
    assert "OverflowError: date value out of range" in failing_out


@pytest.mark.parametrize("subject", [b"Hello\rthere", b"Hello there\r"])
def test_a_bare_cr_inside_a_subject_is_not_a_line_break_and_no_field_after_it_is_lost(subject):
    raw = (
        b"From: jane@acme.example\r\nSubject: " + subject + b"\r\n"
        b"Message-ID: <cr@acme.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nHi\r\n"
    )

    message = parse_message(raw)

    assert (message.key, message.date) == (
        "<cr@acme.example>",
        datetime(2026, 11, 26, 10, tzinfo=UTC),
    )
    assert message.subject == "Hello there"


def test_escape_sequences_in_message_ids_and_file_names_never_reach_the_terminal(
    tmp_path: Path, capsys
):
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1.eml").write_bytes(
        client_mail("<red\x1b[31m\x07@acme.example>", "Thu, 26 Nov 2026 10:00:00 +0000")
    )
    (folder / "2-\x1b]0;pwned\x07.eml").write_bytes(b"\r\n\r\nno header at all\r\n")
    config = agency_config(tmp_path)
    now = ["--now", "2026-11-27"]

    main(["--config", str(config), "import", str(folder), *now])
    for command in (["status"], ["report", "--format", "csv"], ["report"]):
        main(["--config", str(config), *command, *now])
    main(["--config", str(config), "explain", "<red\x1b[31m\x07@acme.example>", *now])
    captured = capsys.readouterr()
    printed = captured.out + captured.err

    assert "\x1b" not in printed and "\x07" not in printed
    assert "<red\\u001b[31m\\u0007@acme.example>" in captured.out  # status, csv and explain
    assert "2-\\u001b]0;pwned\\u0007.eml: no header fields found" in captured.out


def test_a_subject_that_starts_like_a_formula_is_text_in_the_csv(tmp_path: Path, capsys):
    folder = tmp_path / "mail"
    folder.mkdir()
    subject = '=HYPERLINK("http://evil.example","Invoice")'
    (folder / "1.eml").write_bytes(
        client_mail("<f@acme.example>", "Thu, 26 Nov 2026 10:00:00 +0000", subject)
    )
    config = agency_config(tmp_path)
    main(["--config", str(config), "import", str(folder), "--now", "2026-11-27"])
    capsys.readouterr()

    main(["--config", str(config), "report", "--format", "csv", "--now", "2026-11-27"])
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))

    assert row["subject"] == "'" + subject


def test_control_characters_in_mail_text_are_escaped_in_the_plain_text_part(tmp_path: Path):
    for part in ("subject.txt", "txt", "html"):
        (tmp_path / f"probe.{part}").write_text("{{ message_id }} {{ safe }}")
    renderer = Renderer(tmp_path)

    rendered = renderer.render(
        "probe", {"message_id": "<a\x1b[2J\x07@acme.example>", "safe": Markup("<b>&amp;</b>")}
    )

    assert rendered.text == "<a\\u001b[2J\\u0007@acme.example> <b>&amp;</b>"
    assert rendered.html == "&lt;a\\u001b[2J\\u0007@acme.example&gt; <b>&amp;</b>"
