"""Python's cyclic garbage collector paused while a batch of work builds and keeps
hundreds of thousands of small objects that make few cycles: the collector would go over
them again and again (a sixth of a first evaluation's CPU time at 100,000 messages, a
quarter of building a period's digests at 1,000,000).  It catches up after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    was_running = gc.isenabled()  # work in another thread may have paused it already
    gc.disable()
    try:
        yield
    finally:
        if was_running:
            gc.enable()


def collect_young() -> None:
    """While the collector is paused, the objects made since the last collection: the
    cycles among them freed, the rest kept out of later young collections."""
    gc.collect(1)
