"""The commands that record a person's decision about a request: `waive`, `unwaive`.

`cli.py` registers them with `add_record_commands`, passing its subcommand factory and how
it reads `--now`; each says in one line what it did, or why it refused (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime

from mailwatch import services
from mailwatch.bootstrap import open_store
from mailwatch.config import Settings

Command = Callable[[argparse.Namespace, Settings], int]
CommandFactory = Callable[..., argparse.ArgumentParser]
NowOf = Callable[[argparse.Namespace, Settings], datetime]

EXIT_REFUSED = 1
BY_HELP = "who made the decision (default: the login name)"


def add_record_commands(command: CommandFactory, now_of: NowOf) -> None:
    sub = command(
        "waive",
        lambda args, settings: waive_command(args, settings, now_of(args, settings)),
        'mark "no reply needed" the request of a client message',
        now=True,
    )
    sub.add_argument("message_id", metavar="MESSAGE_ID")
    sub.add_argument("--reason", metavar="TEXT")
    sub.add_argument("--by", metavar="NAME", help=BY_HELP)
    sub.add_argument(
        "--force", action="store_true", help="waive a request that was already answered"
    )
    sub = command(
        "unwaive",
        lambda args, settings: unwaive_command(args, settings, now_of(args, settings)),
        "take back a waiver made with `waive`",
        now=True,
    )
    sub.add_argument("message_id", metavar="MESSAGE_ID")
    sub.add_argument("--reason", metavar="TEXT")
    sub.add_argument("--by", metavar="NAME", help=BY_HELP)


def waive_command(args: argparse.Namespace, settings: Settings, now: datetime) -> int:
    store = open_store(settings)
    try:
        waiver, request = services.waive(
            settings, store, args.message_id, now, args.reason or "", by=args.by, force=args.force
        )
    except services.Refused as refused:
        return _refused(refused)
    finally:
        store.close()
    if request is None:
        print(f"{waiver.message_key}: waived (no request holds it now)")
    else:
        print(
            f"{waiver.message_key}: waived; request from {request.account} "
            f"'{request.subject}' is now {request.status.value}"
        )
    return 0


def unwaive_command(args: argparse.Namespace, settings: Settings, now: datetime) -> int:
    store = open_store(settings)
    try:
        request = services.unwaive(
            settings, store, args.message_id, now, args.reason or "", by=args.by
        )
    except services.Refused as refused:
        return _refused(refused)
    finally:
        store.close()
    status = request.status.value if request else "no longer measured"
    print(f"{services.normalise_message_id(args.message_id)}: waiver taken back; now {status}")
    return 0


def _refused(refused: services.Refused) -> int:
    print(f"mailwatch: {' '.join(str(refused).split())}", file=sys.stderr)
    return EXIT_REFUSED
