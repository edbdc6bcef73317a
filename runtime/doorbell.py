"""The enqueue doorbell: how the web process (and an import) asks a worker to drain.

Ingest does not enqueue a job per event. After committing an event it rings a doorbell: a Redis
key set with NX. Only the request that sets it enqueues a `drain` job, so a burst of a thousand
requests costs one job. The web process goes further (`stored`): it rings at most once per
`COALESCE_SECONDS` while its requests overlap, so most requests pay no Redis round trip at all.
The job itself lives in the worker (workers/jobs.py) and is named here by its dotted path: RQ
stores jobs by that name anyway, and importing the worker's graph into the web process just to
take a function's name would load every merge rule at `import tributary.app.wsgi`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from redis.exceptions import RedisError

from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

DOORBELL_KEY = "tributary:drain:queued"
# A queued drain job that never ran (Redis lost it) must not silence the doorbell forever.
DOORBELL_TTL_SECONDS = 60
# The job the doorbell schedules (workers/jobs.py `drain`).
DRAIN_JOB = "tributary.workers.jobs.drain"
# After a Redis failure, skip the doorbell for a moment: requests stay fast during an outage and
# the sweeper schedules what they stored.
BREAKER_SECONDS = 5.0


def ring(runtime: Runtime) -> bool:
    """Make sure a drain job is queued. Never raises: the sweeper covers a Redis outage."""
    if time.monotonic() < runtime.doorbell_paused_until:
        return False
    try:
        if runtime.fast_redis.set(DOORBELL_KEY, 1, nx=True, ex=DOORBELL_TTL_SECONDS):
            try:
                runtime.fast_queue.enqueue(DRAIN_JOB, result_ttl=0, failure_ttl=7 * 86400, job_timeout=600)
            except RedisError:
                # The key says a job is queued and none is: left set, it would silence every ring
                # for its TTL, leaving the work to the sweeper.
                with suppress(RedisError):
                    runtime.fast_redis.delete(DOORBELL_KEY)
                raise
            return True
    except RedisError as exc:
        runtime.doorbell_paused_until = time.monotonic() + BREAKER_SECONDS
        log.warning("could not schedule a drain job (%s); the sweeper will pick the events up", exc)
    return False


# How long a web process may hold back a ring while requests of its own are still storing events.
COALESCE_SECONDS = 0.02


class _Coalescer:
    """Per process: rings for the events stored by many concurrent requests at once.

    Every store is bracketed (`stored`). When one ends having committed an event, it rings, unless
    a ring happened less than `COALESCE_SECONDS` ago and another store is still in flight: then it
    leaves the ring owed, and a later store ends it (the first one past the window, or the last one
    in flight, whichever comes first). So every committed event is followed by a ring that starts
    after its commit, within the window under load and at once otherwise: one request at a time
    rings each time, as before. A store in flight is only the INSERT and its commit (the body was
    read before), so an owed ring waits at most for one statement; the sweeper is the backstop.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._in_flight = 0
        self._owed = False
        self._last = -window
        self.rings = 0  # rings made, for tests and metrics

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self, runtime: Runtime, committed: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            self._owed = self._owed or committed
            now = time.monotonic()
            if not self._owed or (self._in_flight and now - self._last < self.window):
                return
            # Cleared before ringing: a commit that owes a ring after this point rings again.
            self._owed = False
            self._last = now
            self.rings += 1
        ring(runtime)


_coalescers: weakref.WeakKeyDictionary[Runtime, _Coalescer] = weakref.WeakKeyDictionary()
_coalescers_lock = threading.Lock()


def coalescer(runtime: Runtime) -> _Coalescer:
    found = _coalescers.get(runtime)
    if found is None:
        with _coalescers_lock:
            found = _coalescers.setdefault(runtime, _Coalescer(COALESCE_SECONDS))
    return found


class _Store:
    committed = False


@contextmanager
def stored(runtime: Runtime) -> Iterator[_Store]:
    """Bracket the INSERT and commit of events; set `.committed` once new events are committed.
    On exit the doorbell rings, or the ring is left to a store still in flight (`_Coalescer`)."""
    bell = coalescer(runtime)
    store = _Store()
    bell.enter()
    try:
        yield store
    finally:
        bell.leave(runtime, store.committed)
