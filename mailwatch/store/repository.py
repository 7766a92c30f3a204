"""The store: core dataclasses in and out of SQLite or PostgreSQL.

`Store` gathers the store's parts, one concern each: the database itself (`db`), stored
mail (`messages`), answers given outside email (`answers`), the lessons-learnt log
(`lessons`), what the evaluation reads and writes (`evaluation`), coordination between
processes (`coordination`), privacy (`privacy`), who mail was exchanged with (`contacts`)
and the figures sent digests and client reports showed (`figures`).  Callers import from here.
"""

from __future__ import annotations

from mailwatch.store.answers import AnswerStore
from mailwatch.store.contacts import ContactStore, UnconfiguredSender
from mailwatch.store.coordination import Claim, CoordinationStore, LoginRefusal, SyncState
from mailwatch.store.db import CHUNK
from mailwatch.store.evaluation import EvaluationStore
from mailwatch.store.figures import FiguresStore, ReportedFigures
from mailwatch.store.lessons import LessonStore
from mailwatch.store.messages import MessageStore, QuarantinedMessage, StoredMessage
from mailwatch.store.privacy import REDUCED_RAW, Forgotten, PrivacyStore, ReductionPolicy

__all__ = [
    "CHUNK",
    "REDUCED_RAW",
    "Claim",
    "Forgotten",
    "LoginRefusal",
    "QuarantinedMessage",
    "ReductionPolicy",
    "ReportedFigures",
    "Store",
    "StoredMessage",
    "SyncState",
    "UnconfiguredSender",
]


class Store(
    MessageStore,
    AnswerStore,
    LessonStore,
    EvaluationStore,
    CoordinationStore,
    PrivacyStore,
    FiguresStore,
    ContactStore,
):
    """One database of mailwatch's: every part of the store on the same engine."""
