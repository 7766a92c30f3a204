"""The systemd notification protocol (sd_notify), with the standard library only.

Under `Type=notify` systemd passes a unix datagram socket in $NOTIFY_SOCKET; the
service sends `READY=1` once it is running and, with `WatchdogSec=`, `WATCHDOG=1`
more often than $WATCHDOG_USEC, or systemd restarts it.  Without the variable
(a terminal, a test, another supervisor) every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send one state line (`READY=1`, `WATCHDOG=1`, `STOPPING=1`); True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warning("could not notify systemd (%s): %s", state, error)
        return False
    return True


def watchdog_interval() -> timedelta | None:
    """How often to send `WATCHDOG=1`: half the watchdog timeout, as sd_watchdog_enabled(3)
    advises; None when no watchdog watches this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        timeout = int(usec)
    except ValueError:
        return None
    return timedelta(microseconds=timeout / 2) if timeout > 0 else None
