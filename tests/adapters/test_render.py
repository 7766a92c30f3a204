"""Nudge emails as rendered from templates/nudge.*, parsed back as MIME and HTML."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from html.parser import HTMLParser

import jinja2
import pytest

from mailwatch.adapters import render as render_module
from mailwatch.adapters.render import SUBJECT_MAX, Renderer, clean_subject
from mailwatch.adapters.smtp import compose
from mailwatch.core.model import (
    Account,
    ClockKind,
    Message,
    Policy,
    Request,
    StaffMember,
    Status,
)
from mailwatch.core.nudges import Nudge
from mailwatch.nudge_mail import nudge_context

ALICE = "alice@rouge.example"
POLICY = Policy(
    agency_domains=("rouge.example",),
    timezone="Europe/London",
    staff=(StaffMember(ALICE, "Alice Smith", timezone="America/New_York"),),
    accounts=(Account("Acme", domains=("acme.example",), manager=ALICE),),
)
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 10:00 in New York


def nudge(subject: str, received_at: datetime, key: str, *, tier="standard", stage="warning"):
    target = timedelta(hours=24)
    deadline = received_at + target
    request = Request(
        account="Acme",
        thread=key,
        subject=subject,
        opened_by=key,
        received_at=received_at,
        messages=(key,),
        tier=tier,
        clock=ClockKind.CALENDAR,
        target_seconds=86400,
        deadline=deadline,
        responsible=(ALICE,),
        status=Status.OVERDUE if deadline < NOW else Status.OPEN,
        elapsed_seconds=int((NOW - received_at).total_seconds()),
    )
    reasons = (f"{stage}: 21h of 24h elapsed", "you manage Acme")
    return Nudge(request, stage, ALICE, received_at + target * 0.9, tier == "critical", reasons)


OVERDUE = nudge(
    "<script>alert('x')</script> Homepage", datetime(2026, 11, 23, 13, 0, tzinfo=UTC), "<a@acme>"
)
SOON = nudge("Hi\r\nBcc: evil@x", datetime(2026, 11, 23, 16, 40, tzinfo=UTC), "<b@acme>")
MESSAGES = {
    "<a@acme>": Message("<a@acme>", from_addr="eve@acme.example", from_name="Eve <b>Evil</b>"),
    "<b@acme>": Message("<b@acme>", from_addr="jo@acme.example", from_name="Jo Client"),
}


def render(nudges, others_waiting=0):
    waiting = [
        replace(SOON.request, opened_by=f"<other{n}@acme>", subject=f"Other {n}")
        for n in range(others_waiting)
    ]
    context = nudge_context(
        ALICE,
        nudges,
        waiting=waiting,
        policy=POLICY,
        messages=MESSAGES,
        now=NOW,
    )
    return Renderer().render("nudge", context)


class Page(HTMLParser):
    """Tags, attributes and visible text of an HTML document."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: dict[str, list[str]] = {}
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            self.attributes.setdefault(name, []).append(value or "")

    def handle_data(self, data):
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def test_one_overdue_request_says_so_in_the_subject():
    assert render([OVERDUE]).subject == (
        "Overdue: Acme — '<script>alert('x')</script> Homepage' waited 26h"
    )


def test_one_open_request_says_how_long_is_left_in_the_subject():
    one = replace(SOON, request=replace(SOON.request, subject="Homepage banner"))
    assert render([one]).subject == "Reply needed: Acme — 'Homepage banner' due in 1h 40m"


def test_several_requests_are_counted_in_the_subject_with_the_most_urgent_named():
    assert render([SOON, SOON]).subject == "2 client emails need a reply — Acme due in 1h 40m"
    assert render([OVERDUE, SOON]).subject == ("2 client emails need a reply — Acme overdue by 2h")


def test_a_client_subject_cannot_inject_headers():
    rendered = render([replace(SOON, request=replace(SOON.request, subject="Hi\r\nBcc: evil@x"))])
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    raw = compose("Mailwatch <mailwatch@rouge.example>", [ALICE], rendered, {}, NOW).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Reply needed: Acme — 'Hi Bcc: evil@x' due in 1h 40m"


def test_client_text_is_escaped_in_the_html_part():
    page = Page(render([OVERDUE, SOON]).html)
    assert "script" not in page.tags and "b" not in page.tags
    assert "<script>alert('x')</script> Homepage" in page.visible
    assert "Eve <b>Evil</b> <eve@acme.example>" in page.visible


def test_the_html_is_one_self_contained_column_without_scripts_or_remote_content():
    html = render([OVERDUE, SOON], others_waiting=3).html
    page = Page(html)
    assert not {"script", "img", "link", "iframe", "style", "form"} & set(page.tags)
    assert "src" not in page.attributes and "href" not in page.attributes
    assert not any(name.startswith("on") for name in page.attributes)
    assert "max-width:600px" in html


def test_each_request_shows_who_wrote_when_and_what_to_do_in_both_parts():
    rendered = render([OVERDUE, SOON], others_waiting=3)
    for part in (rendered.text, Page(rendered.html).visible):
        assert "2 client emails need a reply" in part
        assert "Times are in America/New_York" in part
        assert "Jo Client <jo@acme.example>" in part
        assert "Mon 23 Nov 11:40 (waited 22h 20m)" in part  # 16:40 UTC in New York
        assert "Tue 24 Nov 11:40" in part  # the deadline
        assert "1h 40m left" in part
        assert "verdue by 2h" in part  # "Overdue by 2h" in HTML, "overdue by 2h" in text
        assert "standard" in part and "warning" in part
        assert "you manage Acme" in part
        assert "mailwatch waive '<b@acme>'" in part
        assert "$NoReplyNeeded" in part
        assert "3 other client emails are still waiting" in part


def test_requests_are_listed_in_the_order_given_each_subject_on_one_line():
    text = render([OVERDUE, SOON]).text
    assert text.index('1. Acme: "<script>') < text.index('2. Acme: "Hi Bcc: evil@x"')


def test_a_critical_request_says_it_is_sent_at_any_hour():
    critical = nudge(
        "Site down", datetime(2026, 11, 24, 14, 30, tzinfo=UTC), "<b@acme>", tier="critical"
    )
    assert "critical: sent at any hour" in render([critical]).text


def test_the_parts_arrive_as_multipart_alternative():
    rendered = render([SOON])
    raw = compose("mailwatch@rouge.example", [ALICE], rendered, {"X-Mailwatch": "nudge"}, NOW)
    parsed = message_from_bytes(raw.as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Date"].datetime == NOW


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Hi\r\nBcc: evil@x", "Hi Bcc: evil@x"),
        ("tab\there\x00\x1b[31m", "tab here [31m"),
        ("line\u2028separator", "line separator"),
        ("bidi \u202eevil", "bidi evil"),
        ("  spaced   out \n", "spaced out"),
    ],
)
def test_a_subject_is_one_clean_line(raw, clean):
    assert clean_subject(raw) == clean


def test_a_long_subject_is_cut_to_160_characters():
    subject = clean_subject("x" * 500)
    assert len(subject) == SUBJECT_MAX and subject.endswith("…")


def test_a_missing_template_variable_is_an_error_not_a_blank(tmp_path):
    for suffix in ("subject.txt", "txt", "html"):
        (tmp_path / f"t.{suffix}").write_text("{{ missing }}")
    with pytest.raises(jinja2.UndefinedError):
        Renderer(tmp_path).render("t", {})


def test_only_the_html_part_is_escaped(tmp_path):
    for suffix in ("subject.txt", "txt", "html"):
        (tmp_path / f"t.{suffix}").write_text("{{ value }}")
    rendered = Renderer(tmp_path).render("t", {"value": "a < b & c"})
    assert rendered.text == rendered.subject == "a < b & c"
    assert rendered.html == "a &lt; b &amp; c"


def test_a_template_is_read_and_compiled_once_per_process(tmp_path, monkeypatch):
    for suffix in ("subject.txt", "txt", "html"):
        (tmp_path / f"t.{suffix}").write_text("{{ value }}")
    reads = []
    original = render_module._read
    monkeypatch.setattr(
        render_module, "_read", lambda root, name: reads.append(name) or original(root, name)
    )
    for value in ("one", "two", "three"):
        assert Renderer(tmp_path).render("t", {"value": value}).text == value
    assert sorted(reads) == ["t.html", "t.subject.txt", "t.txt"]


def test_a_nudge_at_the_deadline_itself_says_due_now_rather_than_less_than_a_minute_left():
    at_deadline = nudge("Homepage banner", NOW - timedelta(hours=24), "<c@acme>", stage="breach")
    rendered = render([at_deadline])
    assert rendered.subject == "Reply needed: Acme — 'Homepage banner' due now"
    for part in (rendered.text, Page(rendered.html).visible):
        assert "Due now" in part and "<1m" not in part
