"""A TCP proxy of our own on loopback, in front of a real server, that misbehaves on cue.

It forwards bytes both ways, and can delay every reply, or — once the client has sent a
chosen command — let a chosen number of reply bytes through and then cut the client off,
with a reset (RST) or a plain close (FIN). That is how the tests make a real Dovecot or
aiosmtpd "fail" mid-FETCH or after DATA without touching the servers themselves.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass
class Cut:
    """Once the client has sent `trigger`, forward it (or not), pass `reply_bytes` of the
    server's answer, then cut the client off (reset or close). Fires once."""

    trigger: bytes
    forward: bool = True
    reply_bytes: int = 0
    reset: bool = True


class FaultProxy:
    def __init__(self, target_port: int, *, delay: float = 0.0, delay_after: int = 0) -> None:
        self.target_port = target_port
        self.delay = delay  # seconds before each server reply chunk is passed on ...
        self.delay_after = delay_after  # ... once this many chunks went through undelayed
        self.cut: Cut | None = None
        self.cuts_done = 0
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            session = _Session(self, client, server)
            threading.Thread(target=session.upstream, daemon=True).start()
            threading.Thread(target=session.downstream, daemon=True).start()


class _Session:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.seen = b""
        self.cut: Cut | None = None  # armed: the trigger was sent, the reply is being counted
        self.passed = 0
        self.chunks = 0

    def upstream(self) -> None:
        """Client to server, watching for the trigger."""
        while chunk := _recv(self.client):
            cut = self.proxy.cut
            self.seen = (self.seen + chunk)[-4096:]
            if cut is not None and self.cut is None and cut.trigger in self.seen:
                self.proxy.cut = None  # once
                self.cut = cut
                if not cut.forward:
                    self._cut_off()
                    return
            try:
                self.server.sendall(chunk)
            except OSError:
                break
        _close(self.server)

    def downstream(self) -> None:
        """Server to client, delayed or cut off as asked."""
        while chunk := _recv(self.server):
            self.chunks += 1
            if self.proxy.delay and self.chunks > self.proxy.delay_after:
                time.sleep(self.proxy.delay)
            if self.cut is not None:
                allowed = max(0, self.cut.reply_bytes - self.passed)
                self.passed += len(chunk[:allowed])
                if allowed:
                    _send(self.client, chunk[:allowed])
                if len(chunk) >= allowed:
                    self._cut_off()
                    return
                continue
            if not _send(self.client, chunk):
                break
        _close(self.client)

    def _cut_off(self) -> None:
        cut = self.cut
        self.proxy.cuts_done += 1
        if cut is not None and cut.reset:
            # SO_LINGER with a zero timeout: the last close sends RST instead of FIN.
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            _close(self.client, how=socket.SHUT_RD)
        else:
            _close(self.client)
        _close(self.server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """Shut down first: a bare close() neither wakes the other thread blocked in recv()
    on this socket nor tells the peer anything while that thread holds it."""
    for step in (lambda: sock.shutdown(how), sock.close):
        try:
            step()
        except OSError:
            pass
