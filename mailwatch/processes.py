"""What the work shared with other processes has in common (the first evaluation's
workers, the parsing process of a long first sync): the cores this process may use, an
executor that runs each call in this process instead, and stopping left to the process
that started the others. Standard library only: a parsing process imports it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

Result = TypeVar("Result")


def usable_cores() -> int:
    """The cores this process may use (a container's share); where that is not told, all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def leave_stopping_to_the_starter() -> None:
    """In a started process: Ctrl-C reaches the whole process group, and systemd's stop
    every process of the service; the process that started this one ends it when its own
    work stops (a worker killed first would break that work instead of letting it stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class InThisProcess(Executor):
    """An executor that runs each call as it is submitted."""

    def submit(self, fn: Callable[..., Result], /, *args: Any, **kwargs: Any) -> Future[Result]:
        future: Future[Result] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future
