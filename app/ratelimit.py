"""Per-key rate limits: a token bucket in Redis, shared by every process, spent in chunks.

A limit of N per period is a bucket of N tokens that refills at N per period; a request takes a
token. So a key is refused only when, over some stretch of t seconds, it sent more than its
rate times t plus one period's worth (the burst), counted across all processes. A fixed window
refused below that whenever two bursts fell into one window (issue #10 measured 512 refusals of
a key under 1000/s).

Cheap: a process does not ask Redis for every request. Each bucket's state in Redis (level, time
of the last refill, read on Redis's own clock) is what every process has reported; a process
admits up to `chunk - 1` requests locally on its last view of it, then reports them in one
atomic script call that also decides the next request. Unreported requests of other processes
only make a view optimistic, never pessimistic, so:
- a refusal is always right: it happens only when the view, which can only overestimate the
  bucket, is empty (then no round trip either, which keeps a flood of 429s cheap too);
- other processes may admit up to `chunk - 1` each above the burst before Redis hears of it;
  that debt stays in the bucket and is paid back by refusing as long after.
A view's chunk follows the level Redis last reported for it: a twentieth of it (up to
`MAX_CHUNK`), never less than the limit's base chunk (`CHUNK_FRACTION` of the limit). Far from
empty, twenty processes' unreported requests together cannot take the bucket below zero, so the
larger chunks overrun nothing while they save round trips, each of which costs a busy web
process far more than its share of Redis's time (bench/README.md); as the bucket empties, each
report shrinks the next chunk back to the base one. While a report is out, the next one carries
the base chunk: the first answer takes every report in flight as counted, so overlapping reports
stay small. A process that last heard from Redis while the bucket was full may still hold a
twentieth of it unreported when others empty it: that is the most a process admits above the
burst (50 at `1000/second`; 10 once it saw fewer than 200).
Limits of a few per period have a chunk of 1: every request is a round trip, exact.
No lock is held across a round trip: while one thread reports a key, the process's other threads
go on deciding on its view (a report's requests count as spent until Redis answers for them).

RateLimit-* headers (IETF draft names) and Retry-After go on 429 answers. When Redis is
unreachable the limiter fails open: ingest stays up, and the event is durable in the database
either way. It fails open fast: its own connections have short timeouts and no retries, and
after a failure a breaker skips Redis for a few seconds (as the doorbell does), so an outage
costs one slow request per process per interval instead of a wait on every request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from limits import RateLimitItem, parse_many
from redis import Redis
from redis.commands.core import Script

from tributary.app.errors import APIError
from tributary.runtime.process import fast_pool

log = logging.getLogger(__name__)


# Skip Redis this long after a failure.
BREAKER_SECONDS = 5.0
# A limit's base chunk, its smallest, is this fraction of its amount (1000/second: 10 requests per
# round trip); it bounds what other processes may admit above the burst near empty.
CHUNK_FRACTION = 0.01
MAX_CHUNK = 100
# A view's chunk is at least this fraction of the level Redis last reported for its bucket.
LEVEL_FRACTION = 0.05

# KEYS[1]: the bucket. ARGV: refill per second, capacity, tokens already spent (admitted by the
# caller since its last call), tokens wanted now. Returns {granted, level as a string}; the
# level may go negative when processes admitted ahead of their reports (a debt, paid back).
_SPEND = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local spent = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then
  level = math.min(capacity, level + (now - at) * rate)
end
level = level - spent
local granted = 0
if want > 0 and level >= want then
  level = level - want
  granted = want
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - level) / rate * 1000) + 1000)
return {granted, tostring(level)}
"""


@dataclass
class _View:
    """One process's view of one bucket: the level Redis reported, when, what was admitted here
    since (not yet reported), and what a report on its way to Redis carries."""

    level: float
    synced_at: float
    known: bool = True  # False until Redis first answers for this key
    pending: int = 0
    reporting: int = 0  # admitted here, on their way to Redis in reports not yet answered
    reports: int = 0  # round trips in flight


class _Limit:
    def __init__(self, item: RateLimitItem) -> None:
        self.item = item
        self.amount = item.amount
        self.period = float(item.get_expiry())
        self.rate = self.amount / self.period
        self.chunk = max(1, min(MAX_CHUNK, int(self.amount * CHUNK_FRACTION)))
        self.prefix = f"tributary:rl:{self.amount}/{int(self.period)}:"
        self.views: dict[str, _View] = {}

    def chunk_at(self, level: float) -> int:
        """A view's chunk while Redis reports `level` (module docstring). A limit exact by its
        base chunk of 1 stays exact."""
        if self.chunk == 1:
            return 1
        return max(self.chunk, min(MAX_CHUNK, int(level * LEVEL_FRACTION)))

    def estimate(self, view: _View, now: float) -> float:
        """The most the bucket can hold now: other processes can only have spent more."""
        refilled = min(self.amount, view.level + (now - view.synced_at) * self.rate)
        return refilled - view.pending - view.reporting

    def refusal(self, level: float) -> APIError:
        wait = max(1, math.ceil((1 - level) / self.rate))
        return APIError(
            429,
            "rate_limited",
            f"rate limit of {self.item} exceeded for this key",
            headers={
                "Retry-After": str(wait),
                "RateLimit-Limit": str(self.amount),
                "RateLimit-Remaining": str(max(0, math.floor(level))),
                "RateLimit-Reset": str(wait),
            },
        )


class RateLimiter:
    def __init__(self, redis: Callable[[], Redis], spec: str) -> None:
        items = parse_many(spec) if spec and spec.lower() != "off" else []
        self.limits = [_Limit(item) for item in items]
        self._redis = redis
        # Monotonic time until which requests skip the limiter (Redis failed just before).
        self.paused_until = 0.0
        # Threaded servers (`tributary serve`) share the views.
        self._lock = threading.Lock()

    @cached_property
    def _spend(self) -> Script:
        client = Redis(connection_pool=fast_pool(self._redis().connection_pool))
        return client.register_script(_SPEND)

    def hit(self, key_id: str) -> None:
        if not self.limits or time.monotonic() < self.paused_until:
            return
        for limit in self.limits:
            if not self._take(limit, key_id):
                return  # Redis failed: open

    def _take(self, limit: _Limit, key_id: str) -> bool:
        """Admit one request of `key_id` under `limit` or raise a 429; False if Redis failed.

        The process's threads share the views under a lock that is never held across the round
        trip: while one thread reports a key's requests, the others go on admitting on its view
        (up to a chunk, as always) instead of queueing behind the network."""
        now = time.monotonic()
        with self._lock:
            view = limit.views.get(key_id)
            if view is None:
                view = limit.views[key_id] = _View(level=0.0, synced_at=now, known=False)
            spent = 0
            if view.known:
                level = limit.estimate(view, now)
                if level < 1:
                    raise limit.refusal(level)
                # Report at least once a period, so no request waits longer than that to be
                # counted in Redis. Not more often: what a process may admit above the burst is
                # bounded by its chunk alone (its view only overestimates the bucket, however
                # old), and a tighter bound made the round trips follow the clock instead of the
                # chunk: at a tenth of a period, eight keys served by four processes at ~600
                # requests/s (~19/s on each view) reported on 21-28 % of requests, not 10 %.
                fresh = view.reports > 0 or now - view.synced_at < limit.period
                # The level's larger chunk only while no report is out: a report answered
                # first takes every report in flight as counted (`_synced`), so while reports
                # overlap (a burst on many threads) each carries the base chunk, as before.
                chunk = limit.chunk if view.reports else limit.chunk_at(view.level)
                if view.pending + 1 < chunk and fresh:
                    view.pending += 1
                    return True
                spent, view.pending = view.pending, 0
                view.reporting += spent
            # else: nothing known yet, so nothing is decided here: every thread asks Redis.
            view.reports += 1
        try:
            granted, level_text = self._spend(
                keys=[limit.prefix + key_id], args=[limit.rate, limit.amount, spent, 1]
            )
        except Exception as exc:
            self.paused_until = time.monotonic() + BREAKER_SECONDS
            # What this process admitted meanwhile is forgiven rather than charged later in a lump.
            with self._lock:
                limit.views.pop(key_id, None)
            log.warning("rate limiter unavailable, allowing requests for %.0f s: %s", BREAKER_SECONDS, exc)
            return False
        level = float(level_text)
        with self._lock:
            # Redis's level counts this report, and maybe others in flight: they are taken as
            # counted, which can only overestimate the bucket (a view must never refuse wrongly);
            # what was admitted during the round trip stays pending for the next report.
            view.reporting = 0
            view.reports -= 1
            view.level, view.synced_at, view.known = level, now, True
        if not int(granted):
            raise limit.refusal(level)
        return True
