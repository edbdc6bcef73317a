"""The `tributary worker` process: an RQ worker that also sweeps for stranded events, and rides out
a Redis outage instead of quitting."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.utils import now as rq_now

from tributary.runtime.doorbell import settle_all
from tributary.runtime.process import Runtime
from tributary.workers.imports import reconcile_if_due
from tributary.workers.stopping import STOP_REQUESTED
from tributary.workers.sweep import sweep, sweep_if_due

log = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# Reconnection backoff: quick for a blip, capped so a worker notices a recovered Redis soon.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
# The longest the command channel's thread waits between looks at whether it should stop.
PUBSUB_WAIT_SECONDS = 0.25
# Allocations between young-generation collections in a worker (Python's default is 700). A batch
# of 500 events allocates some 30,000 short-lived containers that reference counting frees; at 700
# they set off about 40 collections a batch that find next to nothing.
GC_YOUNG_THRESHOLD = 10_000


def prepare_heap() -> None:
    """Make the cyclic garbage collector cheap for a worker process, once it has started.

    What is loaded by then (modules, mappers, the runtime) lives as long as the process: frozen, it
    is no longer traversed by each full collection (with fewer young collections, ~35 ms of a
    300 ms batch down to ~4 ms on PostgreSQL). Cyclic garbage is still collected, a little later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


@contextmanager
def _retried_later(what: str) -> Iterator[None]:
    """Log a maintenance step's failure and go on: it runs again at the next interval."""
    try:
        yield
    except Exception:
        log.exception("%s failed; will try again next interval", what)


class TributaryWorker(SimpleWorker):
    """Runs jobs in-process (no fork per job): drain jobs are few and long, and keeping the
    database pool warm across them matters more than fork isolation.

    RQ calls `run_maintenance_tasks` between dequeues; a short worker TTL keeps dequeue waits
    short so the sweeper runs every `sweep_interval_seconds` even when the queue is idle, while
    RQ's own registry cleaning keeps its usual pace.

    RQ handles a Redis error only while it waits for a job; anywhere else (a heartbeat, a job's
    bookkeeping, registry cleaning) it logs "found an unhandled exception" and quits, and with it
    the sweeper. Here every Redis call of the work loop waits for Redis with backoff instead, then
    the worker resumes: it re-registers, restarts its scheduler and sweeps at once, since events
    stored during the outage could not ring the doorbell.

    A stop asked for while the worker has no job is honoured after the database work in hand
    (`_stop_deferred`), not raised inside it as RQ does.
    """

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        interval = runtime.settings.sweep_interval_seconds
        kwargs.setdefault("worker_ttl", max(interval + 15, 20))
        # RQ serves queues in order: background replays only run when no fresh event waits.
        queues = [runtime.queue, runtime.replay_queue]
        super().__init__(queues, connection=runtime.redis, **kwargs)
        self.runtime = runtime
        self._registry_interval = self.maintenance_interval
        self.maintenance_interval = interval
        self._registries_cleaned_at: float | None = None
        self._burst = False
        self._deferring_stop = False
        self.outages = 0  # Redis outages ridden out (for logs and tests)

    @classmethod
    def started(cls, runtime: Runtime, **kwargs: Any) -> TributaryWorker:
        """A worker, once Redis answers (RQ names its connection as it builds the worker): a
        worker started during an outage waits instead of exiting."""
        delay = RECONNECT_FIRST_SECONDS
        while True:
            try:
                return cls(runtime, **kwargs)
            except REDIS_DOWN as exc:
                log.warning("Redis unreachable while starting (%s); retrying in %g s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    # --- riding out Redis ---------------------------------------------------------------------

    def _wait_for_redis(self, doing: str, exc: BaseException) -> None:
        """Block until Redis answers again (a stop signal interrupts with StopRequested)."""
        self.outages += 1
        started = time.monotonic()
        delay = RECONNECT_FIRST_SECONDS
        log.warning("lost Redis while %s (%s); reconnecting", doing, exc)
        while True:
            if self._stop_requested:  # asked to stop while a job ran: no reason to wait for Redis
                raise StopRequested()
            time.sleep(delay)
            try:
                self.connection.ping()
                break
            except REDIS_DOWN as again:
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                log.warning("Redis still unreachable (%s); next try in %.1f s", again, delay)
        log.warning("Redis is back after %.1f s; resuming", time.monotonic() - started)
        self._resume()

    def _resume(self) -> None:
        with self._stop_deferred():
            try:
                # Redis may have restarted empty: register again so monitoring (and RQ) see us.
                if not self.connection.exists(self.key):
                    self.register_birth()  # type: ignore[no-untyped-call]
                self._keep_scheduler()
                # Events stored while Redis was away rang no doorbell: schedule them now.
                sweep(self.runtime, older_than=timedelta(0))
            except REDIS_DOWN as exc:
                log.warning("Redis dropped again while resuming (%s); the next call retries", exc)
            except Exception:
                log.exception("sweep after the outage failed; the periodic sweep will retry")

    def _keep_scheduler(self) -> None:
        """Restart the scheduler process (retry jobs) if a Redis error killed it."""
        scheduler = self.scheduler
        # Stopping: the signal that stopped the worker's process group stopped its scheduler too.
        if scheduler is None or self._burst or self._stop_requested:
            return
        if not (scheduler._process and scheduler._process.is_alive()):
            scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    @contextmanager
    def _riding_out_redis(self, doing: str) -> Iterator[None]:
        try:
            yield
        except REDIS_DOWN as exc:
            self._wait_for_redis(doing, exc)

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        self._burst = burst
        STOP_REQUESTED.clear()  # a stop asked of an earlier worker in this process (tests)
        if burst:
            # A burst worker in the process that served the requests (`tributary.app.testing`, the
            # tests) lets the doorbell rings they owe land first, or it could find no job yet.
            settle_all()
        return super().work(burst, *args, **kwargs)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        # A worker started during an outage, or losing Redis half-way through registering, waits
        # for Redis and registers again rather than exiting.
        delay = RECONNECT_FIRST_SECONDS
        for attempt in itertools.count():
            try:
                if attempt:
                    self.connection.delete(self.key)  # our own half-made registration
                super().bootstrap(*args, **kwargs)
                return
            except REDIS_DOWN as exc:
                log.warning("Redis unreachable while starting (%s); retrying in %g s", exc, delay)
                self._drop_subscription()
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def subscribe(self) -> None:
        """RQ's subscription to the worker's command channel, its thread waking every
        `PUBSUB_WAIT_SECONDS` instead of every 60 s. Once the channel is unsubscribed the thread
        waits that long for a subscription that never comes, and redis-py 8's `stop()` waits for
        the thread: a worker's teardown took up to a minute (a test's drain hung on it)."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # RQ's __init__ sets the attribute to None, which is all mypy sees of its type.
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAIT_SECONDS, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def _drop_subscription(self) -> None:
        thread, self.pubsub_thread = self.pubsub_thread, None
        if thread is not None:
            thread.stop()
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                self.pubsub.close()

    def _start_scheduler(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._start_scheduler(*args, **kwargs)
        except REDIS_DOWN as exc:
            log.warning("could not start the scheduler (%s); maintenance will", exc)

    def check_for_suspension(self, burst: bool) -> None:
        with self._riding_out_redis("checking for suspension"):
            super().check_for_suspension(burst)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # part of a caller's transaction: the caller handles errors
            super().heartbeat(timeout, pipeline)
            return
        with self._riding_out_redis("sending a heartbeat"):
            super().heartbeat(timeout)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # RQ records "idle" as it enters its dequeue, outside the part that handles Redis errors:
        # an outage at that moment (just after a job) made the worker quit.
        if pipeline is not None:  # part of a caller's transaction: the caller handles errors
            super().set_state(state, pipeline)
            return
        with self._riding_out_redis(f"recording its state ({state})"):
            super().set_state(state)

    def execute_job(self, job: Any, queue: Any) -> None:
        # A job interrupted by the outage is left to RQ's registry cleaning; its events are safe
        # in the database either way (drain and retry jobs are idempotent).
        with self._riding_out_redis(f"running job {job.id}"):
            super().execute_job(job, queue)

    def _shutdown(self) -> None:
        # A drain job in hand ends after its batch instead of draining on (workers/stopping.py).
        STOP_REQUESTED.set()
        if self._deferring_stop:
            self._stop_requested = True  # honoured when the database work ends (_stop_deferred)
            return
        # A stop asked for during a job is recorded in Redis too; during an outage that write
        # must not raise inside the job (the signal handler runs in the job's frame).
        try:
            super()._shutdown()  # type: ignore[no-untyped-call]
        except REDIS_DOWN as exc:
            log.warning("stopping after the current job (Redis unreachable: %s)", exc)

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except REDIS_DOWN as exc:
            log.warning("stopped without unregistering from Redis (%s); its entry expires", exc)

    # --- maintenance ----------------------------------------------------------------------------

    @contextmanager
    def _stop_deferred(self) -> Iterator[None]:
        """Database work between jobs, which a stop waits for, then ends the worker.

        When the worker has no job, RQ's SIGTERM handler raises StopRequested in whatever frame
        runs. Raised inside a query, it left psycopg mid-command; closing the session then failed
        ("another command is already in progress"), that error replaced the stop, the step was
        logged as failed and the worker worked on until it was killed (the bench's drain worker,
        17 minutes after its SIGTERM). Here the handler only records the stop."""
        outer, self._deferring_stop = self._deferring_stop, True
        try:
            yield
        finally:
            self._deferring_stop = outer
        if self._stop_requested and not outer:
            raise StopRequested()

    def run_maintenance_tasks(self) -> None:
        with self._stop_deferred():
            self._maintain()

    def _maintain(self) -> None:
        with _retried_later("sweep"):
            sweep_if_due(self.runtime)
        if self._stop_requested:
            return
        with _retried_later("scheduling the periodic reconcile"):
            reconcile_if_due(self.runtime)
        if self._stop_requested:
            return
        with self._riding_out_redis("maintaining registries"):
            self._keep_scheduler()
            now = time.monotonic()
            if (
                self._registries_cleaned_at is None
                or now - self._registries_cleaned_at >= self._registry_interval
            ):
                self._registries_cleaned_at = now
                super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # sets last_cleaned_at
            else:
                self.last_cleaned_at = rq_now()  # type: ignore[assignment]  # RQ annotates it as None
