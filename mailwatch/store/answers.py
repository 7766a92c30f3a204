"""Answers given outside email, recorded with `mailwatch answered`: one per client message,
a new recording replacing an earlier one. `unanswered` marks them taken back, with who and
when, so that a report as of an earlier instant still sees them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, select, update

from mailwatch.core.model import RecordedAnswer
from mailwatch.store.db import Database, dialect_insert, reading, writing
from mailwatch.store.tables import MESSAGES, RECORDED_ANSWERS


class AnswerStore(Database):
    def record_answer(self, answer: RecordedAnswer) -> None:
        """Keep `answer` (replacing one recorded before on the same message) and mark its
        message for evaluation."""
        values = {
            "answered_at": answer.at,
            "via": answer.via,
            "responder": answer.responder,
            "recorded_by": answer.recorded_by,
            "recorded_at": answer.recorded_at,
            "note": answer.note,
            "withdrawn_at": None,
            "withdrawn_by": None,
        }
        with writing(self.engine) as conn:
            conn.execute(
                dialect_insert(conn, RECORDED_ANSWERS)
                .values(message_key=answer.message_key, **values)
                .on_conflict_do_update(index_elements=["message_key"], set_=values)
            )
            _evaluate_again(conn, [answer.message_key])

    def withdraw_answers(self, message_keys: Collection[str], by: str, at: datetime) -> int:
        """Take back the answers recorded on these messages; how many there were."""
        standing = RECORDED_ANSWERS.c.message_key.in_(message_keys) & (
            RECORDED_ANSWERS.c.withdrawn_at.is_(None)
        )
        with writing(self.engine) as conn:
            withdrawn = conn.execute(
                update(RECORDED_ANSWERS).where(standing).values(withdrawn_at=at, withdrawn_by=by)
            ).rowcount
            _evaluate_again(conn, message_keys)
        return withdrawn

    def recorded_answers(self) -> list[RecordedAnswer]:
        query = select(RECORDED_ANSWERS).order_by(
            RECORDED_ANSWERS.c.recorded_at, RECORDED_ANSWERS.c.id
        )
        with reading(self.engine) as conn:
            return [
                RecordedAnswer(
                    message_key=row["message_key"],
                    at=row["answered_at"],
                    via=row["via"],
                    responder=row["responder"],
                    recorded_by=row["recorded_by"],
                    recorded_at=row["recorded_at"],
                    note=row["note"],
                    withdrawn_at=row["withdrawn_at"],
                    withdrawn_by=row["withdrawn_by"],
                )
                for row in conn.execute(query).mappings()
            ]


def _evaluate_again(conn: Connection, message_keys: Collection[str]) -> None:
    """The `dirty` counter, as a waiver sets it: these messages' threads are evaluated again."""
    conn.execute(
        update(MESSAGES).where(MESSAGES.c.key.in_(message_keys)).values(dirty=MESSAGES.c.dirty + 1)
    )
