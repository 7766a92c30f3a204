"""The `mailwatch` command: parse arguments, call one service, print its result.

Exit status: 0 success, 1 a failure the command reports (a mailbox that cannot
be reached, an unknown message), 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError

from mailwatch import __version__, cli_answers, cli_lessons, evaluation, output, services
from mailwatch.arguments import UsageError, parse_instant
from mailwatch.bootstrap import (
    DatabaseProblem,
    SchemaMismatch,
    database_check,
    make_mailer,
    make_renderer,
    migrate_store,
    open_store,
    shown_url,
    utc_now,
)
from mailwatch.cli_records import add_record_commands
from mailwatch.config import LOG_FORMATS, ConfigError, Settings, config_path, load_settings
from mailwatch.logs import configure_logging
from mailwatch.progress import terminal_progress
from mailwatch.store.repository import QuarantinedMessage, Store

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _now(args: argparse.Namespace, settings: Settings) -> datetime:
    if getattr(args, "now", None):
        return parse_instant(args.now, settings.policy.timezone)
    return utc_now()


# ---------------------------------------------------------------- commands


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: cannot be read by this user (permission denied)")
    configured = [mailbox.name for mailbox in settings.mailboxes]
    # Without [[mailboxes]] (an import-only install) the files name their own mailbox.
    if args.mailbox and configured and args.mailbox not in configured:
        raise UsageError(
            f"--mailbox {args.mailbox}: no such mailbox; configured: {', '.join(configured)}"
        )
    with _store(settings) as store:
        result = services.import_paths(
            settings,
            store,
            paths,
            _now(args, settings),
            mailbox=args.mailbox,
            sent=args.sent,
            progress=terminal_progress(),
        )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in result.set_aside:
        print(f"set aside: {problem}", file=sys.stderr)
    print(f"read {result.read} messages: {result.new} new, {len(result.set_aside)} set aside")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    if args.as_reported:
        return _report_as_reported(args, settings)
    zone = settings.policy.timezone
    since = parse_instant(args.since, zone) if args.since else None
    until = parse_instant(args.until, zone) if args.until else None
    try:
        only = services.request_filter(settings.policy, args.account, args.responsible, args.status)
    except services.InvalidFilter as error:
        raise UsageError(str(error)) from None
    with _store(settings) as store:
        found = services.report(settings, store, _now(args, settings), since, until, only)
    _print_requests(args.format, found, settings)
    return 0


def _report_as_reported(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.revisions import as_reported, as_reported_table

    if args.since or args.until or args.account or args.responsible or args.status:
        raise UsageError("--as-reported shows one whole period of the agency, unfiltered")
    if args.format == "csv":
        raise UsageError("--as-reported shows a table or JSON")
    with _store(settings) as store:
        found = as_reported(settings, store, _now(args, settings), args.as_reported)
    if not found.figures:
        return _fail(f"{found.period.label} was never reported in an agency digest", EXIT_FAILURE)
    if args.format == "json":
        print(json.dumps(found.figures, indent=1, ensure_ascii=False))
    else:
        print(as_reported_table(found.figures))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 1 when mailboxes are configured and none has synced yet: "nothing is
    waiting" would be a guess, and a cron job should hear about it."""
    from mailwatch.health import mailbox_syncs, none_synced
    from mailwatch.unconfigured import recent_unconfigured, unconfigured_json, unconfigured_lines

    with _store(settings) as store:
        found = services.status(settings, store, _now(args, settings))
        unconfigured = recent_unconfigured(store, found.generated_at)
        notice = evaluation.attention(store)
        quarantined = store.quarantined()
        syncs = mailbox_syncs(settings, store.sync_states(), found.generated_at)
    unsynced = none_synced(settings, syncs)
    if args.format == "json":
        extra = {
            "quarantined": [
                {"location": q.location, "error": q.error, "seen_at": output.iso(q.seen_at)}
                for q in quarantined
            ],
            "untimed": list(notice.untimed),
            "set_aside_threads": list(notice.set_aside),
            "unlisted_senders": list(notice.unlisted_senders),
            "unknown_correspondents": list(notice.unknown_correspondents),
            "mailboxes": [output.mailbox_sync_json(sync) for sync in syncs],
            "no_mailbox_synced": unsynced,
            "unconfigured": unconfigured_json(unconfigured),
        }
        print(output.requests_document(found.generated_at, found.requests, found.lessons, **extra))
        return EXIT_FAILURE if unsynced else 0
    for line in output.sync_problem_lines(syncs):
        print(line)
    if unsynced:
        print("No mailbox has synced yet: run `mailwatch poll` (`mailwatch check` says why not).")
    elif not found.requests:
        print("Nothing is waiting for a reply.")
    if found.requests:  # imported mail is measured before any mailbox syncs
        print(output.requests_table(found.requests, settings.policy.timezone))
    for line in unconfigured_lines(unconfigured, settings.policy.timezone):
        print(line)
    for line in _attention_lines(notice, quarantined):
        print(line)
    return EXIT_FAILURE if unsynced else 0


def _attention_lines(
    notice: evaluation.Attention, quarantined: list[QuarantinedMessage]
) -> list[str]:
    lines = []
    if quarantined:
        lines.append(f"{len(quarantined)} message(s) could not be read and were set aside:")
        lines.extend(f"  {q.location}: {q.error}" for q in quarantined[:10])
    if notice.set_aside:
        lines.append(
            f"{len(notice.set_aside)} thread(s) could not be evaluated and were set aside:"
        )
        lines.extend(f"  {line}" for line in notice.set_aside[:10])
    if notice.untimed:
        lines.append(
            f"{len(notice.untimed)} message(s) carry no usable time and are not measured: "
            + ", ".join(notice.untimed[:10])
        )
    if notice.unlisted_senders:
        lines.append(
            "Agency addresses that wrote to clients but are not listed as [[staff]] "
            "(their replies do not count): " + ", ".join(notice.unlisted_senders)
        )
    return lines


def _print_requests(fmt: str, found: services.Report, settings: Settings) -> None:
    if fmt == "json":
        print(output.requests_document(found.generated_at, found.requests, found.lessons))
    elif fmt == "csv":
        sys.stdout.write(output.requests_csv(found.requests, found.lessons))
    else:
        print(output.requests_table(found.requests, settings.policy.timezone))


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    zone = ZoneInfo(settings.policy.timezone)
    now = _now(args, settings)
    with _store(settings) as store:
        message_id = args.message_id
        if message_id is None:
            if not args.subject.strip():
                raise UsageError("--subject: give some words of the subject")
            try:
                message_id = services.conversation_with_subject(settings, store, args.subject, now)
            except services.SeveralConversations as several:
                for match in several.matches:
                    print(f"  {match.arrived_at.astimezone(zone):%Y-%m-%d %H:%M}  {match.key}")
                return _fail(several, EXIT_FAILURE)
        found = services.explain(settings, store, message_id, now)
    print(output.explanation_text(found, settings.policy.timezone))
    return 0


def cmd_poll(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.sync import SyncHistory, poll_all

    now = _now(args, settings)
    with _store(settings) as store:
        if args.force_login:
            store.clear_login_refusals()
        history = SyncHistory(keeps_sessions=False, refusals=store, progress=terminal_progress())
        results = poll_all(settings, store, now, history)
        evaluation.refresh_requests(settings, store, now)
    failed = False
    for result in results:
        if result.skipped:  # not read: as much a failure to cron as the refusal it waits out
            failed = True
            print(f"{result.mailbox}: skipped ({result.skipped})")
            continue
        print(f"{result.mailbox}: fetched {result.fetched}, {result.new_messages} new")
        for error in result.errors:
            failed = True
            print(f"  error: {error}", file=sys.stderr)
    return EXIT_FAILURE if failed else 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.adapters.smtp import TransportError

    print(f"configuration {settings.source}: ok")
    policy = settings.policy
    escalation_times = (policy.nudges.directors_after, *(t.directors_after for t in policy.tiers))
    if policy.directors and all(after is None for after in escalation_times):
        print("directors: off until [nudges] directors_after (or a tier's) says when to escalate")
    usable, database_line = database_check(settings)
    print(database_line if usable else f"database: FAILED: {database_line}")
    failed = not usable
    if usable:
        with _store(settings) as store:  # a login's outcome replaces a refusal polls wait on
            failed |= _check_mailboxes(settings, store)
    else:
        failed |= _check_mailboxes(settings, None)
    mailer = make_mailer(settings)
    if settings.smtp is None or mailer is None:
        print("smtp: not configured (nudges and digests cannot be sent)")
    else:
        try:
            mailer.check()
            print(f"smtp {settings.smtp.host}:{settings.smtp.port}: login ok")
        except (TransportError, ConfigError) as error:
            failed = True
            print(f"smtp: FAILED: {error}")
    return EXIT_FAILURE if failed else 0


def _check_mailboxes(settings: Settings, store: Store | None) -> bool:
    """A line or two per mailbox; True when one failed. With the store, a login's outcome is
    what the polls go by from now on (a refused login is retried by `check`)."""
    from mailwatch.adapters.imap import MailboxError, check_mailbox
    from mailwatch.sync import check_login

    failed = False
    for mailbox in settings.mailboxes:
        waive_folder = settings.sync.waive_folder
        try:
            lines = (
                check_mailbox(mailbox, waive_folder)
                if store is None
                else check_login(mailbox, waive_folder, store, utc_now())
            )
        except (MailboxError, ConfigError) as error:
            failed = True
            print(f"{mailbox.name}: FAILED: {str(error).removeprefix(f'{mailbox.name}: ')}")
            continue
        for line in lines:
            print(line)  # each line names its mailbox
    return failed


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate_store(settings)
    print("database schema is up to date")
    return 0


def cmd_nudge(args: argparse.Namespace, settings: Settings) -> int:
    """The nudges that are due, then the alerts (as the daemon's nudge job does). Alerts
    are about the system as it is now: a `--now` elsewhere would start or end problems
    that are not so, so a preview or a re-check of another instant checks none."""
    from mailwatch.adapters.smtp import NotConfigured
    from mailwatch.alerts import check_alerts
    from mailwatch.nudging import send_due_nudges

    now = _now(args, settings)
    mailer, renderer = make_mailer(settings), make_renderer()
    with _store(settings) as store:
        try:
            run = send_due_nudges(
                settings, store, now, mailer=mailer, renderer=renderer, dry_run=args.dry_run
            )
        except NotConfigured as error:
            print(f"mailwatch: {error}", file=sys.stderr)
            return EXIT_FAILURE
        alerts = (
            None
            if args.now
            else check_alerts(
                settings, store, now, mailer=mailer, renderer=renderer, dry_run=args.dry_run
            )
        )
    for line in run.lines or ["No nudge is due."]:
        print(line)
    for line in alerts.lines if alerts else []:
        print(line)
    return EXIT_FAILURE if run.failures or (alerts and alerts.failed) else 0


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.adapters.smtp import NotConfigured
    from mailwatch.digests import send_digests

    output_dir = _writable_directory("--output", Path(args.output)) if args.output else None
    with _store(settings) as store:
        try:
            run = send_digests(
                settings,
                store,
                _now(args, settings),
                args.period,
                mailer=make_mailer(settings),
                renderer=make_renderer(),
                dry_run=args.dry_run,
                output_dir=output_dir,
            )
        except NotConfigured as error:
            print(f"mailwatch: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(f"{run.period.label} ({run.period.key}): {len(run.digests)} digest(s)")
    for line in run.lines:
        print(line)
    if run.written:
        print(f"wrote {len(run.written)} files to {output_dir}")
    return EXIT_FAILURE if run.failed else 0


def cmd_client_report(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.client_reports import UnknownAccount, build_client_report

    output_dir = _writable_directory("--output", Path(args.output)) if args.output else None
    now, renderer = _now(args, settings), make_renderer()
    with _store(settings) as store:
        try:
            report = build_client_report(settings, store, now, args.account, args.period, renderer)
        except UnknownAccount as error:
            raise UsageError(str(error)) from None
    if output_dir is None:
        print(report.render(args.format).rstrip("\n"))
    else:
        print(f"wrote {report.write(output_dir, args.format)}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.daemon import Daemon

    logging.getLogger().setLevel(logging.INFO)  # a daemon's journal should say what it does
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not every job start
    with _store(settings) as store:  # an outdated schema: refused, naming `mailwatch migrate`
        if args.force_login:
            store.clear_login_refusals()
        return Daemon(settings, store).run()


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.health import health_problems

    with _store(settings) as store:
        problems = health_problems(settings, store, utc_now())
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_FAILURE
    print(f"healthy: {len(settings.mailboxes)} mailbox(es) synced recently, last sends ok")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.health import BackupUnsupported, backup

    destination = Path(args.path)
    if destination.is_dir():
        raise UsageError(
            f"{destination}: is a folder; name the backup file, e.g. {destination}/mailwatch.db"
        )
    _writable_directory("backup", destination.parent, create=False)
    with _store(settings) as store:
        try:
            backup(store, destination)
        except BackupUnsupported as error:
            print(f"mailwatch: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(f"backed up to {args.path}")
    return 0


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.privacy import apply_retention

    with _store(settings) as store:
        done = apply_retention(settings, store, _now(args, settings))
    when = done.cutoff.astimezone(ZoneInfo(settings.policy.timezone))
    print(
        f"deleted {done.deleted} message(s) that arrived before {when:%Y-%m-%d %H:%M} "
        f"(retention_days = {settings.retention_days}); computed requests are kept"
    )
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.privacy import export_address

    address = _address(args.address)
    with _store(settings) as store:
        document = export_address(store, address, utc_now(), raw=args.raw)
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from mailwatch.privacy import EvaluationBusy, forget_address

    address = _address(args.address)
    if not args.yes:
        answer = input(
            f"Delete every conversation {address} took part in, and the address from "
            "the computed requests? This cannot be undone. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_FAILURE
    with _store(settings) as store:
        try:
            gone = forget_address(settings, store, address, utc_now())
        except EvaluationBusy as error:
            print(f"mailwatch: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(
        f"forgot {address}: {gone.messages} of its message(s) and {gone.conversation_messages} "
        f"other message(s) of the same conversations deleted; {gone.requests} request(s) kept "
        f"for the figures without it or their subject; {gone.claims} nudge/digest record(s) "
        f"and {gone.set_aside} set-aside message(s) deleted"
    )
    return 0


def _address(text: str) -> str:
    from mailwatch.privacy import normalise_address

    try:
        return normalise_address(text)
    except ValueError as error:
        raise UsageError(str(error)) from None


# ---------------------------------------------------------------- plumbing


def _writable_directory(argument: str, path: Path, create: bool = True) -> Path:
    """A folder the command can write its files into (made when `create`); else one line."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{argument} {path}: is a file, not a folder")
    if not path.exists() and not create:
        raise UsageError(f"{argument}: the folder {path} does not exist")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass  # proves that files can be written there before any work is done
    except OSError as error:
        raise UsageError(
            f"{argument} {path}: cannot write there: {error.strerror or error}"
        ) from None
    return path


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


Command = Callable[[argparse.Namespace, Settings], int]
FORCE_LOGIN_HELP = "log in now even where a login was refused within the hour, same secret"
REPORT_FILTERS = (
    ("--account", "NAME", "only this account's requests (repeatable: any of them)"),
    ("--responsible", "ADDRESS", "only requests this staff member answers for (repeatable)"),
    ("--status", "STATUS", "only met, breached, open, overdue or waived requests (repeatable)"),
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="configuration file (default: $MAILWATCH_CONFIG or ./mailwatch.toml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help='"json": one JSON object per line (default: [daemon] log_format, else "text")',
    )
    parser = argparse.ArgumentParser(
        prog="mailwatch",
        parents=[common],
        description="Measures and keeps the promise that every client email gets a human reply.",
    )
    parser.add_argument("--version", action="version", version=f"mailwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers: dict[str, Command] = {}

    def command(
        name: str, handler: Command, help: str, now: bool = False
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        if now:
            sub.add_argument(
                "--now", metavar="ISO8601", help="evaluate as of this instant instead of the clock"
            )
        handlers[name] = handler
        return sub

    command("check", cmd_check, "validate the configuration and connect to every mailbox and SMTP")
    sub = command(
        "poll", cmd_poll, "one sync pass over every mailbox, then re-evaluate requests", now=True
    )
    sub.add_argument("--force-login", action="store_true", help=FORCE_LOGIN_HELP)
    sub = command(
        "import", cmd_import, "backfill history from mbox, maildir or .eml files", now=True
    )
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("--mailbox", metavar="NAME", help="name the mailbox the files came from")
    sub.add_argument("--sent", action="store_true", help="the files are a Sent folder")
    sub = command("status", cmd_status, "requests open or overdue now, oldest first", now=True)
    sub.add_argument("--format", choices=("table", "json"), default="table")
    sub = command("report", cmd_report, "every request received in [since, until)", now=True)
    sub.add_argument("--since", metavar="DATE")
    sub.add_argument("--until", metavar="DATE")
    sub.add_argument("--format", choices=("table", "json", "csv"), default="table")
    sub.add_argument(
        "--as-reported",
        choices=("week", "month", "quarter"),
        help="the last complete period's figures as its digest first showed them, and today's",
    )
    for option, metavar, shows in REPORT_FILTERS:
        sub.add_argument(option, metavar=metavar, action="append", default=[], help=shows)
    add_record_commands(command, _now)
    cli_answers.add_commands(command)
    cli_lessons.add_commands(command)
    sub = command(
        "explain", cmd_explain, "show why: the thread of a message and what counted", now=True
    )
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("message_id", metavar="MESSAGE_ID", nargs="?")
    which.add_argument("--subject", metavar="TEXT", help="find the conversation by its subject")
    command("migrate", cmd_migrate, "apply database schema migrations")
    sub = command("nudge", cmd_nudge, "send the nudges that are due", now=True)
    sub.add_argument("--dry-run", action="store_true", help="print them; send and claim nothing")
    sub = command("digest", cmd_digest, "send the compliance digests of the last period", now=True)
    sub.add_argument("--period", choices=("week", "month", "quarter"), default="week")
    sub.add_argument("--dry-run", action="store_true", help="build them; send and claim nothing")
    sub.add_argument("--output", metavar="DIR", help="also write each digest as .eml, .html, .json")
    sub = command(
        "client-report",
        cmd_client_report,
        "the service report for one client for the last complete period",
        now=True,
    )
    sub.add_argument("account", metavar="ACCOUNT", help="an [[accounts]] name")
    sub.add_argument("--period", choices=("month", "quarter"), default="month")
    sub.add_argument("--format", choices=("html", "json", "csv"), default="html")
    sub.add_argument("--output", metavar="DIR", help="write the file there instead of printing it")
    sub = command(
        "run", cmd_run, "the daemon: poll, nudge and send digests on schedule until stopped"
    )
    sub.add_argument("--force-login", action="store_true", help=FORCE_LOGIN_HELP)
    command("health", cmd_health, "exit 1, saying why, when syncing or sending is failing")
    sub = command("backup", cmd_backup, "write a consistent copy of the SQLite database")
    sub.add_argument("path", metavar="PATH")
    command(
        "retention",
        cmd_retention,
        "delete stored messages older than retention_days (the daemon does it daily)",
        now=True,
    )
    sub = command("export", cmd_export, "print as JSON everything stored about an address")
    sub.add_argument("address", metavar="ADDRESS")
    sub.add_argument("--raw", action="store_true", help="include the raw header blocks")
    sub = command(
        "forget", cmd_forget, "delete an address's conversations; requests stay, anonymous"
    )
    sub.add_argument("address", metavar="ADDRESS")
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    demo_help = "a self-contained demonstration on a local IMAP server with sample mail"
    commands.add_parser("demo", help=demo_help, description=demo_help)  # main() runs it
    return parser, handlers


@output.escaped_terminal()  # Message-IDs, subjects and file names are a stranger's text
def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    log_format = getattr(args, "log_format", None)
    configure_logging(getattr(args, "verbose", False), log_format or "text")
    settings: Settings | None = None
    try:
        if args.command == "demo":  # it writes its own configuration
            from mailwatch.demo import run_demo

            return run_demo(main)
        settings = load_settings(config_path(getattr(args, "config", None)))
        configure_logging(getattr(args, "verbose", False), log_format or settings.daemon.log_format)
        status = handlers[args.command](args, settings)
        sys.stdout.flush()  # here, where a reader that stopped reading is caught below
        return status
    except (ConfigError, UsageError) as error:
        return _fail(error, EXIT_USAGE)
    except DatabaseProblem as problem:
        return _fail(problem, EXIT_USAGE if problem.configuration else EXIT_FAILURE)
    except (services.UnknownMessage, SchemaMismatch) as error:
        return _fail(error, EXIT_FAILURE)
    except DBAPIError as error:  # the database failed after it was opened (a server restart)
        where = shown_url(settings.database_url) if settings else "?"
        return _fail(f"database {where}: {' '.join(str(error.orig).split())}", EXIT_FAILURE)
    except KeyboardInterrupt:  # what poll and import stored is kept: running again goes on
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `mailwatch report | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as error:
        if getattr(args, "verbose", False):
            raise  # the traceback, for a bug report
        return _fail(
            f"{type(error).__name__}: {error} (run again with -v for details)", EXIT_FAILURE
        )


def _fail(problem: object, status: int) -> int:
    """The one line a failure gets on stderr."""
    print(f"mailwatch: {' '.join(str(problem).split())}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
