"""Threading: which messages belong to one conversation.

1. Reference links (Message-ID, In-Reply-To, References) join messages, also
   through a referenced message we never saw (notmuch's "ghost" messages).
2. Conversation keys join too: Gmail's X-GM-THRID within one mailbox, and
   Outlook's Thread-Index GUID.
3. A thread whose first message references nothing we know may join an
   earlier thread that shares a client account with it by normalised subject,
   guarded so that unrelated threads do not tangle (an equal, non-generic
   subject, a shared participant, and recent activity).  A message belongs to
   every account among its sender and recipients, so a reply-all to several
   clients joins each of their conversations.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from mailwatch.core.model import Message, Policy

# Reply and forward prefixes in the languages mailwatch meets (Outlook
# translates them), with counters like "RE[2]:" and "Re^3:".
_PREFIX = (
    r"re|aw|antw(?:oord)?|sv|vs|r|rif|ref|odp|ynt|atb|vá|válasz|отв|ответ|回复|回覆|答复|返信|"
    r"fw|fwd|wg|tr|rv|reenv|enc|fs|vb|vl|doorst|pd|i|inoltro|továbbítás|tov|πρθ|σχετ|απ|转发|轉寄|転送"
)
_REPLY_PREFIX = re.compile(rf"^\s*(?:{_PREFIX})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*", re.I)
_TAG = re.compile(r"^\s*\[[^\[\]]*\]\s*")
_FWD_WRAP = re.compile(r"^\[fwd:\s*(.*)\]$", re.I)
_FWD_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.I)


@lru_cache(maxsize=1 << 16)  # threading asks twice a message, and subjects recur
def normalise_subject(subject: str | None) -> str:
    """`Re: AW: [ACME] Homepage  Banner` -> `homepage banner`."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", subject or "")).strip()
    while True:
        before = text
        text = _FWD_TRAILER.sub("", text)
        if wrapped := _FWD_WRAP.match(text):
            text = wrapped.group(1).strip()
        text = _REPLY_PREFIX.sub("", text)
        text = _TAG.sub("", text) or text
        if text == before:
            return text.casefold()


def is_generic_subject(normalised: str, policy: Policy) -> bool:
    return len(normalised) < 3 or normalised in policy.generic_subjects


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # the smaller string becomes the root, so the result never depends on input order
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


@dataclass
class _Thread:
    members: list[Message] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    participants: set[str] = field(default_factory=set)
    times: list[datetime] = field(default_factory=list)  # sorted
    accounts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Threading:
    thread_of: dict[str, str]  # message key -> thread id (key of the thread's earliest message)
    linked_by_subject: frozenset[
        str
    ]  # message keys whose thread was joined by the subject fallback


def thread_messages(
    messages: Sequence[Message],
    time_of: Callable[[Message], datetime],
    accounts_of: Callable[[Message], frozenset[str]],
    policy: Policy,
) -> Threading:
    """Group timed, deduplicated messages into threads."""
    links = _UnionFind()
    for message in messages:
        links.find(message.key)
        for ref in (*message.in_reply_to, *message.references):
            links.union(message.key, ref)
        if message.thread_index:
            links.union(message.key, f"thread-index:{message.thread_index}")
        for copy in message.copies:
            if copy.gm_thrid:
                links.union(message.key, f"gm-thrid:{copy.mailbox}:{copy.gm_thrid}")

    components: dict[str, list[Message]] = {}
    for message in messages:
        components.setdefault(links.find(message.key), []).append(message)
    ordered = sorted(
        (sorted(group, key=lambda m: (time_of(m), m.key)) for group in components.values()),
        key=lambda group: (time_of(group[0]), group[0].key),
    )

    known = {m.key for m in messages}
    threads: list[_Thread] = []
    by_subject: dict[str, list[_Thread]] = {}
    linked_by_subject: set[str] = set()
    for group in ordered:
        first = group[0]
        accounts = _group_accounts(group, accounts_of)
        target = None
        if not any(ref in known for ref in (*first.in_reply_to, *first.references)):
            target = _subject_match(group, accounts, by_subject, time_of, policy)
        if target is None:
            target = _Thread()
            threads.append(target)
        else:
            linked_by_subject.update(m.key for m in group)
        _absorb(target, group, accounts, by_subject, time_of)

    thread_of: dict[str, str] = {}
    for thread in threads:
        root = min(thread.members, key=lambda m: (time_of(m), m.key)).key
        for message in thread.members:
            thread_of[message.key] = root
    return Threading(thread_of, frozenset(linked_by_subject))


def _group_accounts(
    group: Iterable[Message], accounts_of: Callable[[Message], frozenset[str]]
) -> frozenset[str]:
    found: set[str] = set()
    for message in group:
        found |= accounts_of(message)
    return frozenset(found)


def _absorb(
    thread: _Thread,
    group: list[Message],
    accounts: frozenset[str],
    by_subject: dict[str, list[_Thread]],
    time_of: Callable[[Message], datetime],
) -> None:
    thread.members.extend(group)
    for message in group:
        subject = normalise_subject(message.subject)
        if subject not in thread.subjects:
            thread.subjects.add(subject)
            by_subject.setdefault(subject, []).append(thread)
        thread.participants |= message.participants
        insort(thread.times, time_of(message))
    thread.accounts = thread.accounts | accounts


def _subject_match(
    group: list[Message],
    accounts: frozenset[str],
    by_subject: dict[str, list[_Thread]],
    time_of: Callable[[Message], datetime],
    policy: Policy,
) -> _Thread | None:
    first = group[0]
    subject = normalise_subject(first.subject)
    if not accounts or is_generic_subject(subject, policy):
        return None
    at = time_of(first)
    horizon = at - policy.subject_window
    candidates = by_subject.get(subject)
    if not candidates:
        return None
    # Groups come in time order: a thread with no message since the horizon can never be
    # joined again. Dropping it keeps a recurring subject from making this quadratic.
    candidates[:] = [thread for thread in candidates if thread.times[-1] >= horizon]
    best: tuple[datetime, _Thread] | None = None
    for thread in candidates:
        if not thread.accounts & accounts:
            continue
        if not (thread.participants & first.participants):
            continue
        earlier = bisect_right(thread.times, at)
        if earlier == 0 or thread.times[earlier - 1] < horizon:
            continue
        latest = thread.times[earlier - 1]
        if best is None or latest > best[0]:
            best = (latest, thread)
    return best[1] if best else None
