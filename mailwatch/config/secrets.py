"""Where a secret lives, and fetching it only when a connection needs it.

Secrets are never written in the file.  It names where they live (an environment
variable, a file, a command) and `Secret.reveal()` fetches them when a connection
needs them, so a file can be checked on a machine that does not hold them, and
no secret value ever reaches a message or a log.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mailwatch.config.reader import ConfigError

SECRET_COMMAND_TIMEOUT = 30.0  # seconds; a hung `pass` or token helper must not hang the daemon


@dataclass(frozen=True)
class Secret:
    """Where a secret lives: `env NAME`, `file PATH` or `command ARGV`; never the value."""

    source: str
    file: str = field(default="", repr=False)  # the config file and key that named it,
    key: str = field(default="", repr=False)  # for the error when it cannot be fetched

    def __str__(self) -> str:
        return self.source

    def reveal(self) -> str:
        """Fetch the value now. Raises ConfigError naming the key, never the value."""
        kind, _, argument = self.source.partition(" ")
        if kind == "env":
            return self._from_env(argument)
        if kind == "file":
            return self._from_file(Path(argument))
        return self._from_command(argument)

    def _error(self, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key, problem)

    def _from_env(self, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise self._error(f"environment variable {name} is not set")
        return value

    def _from_file(self, path: Path) -> str:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise self._error(f"cannot read {path}: {error.strerror}") from None
        return self._first_line(raw, f"{path} is empty")

    def _from_command(self, command: str) -> str:
        argv = shlex.split(command)
        try:
            # No shell: the file names a program and its arguments, nothing else.
            # stderr is dropped: helpers like `pass` may echo what they were asked.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            raise self._error(f"cannot run {argv[0]}: {error.strerror}") from None
        try:
            output, _ = process.communicate(timeout=SECRET_COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Kill the whole session: a grandchild holding stdout would block us.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise self._error(
                f"command timed out after {SECRET_COMMAND_TIMEOUT:g} s: {argv[0]}"
            ) from None
        if process.returncode != 0:
            raise self._error(f"command failed with exit status {process.returncode}: {argv[0]}")
        return self._first_line(output, f"command printed nothing: {argv[0]}")

    def _first_line(self, raw: bytes, empty_problem: str) -> str:
        """The secret is the first line (`pass show` prints notes after it)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error("the secret is not UTF-8 text") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise self._error(empty_problem)
        return lines[0]
