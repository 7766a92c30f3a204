"""`mailwatch answered` and `mailwatch unanswered`: answers given outside email, on the
command line (the use cases are in `answers.py`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import closing
from datetime import datetime

from mailwatch import answers
from mailwatch.arguments import UsageError, parse_instant
from mailwatch.bootstrap import open_store, utc_now
from mailwatch.config import Settings
from mailwatch.core.model import ANSWER_CHANNELS, Request

Handler = Callable[[argparse.Namespace, Settings], int]
AddCommand = Callable[..., argparse.ArgumentParser]


def add_commands(command: AddCommand) -> None:
    """Add both commands through the `command(name, handler, help, now=...)` of `cli.py`."""
    sub = command(
        "answered", cmd_answered, "record an answer given outside email (phone, meeting…)", now=True
    )
    sub.add_argument("message_id", metavar="MESSAGE_ID", help="any client message of the request")
    sub.add_argument("--at", metavar="DATE", required=True, help="when the answer was given")
    sub.add_argument("--via", choices=ANSWER_CHANNELS, default="other")
    sub.add_argument("--by", metavar="ADDRESS", help="the staff member who answered")
    sub.add_argument("--note", metavar="TEXT", default="")
    sub = command(
        "unanswered", cmd_unanswered, "take back an answer recorded with `answered`", now=True
    )
    sub.add_argument("message_id", metavar="MESSAGE_ID", help="any client message of the request")
    sub.add_argument("--by", metavar="ADDRESS", help="who takes it back (default: the login name)")


def cmd_answered(args: argparse.Namespace, settings: Settings) -> int:
    now = _recorded_at(args, settings)
    at = parse_instant(args.at, settings.policy.timezone)
    with closing(open_store(settings)) as store:
        try:
            request = answers.record_answer(
                settings,
                store,
                args.message_id,
                at=at,
                now=now,
                via=args.via,
                by=args.by,
                note=args.note,
            )
        except answers.AnswerRefused as refusal:
            raise UsageError(str(refusal)) from None
    print(f"{args.message_id}: answered by {args.via}; {_now_shown(request)}")
    return 0


def cmd_unanswered(args: argparse.Namespace, settings: Settings) -> int:
    now = _recorded_at(args, settings)
    with closing(open_store(settings)) as store:
        try:
            request = answers.take_back_answer(settings, store, args.message_id, now, args.by)
        except answers.AnswerRefused as refusal:
            raise UsageError(str(refusal)) from None
    print(f"{args.message_id}: recorded answer taken back; {_now_shown(request)}")
    return 0


def _recorded_at(args: argparse.Namespace, settings: Settings) -> datetime:
    """`--now`: the instant the command is recorded as made; else the clock."""
    return parse_instant(args.now, settings.policy.timezone) if args.now else utc_now()


def _now_shown(request: Request | None) -> str:
    if request is None:
        return "no request holds it now"
    return f"request from {request.account} '{request.subject}' is now {request.status.value}"
