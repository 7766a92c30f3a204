"""The lessons-learnt log as recorded with `mailwatch annotate`: every recording kept, in
the order made, never changed, so that the log as of any instant can be read back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select

from mailwatch.core.lessons import LessonRecord
from mailwatch.store.db import Database, reading, writing
from mailwatch.store.tables import LESSON_RECORDS


class LessonStore(Database):
    def record_lesson(self, record: LessonRecord) -> None:
        with writing(self.engine) as conn:
            conn.execute(
                insert(LESSON_RECORDS).values(
                    message_key=record.message_key,
                    made_by=record.made_by,
                    made_at=record.made_at,
                    reason=record.reason,
                    category=record.category,
                    action=record.action,
                    owner=record.owner,
                    resolved=record.resolved,
                    note=record.note,
                )
            )

    def lesson_records(self, made_by: datetime) -> list[LessonRecord]:
        """The recordings made by `made_by` (as of that instant), in the order made."""
        query = (
            select(LESSON_RECORDS)
            .where(LESSON_RECORDS.c.made_at <= made_by)
            .order_by(LESSON_RECORDS.c.made_at, LESSON_RECORDS.c.id)
        )
        with reading(self.engine) as conn:
            return [
                LessonRecord(
                    message_key=row["message_key"],
                    made_by=row["made_by"],
                    made_at=row["made_at"],
                    reason=row["reason"],
                    category=row["category"],
                    action=row["action"],
                    owner=row["owner"],
                    resolved=row["resolved"],
                    note=row["note"],
                )
                for row in conn.execute(query).mappings()
            ]
