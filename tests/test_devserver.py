"""The development Dovecot that tests and `make demo` start: a restart leaves one server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwatch.devserver import banner_ok
from tests.fixtures.dovecot import DovecotServer, running_dovecot

pytestmark = pytest.mark.dovecot


def masters_of(conf: Path) -> list[str]:
    """The process ids of the Dovecot masters started with this configuration."""
    found = []
    for process in Path("/proc").iterdir():
        try:
            command = (process / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or not a process
            continue
        if str(conf).encode() in command and b"-F" in command:
            found.append(process.name)
    return found


@pytest.fixture
def own_dovecot() -> Iterator[DovecotServer]:
    """A server of this test's own: restarting the shared one would end others' sessions."""
    with running_dovecot("restart", DovecotServer) as server:
        yield server


def test_starting_a_running_dovecot_again_restarts_it_and_leaves_one_server(own_dovecot):
    dovecot = own_dovecot
    before = masters_of(dovecot.conf)

    dovecot.start()

    after = masters_of(dovecot.conf)
    assert len(before) == 1 and len(after) == 1
    assert before != after  # a new server, the old one stopped
    assert banner_ok(dovecot.port)
