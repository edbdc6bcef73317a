"""The enqueue doorbell: how the web process (and an import) asks a worker to drain.

Ingest does not enqueue a job per event. After committing an event it rings a doorbell: a Redis
key set with NX. Only the request that sets it enqueues a `drain` job, so a burst of a thousand
requests costs one job. The web process goes further (`stored`, `_Coalescer`): a commit only
marks a ring owed, and a thread of the process rings at most once per `COALESCE_SECONDS` for all
of them, so no request pays a Redis round trip for the doorbell. A drain job holds the doorbell
while it loops (`DrainHold`), so rings meanwhile queue nothing and a trickle stays on one worker.
The job itself lives in the worker (workers/jobs.py) and is named here by its dotted path: RQ
stores jobs by that name anyway, and importing the worker's graph into the web process just to
take a function's name would load every merge rule at `import tributary.app.wsgi`.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from redis.exceptions import RedisError

from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

DOORBELL_KEY = "tributary:drain:queued"
# Set while a helper drain job is queued (`recruit`).
RECRUIT_KEY = "tributary:drain:recruit"
# A queued drain job that never ran (Redis lost it) must not silence the doorbell forever.
DOORBELL_TTL_SECONDS = 60
# The job the doorbell schedules (workers/jobs.py `drain`).
DRAIN_JOB = "tributary.workers.jobs.drain"
# After a Redis failure, skip the doorbell for a moment: requests stay fast during an outage and
# the sweeper schedules what they stored.
BREAKER_SECONDS = 5.0


def ring(runtime: Runtime) -> bool:
    """Make sure a drain job is queued (or one holds the doorbell, `DrainHold`). Never raises:
    the sweeper covers a Redis outage."""
    return _schedule(runtime, DOORBELL_KEY)


def recruit(runtime: Runtime) -> bool:
    """A drain job's full batch asks for one more worker while it holds the doorbell: one helper
    job queued at a time (each drain job clears the key as it starts, `DrainHold.start`)."""
    return _schedule(runtime, RECRUIT_KEY)


def _schedule(runtime: Runtime, key: str) -> bool:
    if time.monotonic() < runtime.doorbell_paused_until:
        return False
    try:
        if runtime.fast_redis.set(key, 1, nx=True, ex=DOORBELL_TTL_SECONDS):
            try:
                runtime.fast_queue.enqueue(DRAIN_JOB, result_ttl=0, failure_ttl=7 * 86400, job_timeout=600)
            except RedisError:
                # The key says a job is queued and none is: left set, it would silence every ring
                # for its TTL, leaving the work to the sweeper.
                with suppress(RedisError):
                    runtime.fast_redis.delete(key)
                raise
            return True
    except RedisError as exc:
        runtime.doorbell_paused_until = time.monotonic() + BREAKER_SECONDS
        log.warning("could not schedule a drain job (%s); the sweeper will pick the events up", exc)
    return False


# A drain job takes the doorbell when it is free ("1": a ring's job, queued, has not started yet)
# or its own: rings then find it set and schedule nothing, since this job will claim after them.
_HOLD = """
local held = redis.call('GET', KEYS[1])
if held and held ~= '1' and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# How long the doorbell stays held by a job that stopped renewing it (killed): rings schedule
# nothing meanwhile, so events wait this long at most before a ring (or the sweeper) queues a job.
HOLD_TTL_SECONDS = 15
# A holding job renews the key at most this often.
HOLD_RENEW_SECONDS = 1.0


class DrainHold:
    """One drain job's hold on the doorbell, which keeps a trickle on one worker.

    Before, a drain job cleared the doorbell as it started and kept claiming; the next ring found
    the key free and queued a second job, so under a steady trickle every worker looped, each
    claiming half the batches (at 200 webhooks/s the two workers used 0.44 CPUs, one alone 0.26:
    bench/README.md). Now the job that holds the doorbell (`holding`) drains alone until a claim
    finds nothing; a full batch recruits a helper (`recruit`), and a helper, a job that found the
    doorbell held by another, leaves at its first batch that is not full.

    No wake-up is lost. A ring that found the doorbell held came after its events' commit; the
    holder stops only after a claim that found nothing *after releasing the key* (`release`, then
    one more claim): an event committed before the release is seen by that claim, and the ring of
    one committed after it finds the key free and queues a job. A helper leaves only while another
    job holds the key. A job killed while it holds the key silences rings for `HOLD_TTL_SECONDS`
    at most; the sweeper finds what waits longer. When Redis fails, a job behaves as the holder
    (drains until empty), which is always safe."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.token = uuid.uuid4().hex
        self.holding = True
        self._renewed = -math.inf

    def start(self) -> None:
        with suppress(RedisError):
            # This job may be the helper a full batch recruited: the next full batch may ask again.
            self._runtime.fast_redis.delete(RECRUIT_KEY)

    def keep(self) -> bool:
        """Take or renew the doorbell; False once another job holds it (then never again)."""
        if not self.holding:
            return False
        now = time.monotonic()
        if now - self._renewed < HOLD_RENEW_SECONDS:
            return True
        # Tried again a renewal later, whatever the outcome: a Redis that hangs costs the drain one
        # short timeout per second at most (the request path's timeouts, `fast_redis`).
        self._renewed = now
        try:
            held = self._runtime.fast_redis.eval(_HOLD, 1, DOORBELL_KEY, self.token, HOLD_TTL_SECONDS)
        except RedisError as exc:
            log.warning("could not take the doorbell (%s); draining until empty anyway", exc)
            return True
        self.holding = bool(held)
        return self.holding

    def release(self) -> None:
        """Give the doorbell back if this job holds it; the caller claims once more after."""
        self._renewed = -math.inf  # if that claim finds events, `keep` takes the key again
        try:
            self._runtime.fast_redis.eval(_RELEASE, 1, DOORBELL_KEY, self.token)
        except RedisError as exc:
            # The key expires by itself; until then rings schedule nothing and the sweeper covers.
            log.warning("could not release the doorbell (%s)", exc)


# A web process rings at most once per this window, for every commit made before the ring.
COALESCE_SECONDS = 0.02
# A ringer thread with nothing owed for this long ends; the next commit starts another.
RINGER_IDLE_SECONDS = 5.0


class _Coalescer:
    """Per process and runtime: rings for the events its requests commit, at most once per window.

    A commit marks a ring owed (`owe`) and returns at once; a ringer thread makes the ring: right
    away when the last one is older than the window, else when the window ends, and one ring pays
    for every commit owed when it starts. So every committed event is followed, within one window,
    by a ring that starts after its commit, while under load a process pays one Redis round trip
    (and, when the worker has emptied the queue meanwhile, one enqueue) per window instead of
    several per window, and no request waits for Redis. The sweeper stays the backstop for a ring
    lost with its process (a crash inside the window); an orderly exit rings what is owed
    (`flush_all`, at exit).
    """

    def __init__(self, runtime: Runtime, window: float) -> None:
        self._runtime = weakref.ref(runtime)
        self.window = window
        self.rings = 0  # rings made, for tests and metrics
        self._reset()

    def _reset(self) -> None:
        # Also in a child after fork: the parent's thread is not there, and its lock may be held.
        self._cond = threading.Condition()
        self._owed = False
        self._ringing = False
        self._last = -self.window  # when the last ring started (monotonic)
        self._thread: threading.Thread | None = None

    def owe(self) -> None:
        """Events were just committed: a ring must follow."""
        with self._cond:
            if self._owed:
                return  # the ring already owed has not started yet: it follows this commit too
            self._owed = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tributary-doorbell", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                idle_until = time.monotonic() + RINGER_IDLE_SECONDS
                while not self._owed:
                    left = idle_until - time.monotonic()
                    if left <= 0:
                        self._thread = None
                        return
                    self._cond.wait(left)
                wait = self._last + self.window - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._take_owed()
                self._ringing = True
            try:
                if (runtime := self._runtime()) is not None:
                    ring(runtime)
            except Exception:  # `ring` handles Redis; anything else must not end the thread
                log.exception("the doorbell could not ring; the sweeper will pick the events up")
            finally:
                with self._cond:
                    self._ringing = False
                    self._cond.notify_all()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every ring owed so far has been made (tests, burst workers)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._owed and not self._ringing, timeout)

    def flush(self) -> None:
        """Ring now for anything owed, without waiting for the thread's window."""
        with self._cond:
            owed = self._owed
            if owed:
                self._take_owed()
        if owed and (runtime := self._runtime()) is not None:
            ring(runtime)

    def _take_owed(self) -> None:
        """Under the lock, as a ring starts: it pays for everything owed so far."""
        self._owed = False
        self._last = time.monotonic()
        self.rings += 1


class _Registry:
    """The coalescers of this process, one per runtime."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bells: weakref.WeakKeyDictionary[Runtime, _Coalescer] = weakref.WeakKeyDictionary()


_registry = _Registry()


def coalescer(runtime: Runtime) -> _Coalescer:
    found = _registry.bells.get(runtime)
    if found is None:
        with _registry.lock:
            found = _registry.bells.get(runtime)
            if found is None:
                found = _registry.bells[runtime] = _Coalescer(runtime, COALESCE_SECONDS)
    return found


def settle_all(timeout: float = 10.0) -> None:
    """Wait for every owed ring of this process (tests, before they look at or clear the queue)."""
    for bell in list(_registry.bells.values()):
        bell.settle(timeout)


def flush_all() -> None:
    """Ring for whatever is owed; at exit, so a stopping process leaves nothing to the sweeper."""
    for bell in list(_registry.bells.values()):
        bell.flush()


def _after_fork() -> None:
    _registry.lock = threading.Lock()
    for bell in list(_registry.bells.values()):
        bell._reset()


atexit.register(flush_all)
os.register_at_fork(after_in_child=_after_fork)


class _Store:
    committed = False


@contextmanager
def stored(runtime: Runtime) -> Iterator[_Store]:
    """Bracket the INSERT and commit of events; set `.committed` once new events are committed,
    and a ring is owed when the block ends (`_Coalescer`), even if it ends with an error."""
    store = _Store()
    try:
        yield store
    finally:
        if store.committed:
            coalescer(runtime).owe()
