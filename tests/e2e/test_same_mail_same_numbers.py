"""The same mail gives the same numbers, whatever the order and the form it reached
mailwatch in: imported from files, or polled from a real IMAP server (issue 12;
response-clock.md, "Times" and "Threads")."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailwatch.cli import main
from tests.agency_week import CONFIG, FOLDERS, FORMATS, MAIL, copies_in, write_folder
from tests.fixtures.dovecot import HOST, DovecotServer, ImapUser
from tests.fixtures.stores import SqliteTemplate

END = "2024-12-31T00:00Z"  # every request answered or closed by expiry: nothing moves
MIDWEEK = "2024-12-04T10:00Z"  # Wednesday, after both clients wrote "Launch plan", before the reply
MONDAY = "2024-12-09T10:00Z"  # the renewal's reminder due, the late invoice not yet answered
# The first Monday at 11:00: the banner's shared copy had arrived (10:00:05), Alice's not (13:10)
BETWEEN_COPIES = "2024-12-02T11:00Z"
REPORTED_AT = (END, MIDWEEK, BETWEEN_COPIES)


class Agency:
    """A configuration and a fresh SQLite database in `root`, driven through the command line."""

    def __init__(self, root: Path, template: SqliteTemplate) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.config = root / "mailwatch.toml"
        self.config.write_text(CONFIG.format(url=template.copy(root / "mailwatch.db")))

    def mailwatch(self, *argv: str, config: Path | None = None) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--config", str(config or self.config), *argv])
        assert code == 0, out.getvalue()
        return out.getvalue()

    def import_folder(self, mailbox: str, folder: str, form: str, now: str = END) -> None:
        """The copies that had reached the folder by `now`, imported then."""
        arrived_by = datetime.fromisoformat(now)
        path = write_folder(self.root / "mail" / form, mailbox, folder, form, arrived_by)
        self.mailwatch("import", str(path), "--mailbox", mailbox, "--now", now)

    def poll(self, mailboxes: str, now: str) -> None:
        """One `mailwatch poll` of these [[mailboxes]] tables (then an evaluation)."""
        config = self.root / "poll.toml"
        config.write_text(self.config.read_text() + mailboxes)
        self.mailwatch("poll", "--now", now, config=config)

    def report_text(self, now: str) -> str:
        """`report --format json` as printed, but for its `generated_at` line."""
        text = self.mailwatch("report", "--format", "json", "--now", now)
        return re.sub(r'^ "generated_at": .*\n', "", text, count=1, flags=re.MULTILINE)

    def report(self, now: str) -> dict:
        return json.loads(self.report_text(now))


@pytest.fixture(scope="module")
def canonical(migrated_sqlite, tmp_path_factory) -> Agency:
    agency = Agency(tmp_path_factory.mktemp("canonical") / "agency", migrated_sqlite)
    for mailbox, folder in FOLDERS:
        agency.import_folder(mailbox, folder, "eml")
    return agency


def test_the_week_is_measured_from_each_message_s_earliest_arrival(canonical):
    requests = {r["opened_by"]: r for r in canonical.report(END)["requests"]}
    banner = requests["<banner@acme.example>"]
    # the shared mailbox's copy at 10:00:05, not Alice's at 13:10
    assert (banner["received_at"], banner["response_seconds"]) == ("2024-12-02T10:00:05Z", 7195)
    down = requests["<down@globex.example>"]
    assert (down["tier"], down["status"], down["response_seconds"]) == ("critical", "met", 2996)


def test_a_reply_all_answers_both_clients_and_equal_subjects_of_two_clients_stay_apart(canonical):
    requests = {r["opened_by"]: r for r in canonical.report(END)["requests"]}
    jane, hank = requests["<launch@acme.example>"], requests["<launch.hank@globex.example>"]
    assert jane["thread"] == hank["thread"]
    assert jane["answered_by"] == hank["answered_by"] == "<launch.re@rouge.example>"
    acme, initech = requests["<website@acme.example>"], requests["<website@initech.example>"]
    assert acme["thread"] != initech["thread"]
    assert (acme["status"], initech["status"]) == ("overdue", "met")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(FOLDERS),
    forms=st.lists(st.sampled_from(FORMATS), min_size=len(FOLDERS), max_size=len(FOLDERS)),
)
def test_any_order_and_mix_of_formats_gives_the_same_report(
    canonical, migrated_sqlite, tmp_path_factory, order, forms
):
    """Maildir, `.eml` files, or an mbox exported five days later (its From_ lines say so;
    the top Received header says when the mail arrived), imported folder by folder."""
    agency = Agency(tmp_path_factory.mktemp("permuted") / "agency", migrated_sqlite)
    for (mailbox, folder), form in zip(order, forms, strict=True):
        agency.import_folder(mailbox, folder, form)
    for now in REPORTED_AT:
        assert agency.report(now) == canonical.report(now)


class StaffMailboxes:
    """A Dovecot user for each staff mailbox of the week."""

    def __init__(self, dovecot: DovecotServer, secrets: Path) -> None:
        self.dovecot = dovecot
        self.users: dict[str, ImapUser] = {}
        self.tables: dict[str, str] = {}  # each mailbox's [[mailboxes]] table, no `folders`
        for name in dict.fromkeys(mailbox for mailbox, _ in FOLDERS):
            user = self.users[name] = dovecot.new_user(name)
            secret = secrets / name
            secret.write_text(user.password)
            self.tables[name] = (
                f'\n[[mailboxes]]\nname = "{name}"\nhost = "{HOST}"\nport = {dovecot.port}\n'
                f'security = "none"\nusername = "{user.username}"\npassword_file = "{secret}"\n'
            )

    def deliver(self, after: datetime | None, until: datetime) -> None:
        """APPEND the copies that reached their folder after `after` and by `until`, each with
        that time as its INTERNALDATE: the same as its top Received header, so a poll sees the
        arrivals an import does."""
        for mailbox, folder in FOLDERS:
            for raw, reached in copies_in(mailbox, folder, until):
                if after is None or reached > after:
                    self.dovecot.append(self.users[mailbox], folder, raw, reached)

    def polling(self, folders: Sequence[tuple[str, str]]) -> str:
        """The [[mailboxes]] tables that poll exactly these folders: a mailbox's folders in
        the order given, the mailboxes in the order of their first folder."""
        by_mailbox: dict[str, list[str]] = {}
        for mailbox, folder in folders:
            by_mailbox.setdefault(mailbox, []).append(folder)
        return "".join(
            f"{self.tables[mailbox]}folders = {json.dumps(names)}\n"
            for mailbox, names in by_mailbox.items()
        )


@pytest.fixture(scope="module")
def staff_mailboxes(dovecot, tmp_path_factory) -> StaffMailboxes:
    """The whole week, APPENDed once for the module."""
    staff = StaffMailboxes(dovecot, tmp_path_factory.mktemp("secrets"))
    staff.deliver(None, datetime.fromisoformat(END))
    return staff


@pytest.fixture(scope="module")
def polled_at_once(staff_mailboxes, migrated_sqlite, tmp_path_factory) -> Agency:
    """Every folder of every mailbox in one `mailwatch poll`."""
    agency = Agency(tmp_path_factory.mktemp("polled") / "agency", migrated_sqlite)
    agency.poll("".join(staff_mailboxes.tables.values()), END)
    return agency


@pytest.mark.dovecot
def test_the_week_polled_from_dovecot_reports_as_the_week_imported(polled_at_once, canonical):
    for now in REPORTED_AT:
        assert polled_at_once.report_text(now) == canonical.report_text(now)


@pytest.mark.dovecot
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(FOLDERS),
    new_poll=st.lists(st.booleans(), min_size=len(FOLDERS) - 1, max_size=len(FOLDERS) - 1),
)
# Always tried: each folder polled on its own, the reverse of the single poll's order (the
# shared mailbox's earlier copies before the managers' later ones, each Sent folder before
# the INBOX whose mail it answers).
@example(order=FOLDERS[::-1], new_poll=[True] * (len(FOLDERS) - 1))
def test_any_order_of_polling_the_folders_gives_the_same_report(
    staff_mailboxes, polled_at_once, migrated_sqlite, tmp_path_factory, order, new_poll
):
    """The folders polled in `order` into a fresh store: a folder starts a new `mailwatch
    poll` (and evaluation) where `new_poll` says so, else it joins the poll before it."""
    polls = [[order[0]]]
    for folder, starts_a_poll in zip(order[1:], new_poll, strict=True):
        if starts_a_poll:
            polls.append([folder])
        else:
            polls[-1].append(folder)
    agency = Agency(tmp_path_factory.mktemp("polled-in-order") / "agency", migrated_sqlite)
    for folders in polls:
        agency.poll(staff_mailboxes.polling(folders), END)
    for now in REPORTED_AT:
        assert agency.report_text(now) == polled_at_once.report_text(now)


ARRIVALS = sorted({reached for m in MAIL for _, _, reached in m.copies})


@pytest.mark.dovecot
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(FOLDERS),
    polled_at=st.sets(st.sampled_from(ARRIVALS), max_size=5),
)
def test_the_week_polled_as_it_arrives_gives_the_same_report(
    dovecot, polled_at_once, migrated_sqlite, tmp_path_factory, order, polled_at
):
    """Fresh mailboxes, filled as the week goes on and polled (their folders in `order`) at
    the instants of some arrivals, the arriving copy included, and at the end."""
    staff = StaffMailboxes(dovecot, tmp_path_factory.mktemp("secrets"))
    agency = Agency(tmp_path_factory.mktemp("polled-as-it-arrives") / "agency", migrated_sqlite)
    delivered = None
    for now in [*sorted(polled_at), datetime.fromisoformat(END)]:
        staff.deliver(delivered, now)
        agency.poll(staff.polling(order), now.isoformat())
        delivered = now
    for now in REPORTED_AT:
        assert agency.report_text(now) == polled_at_once.report_text(now)


@pytest.fixture
def known_by_monday(migrated_sqlite, tmp_path) -> Agency:
    """A store that only ever saw the mail that had arrived by MONDAY, evaluated then."""
    agency = Agency(tmp_path / "by-monday", migrated_sqlite)
    for mailbox, folder in FOLDERS:
        agency.import_folder(mailbox, folder, "eml", now=MONDAY)
    return agency


def digest_as_of_monday(agency: Agency, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """The lines `digest --dry-run` prints and the figures it writes."""
    digests = tmp_path / f"digests-{agency.root.name}"
    lines = agency.mailwatch("digest", "--dry-run", "--output", str(digests), "--now", MONDAY)
    figures = {path.name: path.read_bytes() for path in sorted(digests.glob("*.json"))}
    return lines.replace(str(digests), "DIR"), figures


def status_as_of_monday(agency: Agency, tmp_path: Path) -> dict:
    document = json.loads(agency.mailwatch("status", "--format", "json", "--now", MONDAY))
    del document["generated_at"]
    return document


AS_OF_MONDAY = {
    "status": status_as_of_monday,
    "report": lambda agency, tmp_path: agency.report(MONDAY),
    "digest": digest_as_of_monday,
    "nudge": lambda agency, tmp_path: agency.mailwatch("nudge", "--dry-run", "--now", MONDAY),
    "explain": lambda agency, tmp_path: agency.mailwatch(
        "explain", "<renewal@initech.example>", "--now", MONDAY
    ),
}


@pytest.mark.parametrize("command", AS_OF_MONDAY)
def test_a_command_as_of_a_past_instant_answers_as_a_store_that_knew_only_that_mail(
    command, canonical, known_by_monday, tmp_path
):
    """The canonical store was evaluated at the end of December; as of Monday the renewal's
    reminder is due and the invoice is overdue, though both were answered later that day."""
    later = canonical.report(END)
    answer = AS_OF_MONDAY[command](canonical, tmp_path)
    assert answer == AS_OF_MONDAY[command](known_by_monday, tmp_path)
    # looking at the past left the store as it was
    assert canonical.report(END) == later


def test_a_nudge_due_in_the_past_is_found_as_of_then(canonical, tmp_path):
    assert "<renewal@initech.example> [reminder]" in AS_OF_MONDAY["nudge"](canonical, tmp_path)
