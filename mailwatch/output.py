"""Requests and figures as JSON (interface.md), CSV and a terminal table; untrusted text
made safe for a terminal, a plain-text mail and a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from mailwatch.core.durations import human_duration
from mailwatch.core.lessons import Lesson, LessonRecord, lesson_history, lesson_of, lessons_from
from mailwatch.core.model import Request, Waiver
from mailwatch.core.stats import Summary, by_account, by_person, summarize

if TYPE_CHECKING:
    from mailwatch.health import MailboxSync
    from mailwatch.services import ExplainedMessage, Explanation

# C0 and C1 controls but tab and line feed: ESC, BEL or CSI in a stranger's Message-ID or a
# file name must not drive the terminal (or the mail client) that shows it.  Nor may the
# bidirectional embeddings, overrides and isolates: "invoice_\u202egpj.exe" shows as
# "invoice_exe.jpg" and turns the rest of its line around.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A spreadsheet runs a cell that starts like this as a formula (OWASP: CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """`text` with each control character shown as its `\\u001b` escape."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text: a formula-like start is prefixed with '."""
    return f"'{cell}" if cell.startswith(_FORMULA_START) else cell


class _EscapingStream:
    """A text stream that writes `printable` text to the stream it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextmanager
def escaped_terminal() -> Iterator[None]:
    """While it lasts, whatever is printed to stdout and stderr is `printable`."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _EscapingStream(sys.stdout), _EscapingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def iso(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_json(request: Request, lesson: Lesson | None = None) -> dict[str, object]:
    responsible = list(request.responsible)
    return {
        "account": request.account,
        "thread": request.thread,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "received_at": iso(request.received_at),
        "answered_by": request.answered_by,
        "answered_at": iso(request.answered_at),
        "responder": request.responder,
        "response_seconds": request.response_seconds,
        "tier": request.tier,
        "target_seconds": request.target_seconds,
        "deadline": iso(request.deadline),
        "responsible": responsible[0] if len(responsible) == 1 else (responsible or None),
        "status": request.status.value,
        "clock": request.clock.value,
        "elapsed_seconds": request.elapsed_seconds,
        "waiver": None if request.waiver is None else _waiver_json(request.waiver),
        "answered_via": request.answered_via,
        "reply_possibly_unseen": request.reply_possibly_unseen,
        "reason": lesson.reason if lesson else None,
        "reason_category": lesson.category if lesson else None,
    }


def _waiver_json(waiver: Waiver) -> dict[str, object]:
    return {
        "via": waiver.via.value,
        "by": waiver.by,
        "seen_at": iso(waiver.seen_at),
        "reason": waiver.reason,
    }


def waiver_warnings(request: Request) -> tuple[str, ...]:
    """Why a waiver deserves a second look: made after the answer (only `waive --force`
    does that) or after the deadline. The digests list such waivers."""
    waiver = request.waiver
    if waiver is None:
        return ()
    warnings = []
    if request.answered_at is not None and waiver.seen_at > request.answered_at:
        warnings.append("forced")
    if waiver.seen_at > request.deadline:
        warnings.append("after the deadline")
    return tuple(warnings)


def figures_json(requests: Sequence[Request]) -> dict[str, object]:
    return {
        "summary": summarize(requests).as_dict(),
        "accounts": {name: s.as_dict() for name, s in by_account(requests).items()},
        "people": {person: s.as_dict() for person, s in by_person(requests).items()},
    }


def requests_document(
    generated_at: datetime,
    requests: Sequence[Request],
    lessons: Mapping[str, Lesson] | None = None,
    **extra: object,
) -> str:
    """`lessons`: the lessons-learnt entries as known at `generated_at`, by message key."""
    document = {
        "generated_at": iso(generated_at),
        "requests": [request_json(r, lesson_of(r, lessons or {})) for r in requests],
        **figures_json(requests),
        **extra,
    }
    return json.dumps(document, indent=1, ensure_ascii=False)


CSV_FIELDS = (
    "account thread subject opened_by received_at answered_by answered_at responder "
    "response_seconds tier target_seconds deadline responsible status reason reason_category "
    "answered_via"
).split()
# In the Status column of a table, then explained under it.
POSSIBLY_UNSEEN_MARK = "*"
POSSIBLY_UNSEEN_HINT = (
    f"{POSSIBLY_UNSEEN_MARK} the client cites a staff email mailwatch has not seen. A reply may "
    "have been sent from another mailbox: record it with `mailwatch answered MESSAGE_ID --at DATE`"
)


def requests_csv(requests: Sequence[Request], lessons: Mapping[str, Lesson] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for request in requests:
        row = request_json(request, lesson_of(request, lessons or {}))
        row["responsible"] = " ".join(request.responsible)
        writer.writerow(
            {k: spreadsheet_safe(v) if isinstance(v, str) else v for k, v in row.items()}
        )
    return out.getvalue()


def _cell(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def requests_table(requests: Sequence[Request], timezone: str) -> str:
    """One line per request, then the totals of exactly these requests. "Responsible" is
    who answers for a request, "Who" who answered it: never one standing in for the other."""
    zone = ZoneInfo(timezone)
    responsible = [", ".join(r.responsible) or "-" for r in requests]
    width = max([len("Responsible"), *map(len, responsible)])
    lines = [
        f"{'Received':16}  {'Account':14}  {'Subject':30}  {'Status':8}  {'Reply after':11}  "
        f"{'Target':7}  {'Responsible':{width}}  Who"
    ]
    for r, answers_for in zip(requests, responsible, strict=True):
        if r.response_seconds is not None:
            taken = human_duration(r.response_seconds)
        else:
            taken = f"({human_duration(r.elapsed_seconds)})"
        status = r.status.value + (POSSIBLY_UNSEEN_MARK if r.reply_possibly_unseen else "")
        lines.append(
            f"{r.received_at.astimezone(zone):%Y-%m-%d %H:%M}  {_cell(r.account, 14):14}  "
            f"{_cell(r.subject or '(no subject)', 30):30}  {status:8}  {taken:11}  "
            f"{human_duration(r.target_seconds):7}  {answers_for:{width}}  {_who(r)}"
        )
    lines.append("")
    lines.append(summary_line(requests))
    if any(r.reply_possibly_unseen for r in requests):
        lines.append(POSSIBLY_UNSEEN_HINT)
    return "\n".join(lines)


def _who(request: Request) -> str:
    """Who answered; how, when it was not by email."""
    via = request.answered_via
    if via is None or via == "email":
        return request.responder or "-"
    return f"{request.responder or '?'} ({via})"


def summary_line(requests: Sequence[Request]) -> str:
    s = summarize(requests)
    compliance = "n/a" if s.compliance is None else f"{s.compliance:.0%}"
    median = _duration_or_na(s.median_response_seconds)
    p90 = _duration_or_na(s.p90_response_seconds)
    return f"{counts_text(s)}. Compliance {compliance}; median reply {median}, p90 {p90}."


def counts_text(s: Summary) -> str:
    """Every status counted, so the line adds up: report's summary and the digests' lines."""
    return (
        f"{s.requests} request{'' if s.requests == 1 else 's'}: {s.met} met, "
        f"{s.breached} breached, {s.overdue} overdue, {s.open} open, {s.waived} waived"
    )


def _duration_or_na(seconds: float | None) -> str:
    return "n/a" if seconds is None else human_duration(round(seconds))


def mailbox_sync_json(sync: MailboxSync) -> dict[str, object]:
    """A mailbox's (or folder's) sync in `status --format json`."""
    state = sync.state
    return {
        "mailbox": sync.mailbox,
        "folder": sync.folder,
        "last_ok_at": iso(state.last_ok_at) if state else None,
        "last_error": state.last_error if state else None,
        "failures": state.failures if state else 0,
        "condition": sync.condition,  # never_synced, stale, failing or ok
        "problem": sync.problem,
    }


def sync_problem_lines(syncs: Sequence[MailboxSync]) -> list[str]:
    """What `status` leads with: the mailboxes that never synced, are stale, or fail."""
    problems = [sync.problem for sync in syncs if sync.problem is not None]
    if not problems:
        return []
    return ["Sync problems (mail may be missing from what follows):"] + [
        f"  {problem}" for problem in problems
    ]


def explanation_text(found: Explanation, timezone: str) -> str:
    """`explain`: each message of the thread (who to, what it counted for), then each
    request with its waiver and the reasons behind its decisions."""
    zone = ZoneInfo(timezone)
    lines = [f"Thread {found.thread}"]
    for m in found.messages:
        when = m.at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if m.at else "(no time)"
        lines.append(f"  {when}  {m.role:6}  {m.sender}  {m.key}")
        lines.append(f"      {_recipients(m)}")
        lines.append(f"      {m.verdict}")
    for r in found.requests:
        lines.append(
            f"Request opened by {r.opened_by} ({r.account}): {r.status.value}, tier {r.tier}, "
            f"target {human_duration(r.target_seconds)}, deadline "
            f"{r.deadline.astimezone(zone):%Y-%m-%d %H:%M}"
        )
        if r.waiver is not None:
            warnings = "".join(f" ({warning})" for warning in waiver_warnings(r))
            lines.append(
                f"  waived (no reply needed) via {r.waiver.via} by {r.waiver.by} on "
                f"{r.waiver.seen_at.astimezone(zone):%Y-%m-%d %H:%M}{warnings}, reason: "
                f"{r.waiver.reason or '(none given)'}"
            )
        if r.reply_possibly_unseen:
            lines.append(f"  {POSSIBLY_UNSEEN_HINT.removeprefix(POSSIBLY_UNSEEN_MARK).strip()}")
        lines.extend(f"  - {note}" for note in r.notes)
        lines.extend(_lesson_lines(r, found.lesson_records, zone))
    return "\n".join(lines)


def _lesson_lines(request: Request, records: Sequence[LessonRecord], zone: ZoneInfo) -> list[str]:
    """The request's lessons-learnt entry as it stands, then every recording made on it."""
    history = lesson_history(request, records)
    lesson = lesson_of(request, lessons_from(history))
    if lesson is None:
        return []
    state = "open" if lesson.is_open else "resolved"
    lines = [f"  lesson ({state}): [{lesson.category}] {lesson.reason}"]
    if lesson.action or lesson.owner:
        lines.append(f"    action: {lesson.action or '(none yet)'}; owner: {lesson.owner or '-'}")
    lines.append("    history:")
    for record in history:
        lines.append(
            f"      {record.made_at.astimezone(zone):%Y-%m-%d %H:%M}  {record.made_by}: "
            f"{lesson_change(record)}"
        )
    return lines


def lesson_change(record: LessonRecord) -> str:
    """What one `annotate` did, in words."""
    if record.resolved:
        return "resolved" + (f": {record.note}" if record.note else "")
    said = []
    if record.reason is not None:
        said.append(f"reason [{record.category}] {record.reason}")
    if record.action is not None:
        said.append(f"action {record.action}")
    if record.owner is not None:
        said.append(f"owner {record.owner}")
    return "; ".join(said)


def _recipients(message: ExplainedMessage) -> str:
    fields = (("to", message.to), ("cc", message.cc), ("bcc", message.bcc))
    named = [f"{name} {', '.join(addresses)}" for name, addresses in fields if addresses]
    return "; ".join(named) or "no recipients"
