"""Per-key rate limits on Redis, through the `limits` library (fixed windows: one round trip).

RateLimit-* headers (IETF draft names) and Retry-After go on 429 answers; reading the window on
every request would cost a second round trip on the hottest path. When Redis is unreachable the
limiter fails open: ingest stays up, and the event is durable in the database either way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import cached_property

from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis import Redis

from app.errors import APIError

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, redis: Callable[[], Redis], spec: str) -> None:
        self.items = parse_many(spec) if spec and spec.lower() != "off" else []
        self._redis = redis

    @cached_property
    def strategy(self) -> FixedWindowRateLimiter:
        # Share the app's connection pool (TCP or unix socket alike) instead of parsing a URL again.
        pool = self._redis().connection_pool
        return FixedWindowRateLimiter(
            RedisStorage("redis://", connection_pool=pool, key_prefix="tributary:rl")
        )

    def hit(self, key_id: str) -> None:
        for item in self.items:
            try:
                allowed = self.strategy.hit(item, key_id)
            except Exception as exc:
                log.warning("rate limiter unavailable, allowing request: %s", exc)
                return
            if not allowed:
                stats = self.strategy.get_window_stats(item, key_id)
                reset = max(1, math.ceil(stats.reset_time - time.time()))
                raise APIError(
                    429,
                    "rate_limited",
                    f"rate limit of {item} exceeded for this key",
                    headers={
                        "Retry-After": str(reset),
                        "RateLimit-Limit": str(item.amount),
                        "RateLimit-Remaining": str(stats.remaining),
                        "RateLimit-Reset": str(reset),
                    },
                )
