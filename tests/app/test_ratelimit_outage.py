"""The rate limiter fails open fast when Redis is away: it tries Redis once, then skips it for a
few seconds. Measured by counting connection attempts on a real socket, not by wall-clock time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest
from redis import Redis

from tests.helpers import auth, make_key
from tributary.app import create_app
from tributary.app.errors import APIError
from tributary.app.ratelimit import BREAKER_SECONDS, RateLimiter
from tributary.runtime import doorbell
from tributary.runtime.config import Settings
from tributary.runtime.process import Runtime


class HungRedis:
    """A TCP server that accepts connections and never answers (Redis frozen, or a dead host
    behind a load balancer): the worst case, since nothing fails until a timeout does."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(0.05)
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}/0"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._held.append(conn)

    def __enter__(self) -> HungRedis:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self.server.close()


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    with HungRedis() as server:
        yield server


@pytest.mark.timeout(60)
def test_a_hung_redis_costs_one_attempt_then_the_breaker_skips_it(hung_redis: HungRedis) -> None:
    limiter = RateLimiter(lambda: Redis.from_url(hung_redis.url), "3/minute")
    for _ in range(50):
        limiter.hit("key_1")  # allowed: fails open, never raises
    time.sleep(0.2)  # let the server thread count whatever connected
    assert hung_redis.accepted == 1
    assert limiter.paused_until > time.monotonic()
    assert limiter.paused_until <= time.monotonic() + BREAKER_SECONDS

    # Once the pause is over the limiter tries Redis again (once), and pauses again.
    limiter.paused_until = 0.0
    for _ in range(50):
        limiter.hit("key_1")
    time.sleep(0.2)
    assert hung_redis.accepted == 2


@pytest.mark.timeout(60)
def test_ingest_stays_up_and_barely_touches_a_hung_redis(
    runtime: Runtime, account_id: str, hung_redis: HungRedis
) -> None:
    config = {
        "TRIBUTARY_HOME": str(runtime.settings.home),
        "DATABASE_URL": runtime.settings.database_url,
        "REDIS_URL": hung_redis.url,
        "TRIBUTARY_SECRET_KEY": "test-secret",
        "TRIBUTARY_KEY_CACHE_SECONDS": 0,
        "TRIBUTARY_RATE_LIMIT": "1000/second",
    }
    broken = Runtime(Settings.load(config), db=runtime.db)
    app = create_app({"TESTING": True}, runtime=broken)
    client = app.test_client()
    token = make_key(runtime, ["ingest"])
    codes = [
        client.post("/v1/identify", json={"email": f"h{i}@example.com"}, headers=auth(token)).status_code
        for i in range(30)
    ]
    assert codes == [202] * 30
    assert doorbell.coalescer(broken).settle()  # the doorbell's thread has tried Redis
    time.sleep(0.2)
    # One attempt by the limiter and one by the doorbell, then both breakers are open. The metrics
    # thread (off the request path, once a second) may have tried once too on a slow machine.
    assert hung_redis.accepted in (2, 3)
    assert app.extensions["tributary"].rate_limiter.paused_until > time.monotonic()
    assert broken.doorbell_paused_until > time.monotonic()


def test_when_redis_answers_again_limits_apply_again(runtime: Runtime) -> None:
    limiter = RateLimiter(lambda: runtime.redis, "3/minute")
    limiter.paused_until = time.monotonic() + 60  # as after a failure: no Redis, no limit
    for _ in range(10):
        limiter.hit("key_2")
    limiter.paused_until = 0.0  # the pause is over and Redis answers
    for _ in range(3):
        limiter.hit("key_2")
    with pytest.raises(APIError) as refused:
        limiter.hit("key_2")
    assert refused.value.status == 429


@pytest.mark.timeout(30)
def test_readiness_answers_503_at_once_when_redis_hangs(
    runtime: Runtime, account_id: str, hung_redis: HungRedis
) -> None:
    config = {
        "TRIBUTARY_HOME": str(runtime.settings.home),
        "DATABASE_URL": runtime.settings.database_url,
        "REDIS_URL": hung_redis.url,
        "TRIBUTARY_SECRET_KEY": "test-secret",
    }
    broken = Runtime(Settings.load(config), db=runtime.db)
    client = create_app({"TESTING": True}, runtime=broken).test_client()
    response = client.get("/readyz")  # with the app's default client it hung until the timeout
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "redis": "error: TimeoutError"}
