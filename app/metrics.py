"""Prometheus metrics that stay right with many gunicorn and RQ worker processes.

Everything about events is computed at scrape time from the database (counts by status, source
and connector; pending count and oldest pending age; the received → processed latency histogram;
on PostgreSQL from tallies its triggers keep, models/event_tally.py, so a scrape costs the same at
a billion events as at a thousand) and from Redis (queue depths, failed-registry size, rejection
counters). Nothing is counted in a process, so nothing is double counted when several processes
answer, and nothing is lost when a worker restarts: any web process answers the same, install-wide
numbers.

HTTP request durations can only be observed where requests are served. Each app buckets them in
memory and one daemon thread per process adds the buckets to one Redis hash (the app's own Redis)
every second (HINCRBY, so adds from all processes sum exactly); `/metrics` flushes its own process
first. This was chosen over prometheus_client's multiprocess mode, which needs an environment
variable set before import and a shared directory per machine (and so answers per machine, not per
install), and over one Redis round trip per request, which the ingest path cannot afford. A
process killed with SIGKILL loses at most its last second of request timings; event metrics lose
nothing.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from tributary.models.base import utcnow
from tributary.models.event_tally import (
    LATENCY_BOUNDS,
    pending_counts,
    scan_counts,
    scan_latency,
    tallied,
    tally_counts,
    tally_latency,
)
from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

HTTP_KEY = "tributary:metrics:http"
REJECTIONS_KEY = "tributary:rejections:counts"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_SECONDS = 1.0
SEP = "\t"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class RequestTimings:
    """One app's HTTP duration buckets, added in the background to the Redis that app uses.

    Each app keeps its own: a process that holds several apps (the test suite, an embedding
    program) must add each app's timings to that app's Redis, never to whichever app was made last.
    One thread per process flushes them all (`_Flusher`)."""

    def __init__(self, redis: Callable[[], Redis | None]) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[float]] = {}
        self._warned_at = 0.0
        _flusher.live.add(self)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        index = bisect.bisect_left(HTTP_BUCKETS, seconds)
        with self._lock:
            row = self._pending.setdefault(key, [0.0] * (len(HTTP_BUCKETS) + 3))
            row[index] += 1  # buckets are stored non-cumulative; the last slot is +Inf
            row[-2] += seconds
            row[-1] += 1
        if _flusher.pid != os.getpid():
            _flusher.ensure_running()

    def flush(self, *, final: bool = False) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            # Resolved inside the try: getting the client can fail too (an embedded Redis that cannot
            # start raises RuntimeError), and an exception escaping here would end the flushing
            # thread, and with it this process's request timings, for good.
            redis = self._redis()
            if redis is None:
                return  # no Redis to meet in (an app without one): nothing to add them to
            pipe = redis.pipeline(transaction=False)
            for (route, method, status), row in pending.items():
                prefix = SEP.join((route, method, status))
                for index, count in enumerate(row[:-2]):
                    if count:
                        pipe.hincrby(HTTP_KEY, f"{prefix}{SEP}{index}", int(count))
                pipe.hincrbyfloat(HTTP_KEY, f"{prefix}{SEP}sum", row[-2])
                pipe.hincrby(HTTP_KEY, f"{prefix}{SEP}count", int(row[-1]))
            pipe.execute()
        except Exception as exc:  # a background thread: keep the timings, never die
            if final:
                return  # shutting down with Redis gone: nothing left to keep them for
            if time.monotonic() - self._warned_at > 60:  # once a minute during an outage, not every second
                self._warned_at = time.monotonic()
                log.warning("could not record request timings (%s); keeping them for the next flush", exc)
            self._keep(pending)

    def _keep(self, pending: dict[tuple[str, str, str], list[float]]) -> None:
        with self._lock:
            for key, row in pending.items():
                mine = self._pending.setdefault(key, [0.0] * len(row))
                for index, value in enumerate(row):
                    mine[index] += value

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._pending = {}  # the parent's to add, not the child's


class _Flusher:
    """Every app's timings in this process (weakly: an app dropped takes its timings with it) and the
    one thread that flushes them. The pid is the thread's: threads do not survive a fork, so a
    gunicorn worker starts its own. A round holds the lock, so `flush_request_timings` returns only
    once nothing is on its way."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[RequestTimings] = weakref.WeakSet()
        self.pid: int | None = None
        self.round = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # A lock some thread of the parent held at the fork (the flusher mid-round, waiting on Redis)
        # stays held in the child, where no thread will ever release it.
        self.round = threading.Lock()
        self.pid = None
        for timings in list(self.live):
            timings._after_fork()

    def flush_all(self, *, final: bool = False) -> None:
        with self.round:
            for timings in list(self.live):
                timings.flush(final=final)

    def ensure_running(self) -> None:
        with self.round:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
        threading.Thread(target=self._forever, name="tributary-metrics", daemon=True).start()
        atexit.register(self.flush_all, final=True)

    def _forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush_all()


_flusher = _Flusher()


def flush_request_timings() -> None:
    """Add every app's pending timings to its Redis now; when this returns, none is on its way (the
    test harness calls it before it empties its Redis, so nothing lands after)."""
    _flusher.flush_all()


class TributaryCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from self._events()
        yield from self._redis_metrics()
        yield self._http()

    def _events(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "tributary_events",
            "Stored events by source, connector and status.",
            labels=["source", "connector", "status"],
        )
        received = CounterMetricFamily(
            "tributary_events_received",
            "Events received (stored), by source and connector.",
            labels=["source", "connector"],
        )
        totals: dict[tuple[str, str], int] = {}
        with self.runtime.db.session() as session:
            # The backlog is counted live, by source and connector, through the partial index on
            # pending events: its size and age, and its rows of `tributary_events`.
            pending, oldest = pending_counts(session)
            # PostgreSQL's tallies of every other status are kept by triggers
            # (models/event_tally.py): a scrape reads a few thousand rows whatever the table's
            # size. SQLite counts the table.
            if tallied(session):
                counts, buckets = tally_counts(session, pending), tally_latency(session)
            else:
                counts, buckets = scan_counts(session), scan_latency(session)
        pending_count = sum(pending.values())
        rows = sorted(counts.items(), key=lambda item: (item[0][0] or "", item[0][1], item[0][2]))
        for (source_id, channel, status), count in rows:
            source = source_id or ""
            by_status.add_metric([source, channel, status], count)
            totals[(source, channel)] = totals.get((source, channel), 0) + count
        for (source, channel), count in sorted(totals.items()):
            received.add_metric([source, channel], count)
        yield by_status
        yield received
        yield GaugeMetricFamily(
            "tributary_pending_events", "Events waiting to be applied.", value=pending_count
        )
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "tributary_oldest_pending_age_seconds",
            "Age of the oldest pending event (0 when none).",
            value=max(age, 0.0),
        )
        cumulative, total_seconds = 0, 0.0
        histogram: list[tuple[str, float]] = []
        for bound, (events, seconds) in zip((*LATENCY_BOUNDS, float("inf")), buckets, strict=True):
            cumulative += events
            total_seconds += seconds
            histogram.append((_le(bound), cumulative))
        latency = HistogramMetricFamily(
            "tributary_processing_latency_seconds",
            "Received → applied (processed or ignored), from the events table.",
        )
        latency.add_metric([], histogram, total_seconds)
        yield latency

    def _redis_metrics(self) -> Iterator[Metric]:
        from tributary.app.failed_jobs import failed_count

        runtime = self.runtime
        try:
            depth = GaugeMetricFamily(
                "tributary_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"]
            )
            for queue in (runtime.queue, runtime.replay_queue):
                depth.add_metric([queue.name], queue.count)
            failed = failed_count(runtime)
            raw = runtime.redis.hgetall(REJECTIONS_KEY)
        except RedisError as exc:
            log.warning("metrics: Redis unreachable (%s)", exc)
            yield GaugeMetricFamily("tributary_redis_up", "Whether Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("tributary_redis_up", "Whether Redis answered this scrape.", value=1)
        yield depth
        yield GaugeMetricFamily("tributary_failed_jobs", "Jobs in RQ's failed registries.", value=failed)
        rejections = CounterMetricFamily(
            "tributary_webhook_rejections",
            "Webhook deliveries refused with a 4xx.",
            labels=["source", "reason"],
        )
        for field, value in sorted(raw.items()):
            source, _, reason = _text(field).partition(SEP)
            rejections.add_metric([source, reason], int(value))
        yield rejections

    def _http(self) -> Metric:
        flush_request_timings()  # what this process still holds, so a scrape right after a request sees it
        family = HistogramMetricFamily(
            "tributary_http_request_duration_seconds",
            "HTTP request duration by route, method and status (all web processes).",
            labels=["route", "method", "status"],
        )
        try:
            raw = self.runtime.redis.hgetall(HTTP_KEY)
        except RedisError:
            return family
        series: dict[tuple[str, str, str], dict[str, float]] = {}
        for field, value in raw.items():
            route, method, status, slot = _text(field).split(SEP)
            series.setdefault((route, method, status), {})[slot] = float(value)
        bounds = (*HTTP_BUCKETS, float("inf"))
        for labels, slots in sorted(series.items()):
            running = 0.0
            buckets = []
            for index, bound in enumerate(bounds):
                running += slots.get(str(index), 0.0)
                buckets.append((_le(bound), running))
            family.add_metric(list(labels), buckets, slots.get("sum", 0.0))
        return family
