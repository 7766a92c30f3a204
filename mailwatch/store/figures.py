"""The figures sent digests and client reports showed: kept so that a figure never changes
silently (a later digest lists the revisions; `report --as-reported` shows both)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select

from mailwatch.store.db import Database, dialect_insert, reading, writing
from mailwatch.store.tables import REPORTED_FIGURES


@dataclass(frozen=True)
class ReportedFigures:
    kind: str  # a claim kind: "digest" or "client-report"
    period_key: str  # "week:2026-W47"
    period_start: datetime
    period_end: datetime
    recipient: str  # a digest's recipient; a client report's account
    figures: dict[str, Any]
    statuses: dict[str, str]  # the status of each request behind them, by its opener
    policy: str  # the policy fingerprint they were computed with
    reported_at: datetime


class FiguresStore(Database):
    def record_figures(self, reported: ReportedFigures) -> None:
        """Keep the first figures sent for (kind, period, recipient): a re-send adds nothing."""
        with writing(self.engine) as conn:
            row = dialect_insert(conn, REPORTED_FIGURES).values(**asdict(reported))
            conn.execute(row.on_conflict_do_nothing())

    def reported_figures(self, kind: str, period_keys: list[str]) -> list[ReportedFigures]:
        """The figures of these periods as sent, first sent first."""
        table = REPORTED_FIGURES
        query = (
            select(table)
            .where(table.c.kind == kind, table.c.period_key.in_(period_keys))
            .order_by(table.c.reported_at, table.c.id)
        )
        with reading(self.engine) as conn:
            rows = conn.execute(query).all()
        names = [field.name for field in fields(ReportedFigures)]
        return [ReportedFigures(**{name: getattr(row, name) for name in names}) for row in rows]
