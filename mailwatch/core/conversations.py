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
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from heapq import heappop, heappush

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
    number: int = 0  # its order of creation
    # the keys of its messages, not the messages: years of mail stream through a threader
    members: list[str] = field(default_factory=list)
    first: tuple[datetime, str] | None = None  # (time, key) of its earliest message: its id
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
    threader = _SubjectThreader(time_of, accounts_of, policy)
    for group in reference_groups(messages, time_of):
        threader.add(group)
    thread_of: dict[str, str] = {}
    for thread in threader.threads:
        root = _root(thread)
        for key in thread.members:
            thread_of[key] = root
    return Threading(thread_of, frozenset(threader.linked_by_subject))


def reference_groups(
    messages: Sequence[Message], time_of: Callable[[Message], datetime]
) -> list[list[Message]]:
    """The messages joined by reference links and conversation keys, each group in order of
    (time, key), the groups in order of their first message."""
    links = _UnionFind()
    for message in messages:
        links.find(message.key)
        for link in thread_links(message):
            links.union(message.key, link)

    components: dict[str, list[Message]] = {}
    for message in messages:
        components.setdefault(links.find(message.key), []).append(message)
    return sorted(
        (sorted(group, key=lambda m: (time_of(m), m.key)) for group in components.values()),
        key=lambda group: (time_of(group[0]), group[0].key),
    )


def thread_links(message: Message) -> list[str]:
    """What joins a message to others: each Message-ID it references, its Thread-Index
    conversation, and each copy's Gmail thread in that mailbox."""
    links = [*message.in_reply_to, *message.references]
    if message.thread_index:
        links.append(f"thread-index:{message.thread_index}")
    links += [f"gm-thrid:{c.mailbox}:{c.gm_thrid}" for c in message.copies if c.gm_thrid]
    return links


def stream_threads(
    groups: Iterable[list[Message]],
    time_of: Callable[[Message], datetime],
    accounts_of: Callable[[Message], frozenset[str]],
    policy: Policy,
) -> Iterator[tuple[str, list[str]]]:
    """Each thread `thread_messages` finds (its id and the keys of its messages), from its
    `reference_groups` fed one at a time in their order: a thread is given out once the
    subject window has passed its last message (no later group can join it), so memory
    holds the keys and times of the threads active within the window, not the mail."""
    threader = _SubjectThreader(time_of, accounts_of, policy)
    for group in groups:
        for thread in threader.retire_before(time_of(group[0]) - policy.subject_window):
            yield _root(thread), thread.members
        threader.add(group)
        threader.linked_by_subject.clear()  # what `thread_messages` reports; not kept here
    for thread in threader.threads:
        yield _root(thread), thread.members


def _root(thread: _Thread) -> str:
    assert thread.first is not None  # a thread has a message
    return thread.first[1]


class _SubjectThreader:
    """The subject fallback over reference groups given in order of their first message."""

    def __init__(
        self,
        time_of: Callable[[Message], datetime],
        accounts_of: Callable[[Message], frozenset[str]],
        policy: Policy,
    ) -> None:
        self.time_of = time_of
        self.accounts_of = accounts_of
        self.policy = policy
        self.active: dict[int, _Thread] = {}  # not retired, by number in order of creation
        self.by_subject: dict[str, list[_Thread]] = {}
        self.linked_by_subject: set[str] = set()
        self.created = 0
        # (last message's time, thread number) each time a thread's last message moved:
        # an entry older than its thread's last message is passed over
        self.endings: list[tuple[datetime, int]] = []

    @property
    def threads(self) -> list[_Thread]:
        return list(self.active.values())

    def add(self, group: list[Message]) -> None:
        first = group[0]
        accounts = _group_accounts(group, self.accounts_of)
        target = None
        # a reference of the first message to a message we have is a link within its group
        keys = {m.key for m in group}
        if not any(ref in keys for ref in (*first.in_reply_to, *first.references)):
            target = _subject_match(group, accounts, self.by_subject, self.time_of, self.policy)
        if target is None:
            target = _Thread(number=self.created)
            self.active[target.number] = target
            self.created += 1
        else:
            self.linked_by_subject.update(m.key for m in group)
        last = target.times[-1] if target.times else None
        _absorb(target, group, accounts, self.by_subject, self.time_of)
        if target.times[-1] != last:
            heappush(self.endings, (target.times[-1], target.number))
        # Groups come in time order: a time before this one's subject window can decide no
        # later match (`_subject_match` needs a time within the window), so a thread that
        # lasts for years keeps the times of a window, its last one always
        horizon = self.time_of(first) - self.policy.subject_window
        del target.times[: min(bisect_left(target.times, horizon), len(target.times) - 1)]

    def retire_before(self, horizon: datetime) -> Iterator[_Thread]:
        """Take out the threads whose last message is before `horizon`: once groups start
        after `horizon` + subject_window, none can join them."""
        while self.endings and self.endings[0][0] < horizon:
            last, number = heappop(self.endings)
            thread = self.active.get(number)
            if thread is None or thread.times[-1] != last:
                continue
            del self.active[number]
            for subject in thread.subjects:
                kept = [t for t in self.by_subject.get(subject, ()) if t is not thread]
                if kept:
                    self.by_subject[subject] = kept
                else:
                    self.by_subject.pop(subject, None)
            yield thread


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
    thread.members.extend(m.key for m in group)
    for message in group:
        first = (time_of(message), message.key)
        if thread.first is None or first < thread.first:
            thread.first = first
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
