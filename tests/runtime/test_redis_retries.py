"""The embedded server's probe tries a socket once: redis-py 8 retries ten times by default, with a
backoff of up to seconds each, so a socket left by a server that died made `tributary serve`'s
start wait 3.5 s to learn there was no server. Counted at a listening socket that hangs up on every
connection it accepts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tributary.runtime.embedded_redis import EmbeddedRedis


class HangingUp:
    """A server socket (unix or TCP) that accepts each connection and closes it at once."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.accepted = 0
        listener.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def unix_hanging_up(tmp_path: Path) -> Iterator[HangingUp]:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "redis.sock"))
    server = HangingUp(listener)
    yield server
    server.close()


def test_the_embedded_servers_probe_tries_once(tmp_path: Path, unix_hanging_up: HangingUp) -> None:
    # A socket whose server hangs up (or died and left it) is not a server: one try says so.
    assert EmbeddedRedis(tmp_path).responding() is False
    assert unix_hanging_up.accepted == 1
