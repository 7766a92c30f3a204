"""The agency digest's sections past the figures, on SQLite and PostgreSQL: busiest hours,
senders nobody configured, accounts gone quiet, open lessons by owner."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailwatch import digests
from mailwatch.bootstrap import make_renderer
from mailwatch.cli import main
from mailwatch.config import CheckInSettings, Settings, load_settings
from mailwatch.core.lessons import Lesson
from mailwatch.core.model import Account, Message
from mailwatch.core.periods import last_complete
from mailwatch.evaluation import refresh_requests
from mailwatch.store.repository import Store, StoredMessage
from tests.core.factory import at, client, staff
from tests.core.factory import policy as agency_policy

NOW = at(7, 8)  # Monday 30 November 2026, 08:00 UTC: the week of 23 November is complete
HEAD = "head@rouge.example"
ALICE = "alice@rouge.example"
CAROL = "carol@rouge.example"


def settings_of(store_url: str, **changes: object) -> Settings:
    settings = Settings(
        source=Path("mailwatch.toml"),
        agency_name="Rouge",
        policy=agency_policy(timezone="UTC"),
        database_url=store_url,
    )
    return replace(settings, **changes)


def add(store: Store, *messages: Message) -> None:
    store.add_messages(
        [StoredMessage(m, b"Subject: x\r\n\r\n", location=f"test:{m.key}") for m in messages]
    )


def digests_at(settings: Settings, store: Store, now=NOW) -> dict[str, digests.Digest]:
    period = last_complete("week", now, settings.policy.timezone)
    built = digests.build_digests(settings, store, now, period, make_renderer())
    return {digest.recipient: digest for digest in built}


def text_of(digest: digests.Digest) -> str:
    return digest.rendered.text


class _Grid(HTMLParser):
    """The cells of the first table after the "Busiest hours" heading, as text: what a
    reader sees without colour."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._heading_seen = False
        self._in_grid = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and self._heading_seen and not self.rows:
            self._in_grid = True
        elif self._in_grid and tag == "tr":
            self.rows.append([])
        elif self._in_grid and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._in_grid = False

    def handle_data(self, data):
        self._heading_seen = self._heading_seen or data.strip() == "Busiest hours"
        if self._cell is not None:
            self._cell.append(data)


def busiest_grid(html: str) -> list[list[str]]:
    parser = _Grid()
    parser.feed(html)
    return parser.rows


# ---------------------------------------------------------------- busiest hours


def test_busiest_hours_count_requests_and_breaches_at_their_agency_hour_alike_in_html_text_and_json(
    store, store_url
):
    add(
        store,
        # Tokyo is UTC+9 all year. Tuesday 09:xx in Tokyo: two requests, one never answered.
        client("a@acme.example", at(1, 0, 30), "Invoice"),
        client("b@acme.example", at(1, 0, 45), "Logo", frm="joe@acme.example"),
        staff("rb@rouge.example", at(1, 1), refs=("<b@acme.example>",), to=("joe@acme.example",)),
        # Monday 18:00 in Tokyo, answered in time
        client("c@acme.example", at(0, 9), "Banner", frm="kim@acme.example"),
        staff("rc@rouge.example", at(0, 10), refs=("<c@acme.example>",), to=("kim@acme.example",)),
    )
    settings = settings_of(store_url, policy=agency_policy(timezone="Asia/Tokyo"))

    head = digests_at(settings, store)[HEAD]

    busiest = head.figures["busiest_hours"]
    assert busiest["timezone"] == "Asia/Tokyo"
    assert busiest["requests"][1][9] == 2 and busiest["breaches"][1][9] == 1
    assert busiest["requests"][0][18] == 1 and busiest["breaches"][0][18] == 0
    assert sum(map(sum, busiest["requests"])) == 3 == head.figures["summary"]["requests"]
    assert sum(map(sum, busiest["breaches"])) == 1
    text = text_of(head)
    assert "Tue 09:00: 2 received, 1 breached or overdue" in text
    assert "Mon 18:00: 1 received" in text
    assert "Where breaches started" in text and "Tue 09:00: 1 of 2" in text
    grid = busiest_grid(head.rendered.html)
    assert grid[0] == ["", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert len(grid) == 25 and all(len(row) == 8 for row in grid)
    cells = {
        (row[0], day): row[1 + index] for row in grid[1:] for index, day in enumerate(grid[0][1:])
    }
    assert cells[("09", "Tue")] == "2/1"
    assert cells[("18", "Mon")] == "1"
    assert cells[("09", "Mon")] == "0"
    assert "busiest_hours" not in digests_at(settings, store)[ALICE].figures


# ---------------------------------------------------------------- senders nobody configured


def unconfigured_mail() -> list[Message]:
    return [
        # an outsider staff answered, twice in the week
        client("p1@partner.example", at(0, 9), "Joint pitch", frm="pat@partner.example"),
        staff(
            "rp1@rouge.example",
            at(0, 10),
            refs=("<p1@partner.example>",),
            to=("pat@partner.example",),
        ),
        client("p2@partner.example", at(2, 9), "Re: Joint pitch", frm="pat@partner.example"),
        # a client answered: configured
        client("a@acme.example", at(1, 9), "Banner"),
        staff("ra@rouge.example", at(1, 10), refs=("<a@acme.example>",)),
        # staff answering staff
        client("i@rouge.example", at(1, 11), "Lunch?", frm="bob@rouge.example"),
        staff(
            "ri@rouge.example", at(1, 12), refs=("<i@rouge.example>",), to=("bob@rouge.example",)
        ),
        # a mailing list staff replied to
        client(
            "n@vendor.example",
            at(3, 9),
            "Newsletter",
            frm="news@vendor.example",
            headers=(("list-id", "<news.vendor.example>"),),
        ),
        staff(
            "rn@rouge.example", at(3, 10), refs=("<n@vendor.example>",), to=("news@vendor.example",)
        ),
        # an outsider nobody answered
        client("s@spam.example", at(3, 11), "Offer", frm="sales@spam.example"),
    ]


def test_senders_staff_replied_to_that_no_account_covers_are_in_the_agency_digest(store, store_url):
    add(store, *unconfigured_mail())

    found = digests_at(settings_of(store_url), store)

    assert found[HEAD].figures["unconfigured"] == [
        {
            "address": "pat@partner.example",
            "domain": "partner.example",
            "messages": 2,
            "last_seen": "2026-11-25T09:00:00Z",
        }
    ]
    text = text_of(found[HEAD])
    assert "Senders nobody configured" in text
    assert (
        "pat@partner.example (partner.example): 2 message(s), last seen Wed 25 Nov 2026 09:00"
        in text
    )
    assert "pat@partner.example" in found[HEAD].rendered.html
    assert "unconfigured" not in found[ALICE].figures


def test_status_lists_the_senders_nobody_configured_of_the_last_30_days(
    store, store_url, tmp_path, capsys
):
    add(store, *unconfigured_mail())
    config = tmp_path / "mailwatch.toml"
    config.write_text(
        f"""
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
head_of_client_management = ["head@rouge.example"]

[database]
url = "{store_url}"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
"""
    )

    assert (
        main(["status", "--format", "json", "--now", "2026-11-30T08:00Z", "--config", str(config)])
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert [s["address"] for s in document["unconfigured"]] == ["pat@partner.example"]
    assert document["unconfigured"][0]["messages"] == 2

    main(["status", "--now", "2026-11-30T08:00Z", "--config", str(config)])
    table = capsys.readouterr().out
    assert "belong to no account" in table
    assert "  pat@partner.example (partner.example): 2 message(s), last 2026-11-25 09:00" in table

    main(["status", "--format", "json", "--now", "2027-01-04T08:00Z", "--config", str(config)])
    assert json.loads(capsys.readouterr().out)["unconfigured"] == []


# ---------------------------------------------------------------- accounts gone quiet


def quiet_mail() -> list[Message]:
    """Acme's last contact is 37 days before NOW; Globex hears only from staff, this week."""
    return [
        client("old@acme.example", at(-30, 9), "Contract"),
        staff("rold@rouge.example", at(-30, 10), refs=("<old@acme.example>",)),
        staff("g@rouge.example", at(2, 9), "News", frm=CAROL, to=("ann@globex.example",)),
    ]


def test_an_account_silent_longer_than_check_in_after_is_in_its_managers_and_the_agency_digest(
    store, store_url
):
    add(store, *quiet_mail())
    settings = settings_of(store_url)

    found = digests_at(settings, store)

    line = "No contact with Acme Ltd for 5 weeks — time for a check-in?"
    assert line in text_of(found[HEAD]) and line in found[HEAD].rendered.html
    assert f"(manager Alice ({ALICE}); last contact Sat 24 Oct 2026 10:00)" in text_of(found[HEAD])
    assert line in text_of(found[ALICE])
    assert "check-in" not in text_of(found[CAROL]) + text_of(found["bob@rouge.example"])
    assert found[HEAD].figures["quiet_accounts"] == [
        {
            "account": "Acme Ltd",
            "manager": ALICE,
            "last_contact": "2026-10-24T10:00:00Z",
            "silent_seconds": 37 * 86400 - 2 * 3600,
            "check_in_after_seconds": 28 * 86400,
            "text": line,
        }
    ]

    add(store, client("new@acme.example", at(7, 7), "Hello again"))
    again = digests_at(settings, store)
    assert again[HEAD].figures["quiet_accounts"] == []
    assert "check-in" not in text_of(again[HEAD]) + text_of(again[ALICE])


def test_check_in_after_false_turns_it_off_for_an_account(store, store_url):
    add(store, *quiet_mail())
    off = CheckInSettings(accounts={"Acme Ltd": None})

    found = digests_at(settings_of(store_url, check_ins=off), store)

    assert found[HEAD].figures["quiet_accounts"] == []
    assert found[ALICE].figures["quiet_accounts"] == []


def test_an_account_own_check_in_after_overrides_the_agency_one(store, store_url):
    add(store, *quiet_mail())
    own = CheckInSettings(after=None, accounts={"Globex": timedelta(days=2)})

    found = digests_at(settings_of(store_url, check_ins=own), store)

    assert [q["account"] for q in found[HEAD].figures["quiet_accounts"]] == ["Globex"]
    assert [q["account"] for q in found[CAROL].figures["quiet_accounts"]] == ["Globex"]


def test_mail_reduced_for_privacy_still_counts_as_contact(store, store_url):
    # Initech wrote before anyone configured it: its mail named no client and was reduced.
    add(
        store,
        client("i@initech.example", at(-25, 9), "Quote", frm="bill@initech.example"),
        staff(
            "ri@rouge.example",
            at(-25, 10),
            refs=("<i@initech.example>",),
            to=("bill@initech.example",),
        ),
    )
    before = settings_of(store_url)
    refresh_requests(before, store, NOW)
    assert store.messages_by_keys({"<i@initech.example>"})[0].subject == ""  # reduced
    initech = Account("Initech", domains=("initech.example",), manager=CAROL)
    policy = replace(before.policy, accounts=(*before.policy.accounts, initech))
    month = CheckInSettings(after=timedelta(days=35))

    quiet = digests_at(replace(before, policy=policy, check_ins=month), store)
    assert "Initech" not in [q["account"] for q in quiet[HEAD].figures["quiet_accounts"]]

    weeks = digests_at(replace(before, policy=policy), store)  # 28 days: quiet since then
    listed = {q["account"]: q for q in weeks[HEAD].figures["quiet_accounts"]}
    assert listed["Initech"]["last_contact"] == "2026-10-29T09:00:00Z"
    assert "No contact with Initech for 4 weeks" in text_of(weeks[CAROL])


AGENCY_FILE = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "UTC"
check_in_after = "14d"

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
check_in_after = false

[[accounts]]
name = "Globex"
domains = ["globex.example"]
check_in_after = "8d12h"

[[accounts]]
name = "Initech"
domains = ["initech.example"]
"""


def test_check_in_after_is_read_for_the_agency_and_each_account(tmp_path):
    config = tmp_path / "mailwatch.toml"
    config.write_text(AGENCY_FILE)

    check_ins = load_settings(config).check_ins

    assert check_ins.after_for("Acme Ltd") is None
    assert check_ins.after_for("Globex") == timedelta(days=8, hours=12)
    assert check_ins.after_for("Initech") == timedelta(days=14)
    config.write_text(AGENCY_FILE.replace('check_in_after = "14d"\n', ""))
    assert load_settings(config).check_ins.after_for("Initech") == timedelta(days=28)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('"14d"', '"4 weeks"', "agency.check_in_after"),
        ("false", "true", "accounts[0].check_in_after"),
    ],
)
def test_a_bad_check_in_after_is_refused_in_one_line(tmp_path, capsys, old, new, key):
    config = tmp_path / "mailwatch.toml"
    config.write_text(AGENCY_FILE.replace(f"check_in_after = {old}", f"check_in_after = {new}"))

    assert main(["status", "--config", str(config)]) == 2

    error = capsys.readouterr().err.strip()
    assert f"{key}: expected a duration like" in error and "\n" not in error


# ---------------------------------------------------------------- open lessons


def test_open_lessons_are_listed_by_owner_with_how_long_each_has_been_open(
    store, store_url, monkeypatch
):
    add(
        store,
        client("b@acme.example", at(1, 9), "Invoice"),
        staff("rb@rouge.example", at(2, 12), refs=("<b@acme.example>",)),  # 27h: breached
        client("c@acme.example", at(2, 10), "Logo files", frm="joe@acme.example"),  # overdue
        client("d@acme.example", at(3, 10), "Hosting", frm="kim@acme.example"),
    )
    lessons = {
        "<b@acme.example>": Lesson(
            "<b@acme.example>",
            "Alice was ill",
            "staff absence",
            "head",
            at(3, 8),
            action="Backups watch the inbox",
            owner=ALICE,
        ),
        "<c@acme.example>": Lesson(
            "<c@acme.example>", "Sent to the wrong person", "misrouted", "head", at(4, 8)
        ),
        "<d@acme.example>": Lesson(
            "<d@acme.example>",
            "Waited on the host",
            "other",
            "head",
            at(4, 9),
            owner=ALICE,
            resolved_at=at(5, 9),
            resolved_by="head",
        ),
    }
    monkeypatch.setattr(digests, "lessons_as_of", lambda store, now: lessons)

    found = digests_at(settings_of(store_url), store)

    head = text_of(found[HEAD]).split("Open lessons by owner")[1]
    assert head.index(ALICE) < head.index("no owner yet")
    assert (
        'open 4d: Acme Ltd: "Invoice"; why: Alice was ill; action: Backups watch the inbox' in head
    )
    assert (
        'open 3d: Acme Ltd: "Logo files"; why: Sent to the wrong person; action: no action yet'
        in head
    )
    assert "Hosting" not in head  # resolved
    assert [(x["owner"], x["open_seconds"]) for x in found[HEAD].figures["open_lessons"]] == [
        (ALICE, 4 * 86400),
        (None, 3 * 86400),
    ]
    assert "Open lessons by owner" in found[HEAD].rendered.html
    alice = found[ALICE].figures["open_lessons"]
    assert [x["subject"] for x in alice] == ["Invoice"]
    assert "Logo files" not in text_of(found[ALICE]).split("Open lessons by owner")[1]
    assert found[CAROL].figures["open_lessons"] == []
