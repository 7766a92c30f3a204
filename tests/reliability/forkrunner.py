"""Runs `mailwatch` commands in forked children of one warm interpreter, so that a test can
SIGKILL the real command many times without paying Python's import time for each run.

Protocol, one line each way: the test writes `{"argv": [...], "kill_after": SECONDS}`
(kill_after null: let it finish); the runner forks a child that runs
`mailwatch.cli.main(argv)`, sends it SIGKILL if it is still running after kill_after
seconds (before reaping it, so the pid cannot belong to anyone else yet), and answers
`STATUS ELAPSED`: STATUS is the exit status, -9 when killed. The runner has no threads,
so forking it is safe.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from mailwatch import cli


def run(argv: list[str], kill_after: float | None) -> tuple[int, float]:
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        os._exit(cli.main(argv))
    deadline = None if kill_after is None else started + kill_after
    while True:
        ended, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if ended == pid:
            return os.waitstatus_to_exitcode(status), time.monotonic() - started
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)  # our own unreaped child
            deadline = None
        else:
            time.sleep(0.002)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        status, elapsed = run(request["argv"], request["kill_after"])
        print(f"{status} {elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
