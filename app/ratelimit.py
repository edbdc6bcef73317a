"""Per-key rate limits on Redis, through the `limits` library (fixed windows: one round trip).

RateLimit-* headers (IETF draft names) and Retry-After go on 429 answers; reading the window on
every request would cost a second round trip on the hottest path. When Redis is unreachable the
limiter fails open: ingest stays up, and the event is durable in the database either way. It fails
open fast: its own connections have short timeouts and no retries, and after a failure a breaker
skips Redis for a few seconds (as the doorbell does), so an outage costs one slow request per
process per interval instead of a wait on every request.
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
from runtime.process import fast_pool

log = logging.getLogger(__name__)


# Skip Redis this long after a failure.
BREAKER_SECONDS = 5.0


class RateLimiter:
    def __init__(self, redis: Callable[[], Redis], spec: str) -> None:
        self.items = parse_many(spec) if spec and spec.lower() != "off" else []
        self._redis = redis
        # Monotonic time until which requests skip the limiter (Redis failed just before).
        self.paused_until = 0.0

    @cached_property
    def strategy(self) -> FixedWindowRateLimiter:
        pool = fast_pool(self._redis().connection_pool)
        return FixedWindowRateLimiter(
            RedisStorage("redis://", connection_pool=pool, key_prefix="tributary:rl")
        )

    def hit(self, key_id: str) -> None:
        if not self.items or time.monotonic() < self.paused_until:
            return
        for item in self.items:
            try:
                allowed = self.strategy.hit(item, key_id)
                stats = None if allowed else self.strategy.get_window_stats(item, key_id)
            except Exception as exc:
                self.paused_until = time.monotonic() + BREAKER_SECONDS
                log.warning(
                    "rate limiter unavailable, allowing requests for %.0f s: %s", BREAKER_SECONDS, exc
                )
                return
            if stats is not None:
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
