"""The per-process handles a job needs: settings, database, Redis and the queue.

RQ jobs are plain module-level functions, so the worker (or the web app, or a test) installs one
`Runtime` per process and jobs reach it through `current()`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from redis import ConnectionPool, Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from rq import Queue

from tributary.models import Database
from tributary.runtime.embedded_redis import EmbeddedRedis

if TYPE_CHECKING:
    from tributary.runtime.config import Settings

log = logging.getLogger(__name__)

_embedded: dict[Path, EmbeddedRedis] = {}

# The request path's Redis calls (the doorbell, rate limits) must give up quickly when Redis hangs
# or is gone: one short wait, then their breakers skip Redis for a few seconds. A healthy Redis
# answers them in well under a millisecond.
FAST_TIMEOUT_SECONDS = 0.25


def fast_pool(pool: ConnectionPool) -> ConnectionPool:
    """A pool to the same server (TCP or unix socket alike) with short timeouts and no retries."""
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": FAST_TIMEOUT_SECONDS,
        "socket_connect_timeout": FAST_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }
    return ConnectionPool(connection_class=pool.connection_class, **kwargs)


def outage_retry() -> Retry:
    """The retries of Tributary's Redis clients: two, after 40 then 80 ms. redis-py's default (ten,
    since redis-py 8 with a backoff of up to seconds each) would stall every request and every
    metrics flush during an outage; the database is the source of truth and the sweeper
    re-queues."""
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 2)


def redis_url_for(settings: Settings) -> str:
    """`REDIS_URL`, or the embedded server of the data directory (started if nobody runs it)."""
    if settings.redis_url:
        return settings.redis_url
    home = settings.home.resolve()
    server = _embedded.setdefault(home, EmbeddedRedis(home))
    return server.ensure_running()


class Runtime:
    """Redis is connected on first use, so commands that only touch the database never start the
    embedded server."""

    def __init__(self, settings: Settings, *, db: Database | None = None, redis: Redis | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        self._redis = redis
        # Monotonic time until which ingest skips the doorbell after a Redis failure (runtime/doorbell.py).
        self.doorbell_paused_until = 0.0

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(
                redis_url_for(self.settings),
                health_check_interval=30,
                socket_connect_timeout=2,
                retry=outage_retry(),
            )
        return self._redis

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.redis)

    @cached_property
    def replay_queue(self) -> Queue:
        """Background replays: workers serve it only when the main queue is empty."""
        return Queue(self.settings.replay_queue_name, connection=self.redis)

    @cached_property
    def fast_redis(self) -> Redis:
        """The same Redis through `fast_pool`, for calls that must not stall a request."""
        return Redis(connection_pool=fast_pool(self.redis.connection_pool))

    @cached_property
    def fast_queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.fast_redis)


_current: Runtime | None = None


def install(runtime: Runtime) -> Runtime:
    global _current  # noqa: PLW0603 - one runtime per process is the design
    _current = runtime
    return runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no Tributary runtime installed in this process")
    return _current
