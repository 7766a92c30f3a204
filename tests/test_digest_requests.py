"""What a digest run reads of the requests, on SQLite and PostgreSQL: the earlier periods
light, and in full only those a digest shows beyond their figures."""

from __future__ import annotations

from datetime import timedelta

from mailwatch.core.lessons import Lesson
from mailwatch.core.model import Status
from mailwatch.core.periods import last_complete
from mailwatch.digest_requests import digest_requests
from mailwatch.revisions import lookback
from mailwatch.store.repository import Store
from tests.core.factory import at, client, staff
from tests.test_digest_sections import NOW, add, settings_of

ANSWERED, UNANSWERED, THIS_WEEK = "answered", "unanswered", "this-week"  # keys: <name>


def key(name: str) -> str:
    return f"<{name}>"


def mail_of_two_weeks(store: Store) -> None:
    a_week_before = at(-7, 9)
    add(
        store,
        client(ANSWERED, a_week_before, "Logo files"),
        staff(
            "<re-answered@rouge.example>",
            a_week_before + timedelta(hours=2),
            "Re: Logo files",
            refs=(key(ANSWERED),),
        ),
        client(UNANSWERED, a_week_before + timedelta(hours=1), "Invoice query"),
        client(THIS_WEEK, at(1, 9), "Homepage banner"),
    )


def test_a_digest_reads_earlier_requests_in_full_only_when_it_shows_more_than_their_figures(
    store: Store, store_url: str
):
    settings = settings_of(store_url)
    mail_of_two_weeks(store)
    period = last_complete("week", NOW, "UTC")
    earlier = lookback(period, "UTC")

    found = digest_requests(settings, store, NOW, period, earlier, set(), {})
    lesson = Lesson(key(ANSWERED), "slow", "other", "head@rouge.example", NOW - timedelta(days=1))
    lessons = {key(ANSWERED): lesson}
    with_lesson = digest_requests(settings, store, NOW, period, earlier, set(), lessons)
    with_skipped = digest_requests(settings, store, NOW, period, earlier, {key(ANSWERED)}, {})

    # still unanswered: its status as of now needs the whole request
    assert [r.opened_by for r in found.requests] == [key(UNANSWERED), key(THIS_WEEK)]
    assert [sorted((o.opened_by, o.status) for o in week) for week in found.earlier] == [
        [],
        [],
        [],
        [(key(ANSWERED), Status.MET), (key(UNANSWERED), Status.OVERDUE)],
    ]
    every = [key(ANSWERED), key(UNANSWERED), key(THIS_WEEK)]
    assert [r.opened_by for r in with_lesson.requests] == every
    assert [r.opened_by for r in with_skipped.requests] == every
    assert with_lesson.earlier == found.earlier == with_skipped.earlier
