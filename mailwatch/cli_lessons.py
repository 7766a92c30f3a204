"""`mailwatch annotate` and `mailwatch lessons`: the lessons-learnt log on the command line,
its parsers and what it prints (the use cases are in `lessons.py`)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from zoneinfo import ZoneInfo

from mailwatch import lessons
from mailwatch.arguments import UsageError, parse_instant
from mailwatch.bootstrap import open_store, utc_now
from mailwatch.config import Settings
from mailwatch.core.durations import human_duration
from mailwatch.core.model import Request
from mailwatch.core.stats import late_seconds
from mailwatch.output import iso, spreadsheet_safe

Handler = Callable[[argparse.Namespace, Settings], int]
AddCommand = Callable[..., argparse.ArgumentParser]

EXIT_REFUSED = 1
NO_REASON = "no reason recorded"
# A lesson is a sentence or two: the digests show it whole, on a phone. The details belong in
# the quality system the CSV goes to.
LONGEST_TEXT = 1000
# The columns a quality system's log needs first, then the request's facts.
CSV_FIELDS = (
    "date client category description action owner status closed_on "
    "subject opened_by received_at request_status how_late tier responsible answered_at "
    "responder recorded_at recorded_by resolved_by resolution_note"
).split()


def add_commands(command: AddCommand) -> None:
    """Add both commands through the `command(name, handler, help, now=...)` of `cli.py`."""
    sub = command(
        "annotate",
        cmd_annotate,
        "record why a request breached (the lessons-learnt log), its action and owner, "
        "or that it is resolved",
        now=True,
    )
    sub.add_argument("message_id", metavar="MESSAGE_ID", help="any client message of the request")
    sub.add_argument("--reason", metavar="TEXT", help="why it breached (replaces an earlier one)")
    sub.add_argument("--category", metavar="NAME", help="one of [lessons] categories")
    sub.add_argument("--action", metavar="TEXT", help="what is done so it does not happen again")
    sub.add_argument("--owner", metavar="ADDRESS", help="the staff member who sees the action done")
    sub.add_argument("--resolved", action="store_true", help="the lesson is resolved")
    sub.add_argument("--note", metavar="TEXT", help="with --resolved: how it was resolved")
    sub.add_argument("--by", metavar="ADDRESS", help="who records it (default: the login name)")
    sub = command(
        "lessons",
        cmd_lessons,
        "the lessons-learnt log: every breached or overdue request with its reason",
        now=True,
    )
    sub.add_argument("--since", metavar="DATE", help="requests received from then (default: all)")
    sub.add_argument("--until", metavar="DATE", help="requests received before then")
    sub.add_argument("--open", action="store_true", help="only those not resolved")
    sub.add_argument("--format", choices=("table", "json", "csv"), default="table")


def cmd_annotate(args: argparse.Namespace, settings: Settings) -> int:
    annotation = _annotation(args)
    with closing(open_store(settings)) as store:
        try:
            done = lessons.annotate(
                settings, store, args.message_id, _now(args, settings), annotation, args.by
            )
        except lessons.InvalidLesson as invalid:
            raise UsageError(str(invalid)) from None
        except lessons.LessonRefused as refused:
            print(f"mailwatch: {refused}", file=sys.stderr)
            return EXIT_REFUSED
    request, lesson = done.request, done.lesson
    state = "open" if lesson.is_open else "resolved"
    print(
        f"{request.opened_by}: lesson {state} on the request from {request.account} "
        f"'{request.subject}' ({request.status.value}): [{lesson.category}] {lesson.reason}"
    )
    return 0


def _annotation(args: argparse.Namespace) -> lessons.Annotation:
    changes = (args.reason, args.category, args.action, args.owner)
    if args.resolved and any(change is not None for change in changes):
        raise UsageError("--resolved stands alone (with --note): record changes separately")
    if args.note is not None and not args.resolved:
        raise UsageError("--note goes with --resolved")
    if args.category is not None and args.reason is None:
        raise UsageError("--category goes with --reason")
    if not args.resolved and all(change is None for change in changes):
        raise UsageError("give --reason (with --category), --action, --owner or --resolved")
    for option, text in (
        ("--reason", args.reason),
        ("--action", args.action),
        ("--note", args.note),
    ):
        if text is not None and len(text) > LONGEST_TEXT:
            raise UsageError(
                f"{option} is {len(text)} characters; keep it to {LONGEST_TEXT} (the digests "
                "show it whole)"
            )
    return lessons.Annotation(
        reason=args.reason,
        category=args.category,
        action=args.action,
        owner=args.owner,
        resolved=args.resolved,
        note=args.note,
    )


def cmd_lessons(args: argparse.Namespace, settings: Settings) -> int:
    zone = settings.policy.timezone
    since = parse_instant(args.since, zone) if args.since else None
    until = parse_instant(args.until, zone) if args.until else None
    now = _now(args, settings)
    with closing(open_store(settings)) as store:
        entries = lessons.lessons_log(settings, store, now, since, until, open_only=args.open)
    if args.format == "json":
        print(log_json(entries, now, since, until))
    elif args.format == "csv":
        sys.stdout.write(log_csv(entries, zone))
    else:
        print(log_table(entries, zone))
    return 0


def _now(args: argparse.Namespace, settings: Settings) -> datetime:
    """`--now`: the instant the command is made, or sees the log as of; else the clock."""
    return parse_instant(args.now, settings.policy.timezone) if args.now else utc_now()


# ---------------------------------------------------------------- what `lessons` prints


def entry_json(entry: lessons.LogEntry) -> dict[str, object]:
    request, lesson = entry.request, entry.lesson
    return {
        "account": request.account,
        "subject": request.subject,
        "opened_by": request.opened_by,
        "thread": request.thread,
        "received_at": iso(request.received_at),
        "request_status": request.status.value,
        "late_seconds": max(0, late_seconds(request)),
        "tier": request.tier,
        "target_seconds": request.target_seconds,
        "deadline": iso(request.deadline),
        "responsible": list(request.responsible),
        "answered_at": iso(request.answered_at),
        "responder": request.responder,
        "answered_via": request.answered_via,
        "status": entry.status,
        "reason": lesson.reason if lesson else None,
        "category": lesson.category if lesson else None,
        "action": lesson.action if lesson else None,
        "owner": lesson.owner if lesson else None,
        "recorded_at": iso(lesson.recorded_at) if lesson else None,
        "recorded_by": lesson.recorded_by if lesson else None,
        "resolved_at": iso(lesson.resolved_at) if lesson else None,
        "resolved_by": lesson.resolved_by if lesson else None,
        "resolution_note": lesson.resolution_note if lesson else None,
    }


def log_json(
    entries: Sequence[lessons.LogEntry],
    now: datetime,
    since: datetime | None,
    until: datetime | None,
) -> str:
    document = {
        "generated_at": iso(now),
        "since": iso(since),
        "until": iso(until),
        "lessons": [entry_json(entry) for entry in entries],
        "summary": _counts(entries),
    }
    return json.dumps(document, indent=1, ensure_ascii=False)


def _counts(entries: Sequence[lessons.LogEntry]) -> dict[str, int]:
    statuses = [entry.status for entry in entries]
    return {
        "entries": len(statuses),
        "no_reason": statuses.count("no reason"),
        "open": statuses.count("open"),
        "resolved": statuses.count("resolved"),
    }


def log_csv(entries: Sequence[lessons.LogEntry], timezone: str) -> str:
    zone = ZoneInfo(timezone)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        request, lesson = entry.request, entry.lesson
        resolved_at = lesson.resolved_at if lesson else None
        row: dict[str, object] = {
            "date": f"{request.received_at.astimezone(zone):%Y-%m-%d}",
            "client": request.account,
            "category": lesson.category if lesson else "",
            "description": lesson.reason if lesson else "",
            "action": (lesson.action or "") if lesson else "",
            "owner": (lesson.owner or "") if lesson else "",
            "status": entry.status,
            "closed_on": f"{resolved_at.astimezone(zone):%Y-%m-%d}" if resolved_at else "",
            "subject": request.subject,
            "opened_by": request.opened_by,
            "received_at": iso(request.received_at),
            "request_status": request.status.value,
            "how_late": _how_late(request),
            "tier": request.tier,
            "responsible": " ".join(request.responsible),
            "answered_at": iso(request.answered_at) or "",
            "responder": request.responder or "",
            "recorded_at": iso(lesson.recorded_at) if lesson else "",
            "recorded_by": lesson.recorded_by if lesson else "",
            "resolved_by": (lesson.resolved_by or "") if lesson else "",
            "resolution_note": (lesson.resolution_note or "") if lesson else "",
        }
        writer.writerow(
            {k: spreadsheet_safe(v) if isinstance(v, str) else v for k, v in row.items()}
        )
    return out.getvalue()


def log_table(entries: Sequence[lessons.LogEntry], timezone: str) -> str:
    """A few lines per entry, oldest first, then how many lack a reason, are open, resolved."""
    zone = ZoneInfo(timezone)
    lines: list[str] = []
    for entry in entries:
        lines.extend(_entry_lines(entry, zone))
    counts = _counts(entries)
    lines.append(
        f"{counts['entries']} entries: {counts['no_reason']} without a reason, "
        f"{counts['open']} open, {counts['resolved']} resolved."
    )
    return "\n".join(lines)


def _how_late(request: Request) -> str:
    late = max(0, late_seconds(request))
    return f"{human_duration(late)} late" if late else "on time"


def _entry_lines(entry: lessons.LogEntry, zone: ZoneInfo) -> list[str]:
    request, lesson = entry.request, entry.lesson

    def shown(instant: datetime) -> str:
        return f"{instant.astimezone(zone):%Y-%m-%d %H:%M}"

    answered = (
        f"answered {shown(request.answered_at)} by {request.responder or '?'}"
        if request.answered_at
        else "no reply yet"
    )
    lines = [
        f"{shown(request.received_at)}  {request.account}  '{request.subject}'  "
        f"{request.opened_by}",
        f"  {request.status.value}, {_how_late(request)} (tier {request.tier}, target "
        f"{human_duration(request.target_seconds)}); responsible "
        f"{', '.join(request.responsible) or '-'}; {answered}",
    ]
    if lesson is None:
        return [*lines, f"  {NO_REASON}", ""]
    lines.append(
        f"  lesson ({entry.status}): [{lesson.category}] {lesson.reason} (recorded "
        f"{shown(lesson.recorded_at)} by {lesson.recorded_by})"
    )
    if lesson.action or lesson.owner:
        lines.append(f"  action: {lesson.action or '(none yet)'}; owner: {lesson.owner or '-'}")
    if lesson.resolved_at:
        note = f": {lesson.resolution_note}" if lesson.resolution_note else ""
        lines.append(f"  resolved {shown(lesson.resolved_at)} by {lesson.resolved_by}{note}")
    return [*lines, ""]
