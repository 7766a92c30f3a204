"""A lesson as its recordings leave it (the fold behind `annotate` and `lessons`)."""

from __future__ import annotations

from mailwatch.core.lessons import LessonRecord, lessons_from
from tests.core.factory import at

C1 = "<c1@acme.example>"


def record(day: int, **given) -> LessonRecord:
    return LessonRecord(message_key=C1, made_by="head@rouge.example", made_at=at(day), **given)


def test_a_new_reason_replaces_the_old_and_keeps_the_action_and_owner():
    lesson = lessons_from(
        [
            record(1, reason="Nobody saw it", category="other"),
            record(2, action="Add a rule", owner="bob@rouge.example"),
            record(3, reason="Sent to the wrong inbox", category="misrouted"),
        ]
    )[C1]

    assert (lesson.reason, lesson.category, lesson.recorded_at) == (
        "Sent to the wrong inbox",
        "misrouted",
        at(3),
    )
    assert (lesson.action, lesson.owner) == ("Add a rule", "bob@rouge.example")


def test_a_change_after_the_lesson_was_resolved_opens_it_again():
    resolved = [record(1, reason="Nobody saw it"), record(2, resolved=True, note="rule added")]

    assert lessons_from(resolved)[C1].resolved_at == at(2)
    reopened = lessons_from([*resolved, record(3, action="Train the team")])[C1]
    assert reopened.is_open and reopened.resolution_note is None


def test_recordings_apply_in_the_order_made_not_the_order_given():
    lesson = lessons_from([record(2, resolved=True), record(1, reason="Nobody saw it")])[C1]

    assert lesson.resolved_at == at(2)


def test_an_action_or_a_resolution_without_a_reason_makes_no_lesson():
    assert lessons_from([record(1, action="Add a rule"), record(2, resolved=True)]) == {}
