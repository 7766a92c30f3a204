"""Compliance digests: periods, figures, sending once, and the files of --output."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from mailwatch import digests
from mailwatch.adapters.render import RenderedEmail, Renderer
from mailwatch.bootstrap import make_mailer, make_renderer
from mailwatch.config import MailboxSettings, Secret, Settings, SmtpSettings
from mailwatch.core.model import Waiver
from mailwatch.core.periods import last_complete, previous
from mailwatch.store.repository import Store, StoredMessage
from tests.core.factory import at, client, staff
from tests.core.factory import policy as agency_policy
from tests.fixtures.smtp import SmtpSink

NOW = at(7, 8)  # Monday 30 November 2026, 08:00 UTC: the week of 23 November is complete
HEAD = "head@rouge.example"

EXPECTED_AGENCY = {
    "requests": 6,
    "met": 2,
    "breached": 1,
    "overdue": 1,
    "open": 1,
    "waived": 1,
    "compliance": 0.5,
    "median_response_seconds": 7200,
    "p90_response_seconds": 97200,
}


def mailbox(name: str) -> MailboxSettings:
    return MailboxSettings(
        name=name,
        host="127.0.0.1",
        port=143,
        security="none",
        username=name,
        password=Secret("env UNUSED"),
    )


def send_digests(settings: Settings, store: Store, now, *args, **options) -> digests.DigestRun:
    """The pass with the mailer and renderer the command line and the daemon give it."""
    mailer, renderer = make_mailer(settings), make_renderer()
    return digests.send_digests(
        settings, store, now, *args, mailer=mailer, renderer=renderer, **options
    )


def settings_for(sink: SmtpSink, store_url: str = "sqlite://") -> Settings:
    return Settings(
        source=Path("mailwatch.toml"),
        agency_name="Rouge",
        policy=agency_policy(timezone="UTC"),
        database_url=store_url,
        mailboxes=(mailbox("alice"), mailbox("bob")),
        smtp=SmtpSettings(
            host=sink.host,
            port=sink.port,
            security="none",
            sender="Mailwatch <mailwatch@rouge.example>",
            timeout=5.0,
        ),
    )


@pytest.fixture
def week(store: Store) -> Store:
    return add_week(store)


def add_week(store: Store) -> Store:
    """A week with known figures (24h target): 2 met, 1 breached, 1 overdue, 1 open, 1 waived."""
    messages = [
        client("a@acme.example", at(0, 9), "Banner"),
        staff("ra@rouge.example", at(0, 11), refs=("<a@acme.example>",)),  # 2h: met
        client("b@acme.example", at(1, 9), "Invoice"),
        staff("rb@rouge.example", at(2, 12), refs=("<b@acme.example>",)),  # 27h: breached
        client("c@acme.example", at(2, 10), "Logo files"),  # never answered: overdue
        client("d@acme.example", at(3, 9), "Newsletter"),  # waived
        client("e@acme.example", at(6, 20), "Sunday question"),  # open at NOW
        client("f@globex.example", at(0, 10), "Globex login", frm="ann@globex.example"),
        staff(
            "rf@rouge.example",
            at(0, 10, 30),
            refs=("<f@globex.example>",),
            frm="carol@rouge.example",
            to=("ann@globex.example",),
        ),  # 30m: met
        client("p@acme.example", at(-7, 9), "Last week"),
        staff("rp@rouge.example", at(-7, 10), refs=("<p@acme.example>",)),  # previous week: met
    ]
    store.add_messages(
        [StoredMessage(m, b"Subject: x\r\n\r\n", location=f"test:{m.key}") for m in messages]
    )
    store.add_waiver(Waiver("<d@acme.example>", "cli: alice", at(3, 10), "newsletter, no reply"))
    store.claim("nudge-skipped", "<c@acme.example>|breach", HEAD, at(3, 12))
    store.mark_failed(
        "nudge-skipped",
        "<c@acme.example>|breach",
        HEAD,
        "skipped: fell due Thu 10:00, more than 2h ago",
        True,
        at(3, 12),
    )
    store.record_sync("alice", None, True, None, at(7, 7, 58))
    store.record_sync("bob", None, False, "LOGIN failed", at(4, 9))
    store.record_sync("bob", None, True, None, at(7, 7, 58))
    return store


def by_recipient(sink: SmtpSink) -> dict[str, object]:
    return {m.rcpt_tos[0]: m.message for m in sink.messages}


@pytest.mark.parametrize(
    ("kind", "now", "key", "start", "end"),
    [
        ("week", "2026-11-30T08:00Z", "week:2026-W48", "2026-11-23", "2026-11-30"),
        ("week", "2026-11-29T23:59Z", "week:2026-W47", "2026-11-16", "2026-11-23"),
        ("week", "2027-01-04T00:00Z", "week:2026-W53", "2026-12-28", "2027-01-04"),
        ("month", "2027-01-01T00:00Z", "month:2026-12", "2026-12-01", "2027-01-01"),
        ("month", "2026-03-31T12:00Z", "month:2026-02", "2026-02-01", "2026-03-01"),
        ("quarter", "2026-11-30T08:00Z", "quarter:2026-Q3", "2026-07-01", "2026-10-01"),
        ("quarter", "2026-02-01T00:00Z", "quarter:2025-Q4", "2025-10-01", "2026-01-01"),
    ],
)
def test_the_last_complete_period_before_now(kind, now, key, start, end):
    instant = datetime.fromisoformat(now.replace("Z", "+00:00"))
    period = last_complete(kind, instant, "UTC")
    assert (period.key, period.start.date().isoformat(), period.end.date().isoformat()) == (
        key,
        start,
        end,
    )


def test_a_week_starts_at_monday_midnight_in_the_agency_timezone_across_dst():
    # Sunday 29 March 2026 is the EU spring-forward day: that week lasts 167 hours.
    period = last_complete("week", datetime(2026, 3, 30, 7, tzinfo=UTC), "Europe/Berlin")
    assert period.start == datetime(2026, 3, 22, 23, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert previous(period, "Europe/Berlin").end == period.start


def test_the_head_gets_the_agency_figures_and_the_trend(smtp_server, week):
    run = send_digests(settings_for(smtp_server), week, NOW)
    assert run.period.key == "week:2026-W48"
    head = by_recipient(smtp_server)[HEAD]
    assert head["Auto-Submitted"] == "auto-generated"
    assert head["Subject"] == (
        "Rouge response times, week 48 of 2026 (23–29 Nov): 50% answered in time (the whole agency)"
    )
    text = head.get_body(("plain",)).get_content()
    assert "Compliance: 50%  (2 met, 1 breached, 1 overdue)" in text
    assert "6 received; 1 still open, 1 waived" in text
    assert "median 2h, p90 27h" in text
    assert "Compliance down 50 points from 100% in week 47" in text
    assert "Acme Ltd: 33% (5 requests: 1 met, 1 breached, 1 overdue, 1 open, 1 waived)" in text
    assert "Globex: 100% (1 request: 1 met" in text
    assert 'Acme Ltd: "Newsletter", by cli: alice: newsletter, no reply' in text
    assert "breach for head@rouge.example: skipped: fell due Thu 10:00" in text
    assert "Sync gaps (figures may be incomplete): bob: errors in the period" in text
    worst = text.split("Longest waits")[1]
    assert worst.index("Logo files") < worst.index("Invoice") < worst.index("Banner")
    html = head.get_body(("html",)).get_content()
    assert "50%" in html and "<script" not in html and "src=" not in html


def test_managers_and_backups_get_the_figures_of_their_own_accounts(smtp_server, week):
    send_digests(settings_for(smtp_server), week, NOW)
    mails = by_recipient(smtp_server)
    assert sorted(mails) == [
        "alice@rouge.example",
        "bob@rouge.example",
        "carol@rouge.example",
        HEAD,
    ]
    alice = mails["alice@rouge.example"].get_body(("plain",)).get_content()
    carol = mails["carol@rouge.example"].get_body(("plain",)).get_content()
    assert "Compliance: 33%" in alice and "Globex" not in alice
    assert "Compliance: 100%" in carol and "Acme" not in carol
    assert "Acme Ltd, Globex" in mails["bob@rouge.example"]["Subject"]


class CollectorWatchingRenderer(Renderer):
    """The packaged templates, noting whether Python's cyclic garbage collector was on as
    each digest was rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.collecting: list[bool] = []

    def render(self, name: str, context: dict[str, Any]) -> RenderedEmail:
        self.collecting.append(gc.isenabled())
        return super().render(name, context)


def test_a_period_s_digests_are_built_with_the_cyclic_collector_paused_and_it_runs_after(
    smtp_server, week
):
    renderer = CollectorWatchingRenderer()
    period = last_complete("week", NOW, "UTC")

    built = digests.build_digests(settings_for(smtp_server), week, NOW, period, renderer)

    assert renderer.collecting == [False] * len(built) and len(built) == 4
    assert gc.isenabled()


def test_a_digest_is_sent_once_only_even_after_a_restart(smtp_server, week, store_url):
    settings = settings_for(smtp_server, store_url)
    send_digests(settings, week, NOW)
    again = send_digests(settings, week, at(7, 9))
    restarted = Store(store_url)
    try:
        third = send_digests(settings, restarted, at(7, 10))
    finally:
        restarted.close()
    assert len(smtp_server.messages) == 4
    assert again.sent == [] and third.sent == []
    assert {c.key for c in week.claims("digest")} == {"week:2026-W48"}


def test_a_temporary_failure_is_sent_on_the_next_run(smtp_server, week):
    settings = settings_for(smtp_server)
    smtp_server.answer_next("451 4.3.0 Try again later")
    first = send_digests(settings, week, NOW)
    assert len(first.failed) == 1 and len(smtp_server.messages) == 3
    second = send_digests(settings, week, at(7, 9))
    assert second.sent == [first.failed[0][0]] and len(smtp_server.messages) == 4


def test_output_writes_eml_html_and_json_for_each_digest(smtp_server, week, tmp_path):
    run = send_digests(settings_for(smtp_server), week, NOW, dry_run=True, output_dir=tmp_path)
    assert smtp_server.messages == [] and week.claims("digest") == []
    stem = tmp_path / "week-2026-W48-head@rouge.example"
    assert {p.name for p in run.written} >= {
        f"{stem.name}.eml",
        f"{stem.name}.html",
        f"{stem.name}.json",
    }
    assert len(run.written) == 12
    figures = json.loads(Path(f"{stem}.json").read_text())
    assert figures["summary"] == EXPECTED_AGENCY
    assert figures["accounts"]["Globex"]["met"] == 1
    assert figures["managers"]["alice@rouge.example"]["requests"] == 5
    assert figures["previous"]["summary"]["compliance"] == 1.0
    assert [w["subject"] for w in figures["waivers"]] == ["Newsletter"]
    assert figures["sync"]["gaps"][0]["mailbox"] == "bob"
    eml = message_from_bytes(Path(f"{stem}.eml").read_bytes(), policy=policy.default)
    assert eml["To"] == HEAD and eml["X-Mailwatch"] == "digest"
    assert Path(f"{stem}.html").read_text().strip() == eml.get_body(("html",)).get_content().strip()
    assert (Path(f"{stem}.json").stat().st_mode & 0o077) == 0


def test_a_monthly_digest_covers_the_calendar_month(smtp_server, week):
    run = send_digests(settings_for(smtp_server), week, at(8, 8), "month", dry_run=True)
    assert run.period.key == "month:2026-11"
    head = next(d for d in run.digests if d.recipient == HEAD)
    assert head.figures["summary"]["requests"] == 7  # this week's six and last week's one


def test_a_long_wait_whose_client_cites_a_reply_never_seen_says_how_to_record_it(
    smtp_server, store
):
    cited = client(
        "g@acme.example", at(0, 9), "Re: Hosting renewal", refs=("<lost-reply@rouge.example>",)
    )
    plain = client("h@acme.example", at(0, 10), "Logo files")
    store.add_messages(
        [StoredMessage(m, b"Subject: x\r\n\r\n", location=f"test:{m.key}") for m in (cited, plain)]
    )

    send_digests(settings_for(smtp_server), store, NOW)

    head = by_recipient(smtp_server)[HEAD]
    text = head.get_body(("plain",)).get_content()
    html = head.get_body(("html",)).get_content()
    hint = "a reply may have been sent from a mailbox mailwatch does not watch"
    worst = text.split("Longest waits")[1]
    assert worst.count(hint) == 1 and html.count(hint) == 1
    assert "mailwatch answered '<g@acme.example>' --at DATE" in worst
