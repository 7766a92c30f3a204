"""Each measured step runs in a child process of its own, so that its peak memory
(VmHWM) is its own and no step warms another's caches inside Python.

`measure(name, **params)` in the parent runs `python -m bench.steps NAME JSON` and
returns what the child printed: its wall time around the work only (not interpreter
start-up or imports), its peak RSS, and step-specific counts. With `profile_dir` the
work runs under pyinstrument and the profile is written there as text.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STEPS: dict[str, Callable[..., dict[str, Any]]] = {}
ROOT = Path(__file__).resolve().parent.parent


def step(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    STEPS[function.__name__] = function
    return function


def measure(name: str, timeout: float = 3600, **params: Any) -> dict[str, Any]:
    """Run one step in a child process; {"error": …} when it fails or times out."""
    # imported here, not at the top: the worker processes a step starts import this module
    # again (multiprocessing's spawn), and should not pay for the harness's servers
    from bench.agency import ENVIRONMENT

    env = {**os.environ, **ENVIRONMENT}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.steps", name, json.dumps(params)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "seconds": None}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "seconds": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    return _peak_mb(Path("/proc/self/status")) or float("nan")


class ChildrenPeak:
    """The largest peak RSS (VmHWM) of this process's descendants while in use, sampled every
    0.1 s. Not `ru_maxrss` of RUSAGE_CHILDREN: for a spawned child the kernel counts the
    parent's memory it was forked with, before it started a fresh interpreter."""

    def __init__(self) -> None:
        self.mb = 0.0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildrenPeak:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()

    def _sample(self) -> None:
        seen: set[str] = set()
        while not self._done.wait(0.1):
            now = set(_descendants(str(os.getpid())))
            # a child first seen may not have started its own interpreter yet: until then
            # the kernel shows it the parent's memory
            for pid in now & seen:
                self.mb = max(self.mb, _peak_mb(Path(f"/proc/{pid}/status")))
            seen = now


def _descendants(pid: str) -> list[str]:
    """Children, and theirs (the first evaluation's workers are a forkserver's children)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += task.read_text().split()
        except OSError:  # it has just ended
            continue
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _peak_mb(status: Path) -> float:
    try:
        lines = status.read_text().splitlines()
    except OSError:  # the child has just ended
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), 0.0)


# ---------------------------------------------------------------- IMAP, raw and naive


@step
def raw_fetch(
    port: int,
    username: str,
    password: str,
    folders: list[str],
    batch: int,
    what: str = "headers",
    limit: int | None = None,
) -> dict[str, Any]:
    """The raw limit: a bare imapclient loop fetching what mailwatch needs and nothing
    more ("headers"), the same plus mailwatch's 8 KB body prefix ("prefix"), or whole
    messages parsed with mail-parser, as a hand-written script would ("naive")."""
    import mailparser
    from imapclient import IMAPClient

    from mailwatch.adapters.imap import BODY_PREFIX_ITEM, HEADER_ITEM

    items = {
        "headers": [HEADER_ITEM, "INTERNALDATE", "RFC822.SIZE", "FLAGS"],
        "prefix": [HEADER_ITEM, BODY_PREFIX_ITEM, "INTERNALDATE", "RFC822.SIZE", "FLAGS"],
        "naive": ["BODY.PEEK[]", "INTERNALDATE", "RFC822.SIZE", "FLAGS"],
    }[what]
    fetched = parsed = 0
    started, cpu = time.perf_counter(), time.process_time()
    with IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login(username, password)
        for folder in folders:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])[:limit]
            for start in range(0, len(uids), batch):
                response = client.fetch(uids[start : start + batch], items)
                fetched += len(response)
                if what == "naive":
                    for data in response.values():
                        mailparser.parse_from_bytes(data[b"BODY[]"])
                        parsed += 1
            client.unselect_folder()
    return {
        "seconds": time.perf_counter() - started,
        "messages": fetched,
        "parsed": parsed,
        "cpu": time.process_time() - cpu,
    }


@step
def internal_dates(port: int, username: str, password: str, folder: str) -> dict[str, Any]:
    """The earliest and latest INTERNALDATE, to check Dovecot took the seeded file mtimes."""
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login(username, password)
        client.normalise_times = False
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        data = {}
        for start in range(0, len(uids), 5000):  # one command line stays under 64 KB
            data.update(client.fetch(uids[start : start + 5000], ["INTERNALDATE"]))
    dates = sorted(item[b"INTERNALDATE"].astimezone(UTC) for item in data.values())
    return {"seconds": 0.0, "dates": [dates[0].isoformat(), dates[-1].isoformat()]}


# ---------------------------------------------------------------- mailwatch


def _open(config: str) -> tuple[Any, Any]:
    from mailwatch.config import load_settings
    from mailwatch.store.repository import Store

    settings = load_settings(Path(config))
    store = Store(settings.database_url)
    return settings, store


@step
def migrate(config: str) -> dict[str, Any]:
    _, store = _open(config)
    started = time.perf_counter()
    store.upgrade()
    return {"seconds": time.perf_counter() - started}


@step
def poll(config: str, now: str) -> dict[str, Any]:
    """mailwatch's sync: `poll_all` over every configured mailbox."""
    from mailwatch.sync import poll_all

    settings, store = _open(config)
    started, cpu = time.perf_counter(), time.process_time()
    with ChildrenPeak() as parser_peak:
        results = poll_all(settings, store, datetime.fromisoformat(now))
    seconds = time.perf_counter() - started
    errors = [error for result in results for error in result.errors]
    if errors:
        raise RuntimeError(f"poll failed: {errors}")
    parser = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "messages": sum(result.fetched for result in results),
        "new": sum(result.new_messages for result in results),
        # the process parsing a long first sync's batches (none for a few new messages)
        "workers_cpu": parser.ru_utime + parser.ru_stime,
        "largest_worker_rss_mb": parser_peak.mb,
    }


@step
def idle_polls(config: str, now: str, polls: int) -> dict[str, Any]:
    """`polls` polls with no new mail, one after the other, sharing one history as the
    daemon does (so the connection is kept between polls); every duration. Each is
    followed by what a poll costs with a login each time: a bare login, STATUS of the same
    folders, logout."""
    from imapclient import IMAPClient

    from mailwatch.sync import SyncHistory, poll_all

    settings, store = _open(config)
    history = SyncHistory()
    durations, floors = [], []
    fetched = 0
    for number in range(polls):
        at = datetime.fromisoformat(now) + timedelta(minutes=number)
        started = time.perf_counter()
        results = poll_all(settings, store, at, history)
        durations.append(time.perf_counter() - started)
        fetched += sum(result.fetched for result in results)
        started = time.perf_counter()
        for mailbox in settings.mailboxes:
            with IMAPClient(mailbox.host, port=mailbox.port, ssl=False) as client:
                client.login(mailbox.username, mailbox.password.reveal())
                for folder in mailbox.folders:
                    client.folder_status(folder, ["UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"])
        floors.append(time.perf_counter() - started)
    history.close_sessions()
    return {
        "seconds": _median(durations),
        "slowest": max(durations),
        "floor": _median(floors),
        "fetched": fetched,
    }


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@step
def refresh(config: str, now: str) -> dict[str, Any]:
    """The evaluation after a poll: `evaluation.refresh_requests`."""
    from mailwatch.evaluation import refresh_requests

    settings, store = _open(config)
    started, cpu = time.perf_counter(), time.process_time()
    with ChildrenPeak() as workers_peak:
        refreshed = refresh_requests(settings, store, datetime.fromisoformat(now))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": time.perf_counter() - started,
        "requests": _count(refreshed.requests),
        "cpu": time.process_time() - cpu,
        # the worker processes of a first evaluation of years of mail (none for a small one)
        "workers_cpu": workers.ru_utime + workers.ru_stime,
        "largest_worker_rss_mb": workers_peak.mb,
    }


def _count(requests: Any) -> int:
    # An Evaluation holds the requests; an incremental refresh may report only how many.
    return requests if isinstance(requests, int) else len(requests)


@step
def report(config: str, now: str, since: str, until: str) -> dict[str, Any]:
    """`mailwatch report --since --until`: `services.report` for one month."""
    from mailwatch.services import report as make_report

    settings, store = _open(config)
    started = time.perf_counter()
    found = make_report(
        settings,
        store,
        datetime.fromisoformat(now),
        datetime.fromisoformat(since),
        datetime.fromisoformat(until),
    )
    return {"seconds": time.perf_counter() - started, "requests": len(found.requests)}


@step
def digest(config: str, now: str, period: str) -> dict[str, Any]:
    """Every digest of the last complete period: `digests.build_digests`."""
    from mailwatch.bootstrap import make_renderer
    from mailwatch.core.periods import last_complete
    from mailwatch.digests import build_digests

    settings, store = _open(config)
    at = datetime.fromisoformat(now)
    chosen = last_complete(period, at, settings.policy.timezone)
    started = time.perf_counter()
    built = build_digests(settings, store, at, chosen, make_renderer())
    return {"seconds": time.perf_counter() - started, "digests": len(built)}


@step
def fill_store(config: str, messages: int, seed: int, start: str, end: str) -> dict[str, Any]:
    """Generate `messages` messages straight into the store through `Store.add_messages`
    (the path sync uses, minus IMAP and parsing), in batches of 5,000."""
    import dataclasses
    import zlib

    from bench.mail import conversations, copies_of, render, to_message
    from mailwatch.store.repository import StoredMessage

    _, store = _open(config)
    batch: list[StoredMessage] = []
    added = 0
    header_of: dict[int, bytes] = {}
    started = time.perf_counter()
    mails = conversations(
        messages, seed, datetime.fromisoformat(start), datetime.fromisoformat(end)
    )
    for mail in mails:
        message = to_message(mail)
        # Raw headers stored as sync would (compressed); one rendering per kind of mail
        # keeps generation from dominating the load time.
        kind = zlib.crc32(mail.subject.encode()) % 64
        raw = header_of.setdefault(kind, render(mail).split(b"\n\n", 1)[0])
        for copy in copies_of(mail):
            item = dataclasses.replace(message, copies=(copy,))
            batch.append(StoredMessage(item, raw, location=f"bench:{mail.key}:{copy.mailbox}"))
        if len(batch) >= 5000:
            added += store.add_messages(batch)
            batch = []
    if batch:
        added += store.add_messages(batch)
    return {"seconds": time.perf_counter() - started, "messages": added}


def main() -> None:
    name, params = sys.argv[1], json.loads(sys.argv[2])
    profile_dir = params.pop("profile_dir", None)
    if profile_dir:
        from pyinstrument import Profiler

        with Profiler(interval=0.005) as profiler:
            result = STEPS[name](**params)
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        label = params.get("what") or name
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (Path(profile_dir) / f"{label}.txt").write_text(text)
    else:
        result = STEPS[name](**params)
    result["rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
