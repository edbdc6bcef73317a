"""The RQ jobs that apply events: `drain` (what the doorbell schedules, runtime/doorbell.py) and
`process_event` (one event's retry or replay).

`drain` holds the doorbell while it claims batches until none are left, so rings meanwhile queue
nothing; it releases the doorbell and claims once more before it ends, so no wake-up is lost
(`DrainHold`, runtime/doorbell.py). A full batch recruits a helper job so idle workers join in
(PostgreSQL's SKIP LOCKED keeps them on different events). Whatever a lost job leaves pending, the
sweeper finds.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Retry

from tributary.models.read_ahead import ReadAhead
from tributary.models.session import driver_connection
from tributary.runtime.doorbell import DrainHold, recruit, ring
from tributary.runtime.process import Runtime, current
from tributary.workers.batch.apply import BatchReport, apply_events, claim_events, claim_pending
from tributary.workers.batch.held_writes import HeldWrites
from tributary.workers.failpoints import failpoint
from tributary.workers.isolation import apply_isolated, isolable, record_failure
from tributary.workers.stopping import STOP_REQUESTED
from tributary.workers.table_statistics import keep_fresh

log = logging.getLogger(__name__)

# A drain job yields after this long so RQ heartbeats, timeouts and other jobs get their turn.
DRAIN_SLICE_SECONDS = 30.0
# SQLite has one writer: between its batches a drain leaves the write lock free at least this long,
# so a web process waiting for it (trying every `WRITE_LOCK_POLL_S`, models/session.py) gets its turn.
SQLITE_YIELD_S = 0.002
# After a batch read ahead of SQLite's write lock had to be applied again under it, the next batches
# of this process take the lock from their claim on for this long: whatever wrote meanwhile (an
# import applying its own batches, another worker) is likely to write again, and each batch read
# ahead in vain costs its reads twice.
READ_AHEAD_PAUSE_S = 1.0


class _ReadAheadPause:
    paused_until = 0.0


READ_AHEAD = _ReadAheadPause()
# Backoff for an event that failed: its own job, retried by RQ, then kept in the failed registry.
# The default of `TRIBUTARY_RETRY_INTERVALS` (runtime/config.py); the runtime's settings decide.
RETRY_INTERVALS = [10, 60, 300, 1800]


def schedule_retry(runtime: Runtime, event_id: str) -> None:
    intervals = list(runtime.settings.retry_intervals)
    if not intervals:
        return  # no automatic retries: the event waits, failed, for an operator
    try:
        runtime.queue.enqueue_in(
            timedelta(seconds=intervals[0]),
            process_event,
            event_id,
            retry=Retry(max=len(intervals) - 1, interval=intervals[1:]) if len(intervals) > 1 else None,
            job_id=f"event-{event_id}",
            result_ttl=0,
            failure_ttl=30 * 86400,
            description=f"retry event {event_id}",
        )
    except RedisError as exc:
        log.warning("could not schedule a retry for %s: %s", event_id, exc)


def drain_batch(runtime: Runtime, limit: int | None = None) -> int:
    """Claim and apply one batch in one transaction; returns how many events it claimed."""
    limit = limit or runtime.settings.batch_size
    report = None
    if not runtime.db.is_postgres and time.monotonic() >= READ_AHEAD.paused_until:
        report = _read_ahead_batch(runtime, limit)
        if report is None:
            READ_AHEAD.paused_until = time.monotonic() + READ_AHEAD_PAUSE_S
    if report is None:
        report = _locked_batch(runtime, limit)
    if not report.claimed:
        return 0
    for event_id in report.failed:
        schedule_retry(runtime, event_id)
    # A table that doubled since its statistics is planned as if it were tiny: full scans per batch.
    keep_fresh(runtime.db)
    return report.claimed


def _locked_batch(runtime: Runtime, limit: int) -> BatchReport:
    """The batch inside one write transaction from its claim on (BEGIN IMMEDIATE on SQLite)."""
    claimed: list[str] = []
    try:
        with runtime.db.write_session() as session, session.begin():
            events = claim_pending(session, limit)
            if not events:
                return BatchReport()
            claimed = [event.id for event in events]
            report = apply_events(session, events)
            failpoint("batch.before_commit")
    except Exception as exc:
        # The database refused the batch's writes (workers/isolation.py): find the event it refused.
        if not claimed or not isolable(exc):
            raise
        log.warning("a batch of %d events failed (%s); applying it in parts", len(claimed), exc)
        report = apply_isolated(runtime, claimed)
        report.claimed = len(claimed)
    return report


def _read_ahead_batch(runtime: Runtime, limit: int) -> BatchReport | None:
    """SQLite: the batch claimed, normalized, loaded and merged in a read transaction, the write
    lock taken for its write-back only (models/read_ahead.py), whose statements are built before it
    and sent once it is held (workers/batch/held_writes.py). None when it must be applied again
    under the lock from the start: a table it read changed meanwhile, it had to write before its
    write-back, or anything failed (the locked batch then meets the failure itself, isolation and
    all). Nothing of it is written unless all of it is."""
    try:
        with runtime.db.read_ahead_session() as session, session.begin():
            ahead = ReadAhead(driver_connection(session.connection()))
            ahead.start()
            events = claim_pending(session, limit)
            if not events:
                return BatchReport()
            claimed = [event.id for event in events]
            held = HeldWrites(session, lambda: ahead.take_lock(claimed))
            report = apply_events(session, events, before_write=held.hold)
            held.release()
            failpoint("batch.before_commit")
    except Exception as exc:
        log.debug("a batch read ahead of the write lock is applied under it instead: %r", exc)
        return None
    return report


def drain() -> int:
    """The doorbell's job: apply pending events until none are left (or the time slice ends).

    Under steady load each batch is what arrived during the one before, and the job goes on until
    a claim finds nothing: stopping at the first batch smaller than `batch_size` made every such
    batch a job of its own, with RQ's round trips around it (an eighth of the worker's time in
    `tributary serve`). The job holds the doorbell while it loops (`DrainHold`), so a trickle stays
    on one worker; a full batch recruits another worker, which leaves again at its first batch
    that is not full.

    After a batch that was not full the job waits `drain_gather_seconds` (20 ms by default) before
    its next claim. A batch costs a dozen statements and a transaction whatever its size, and
    claimed at once, a steady trickle came one or two events at a time: at 200 webhooks/s the two
    workers and PostgreSQL used 1.3 CPUs for what a few batches a second carry (bench/README.md).
    An event is visible that much later at most; a full batch, the backlog, is claimed at once.

    A worker asked to stop (SIGTERM) ends the job after the batch in hand and rings for another
    worker to go on (`workers/stopping.py`), rather than draining on until the slice ends."""
    runtime = current()
    hold = DrainHold(runtime)
    hold.start()
    started = time.monotonic()
    total = 0
    try:
        while True:
            holding = hold.keep()
            claimed = drain_batch(runtime)
            if not claimed and holding:
                hold.release()
                # Events committed before the release rang while this job held the doorbell, so no
                # job was queued for them: one more claim finds them.
                claimed = drain_batch(runtime)
            total += claimed
            if not claimed:
                return total
            full = claimed >= runtime.settings.batch_size
            if full:
                recruit(runtime)
            elif not holding:
                return total  # a helper: the trickle is the holder's
            if STOP_REQUESTED.is_set() or time.monotonic() - started > DRAIN_SLICE_SECONDS:
                # Hand over to a new job (queued by the ring, as the key is free) for RQ's sake,
                # or for another worker's when this one is stopping.
                hold.release()
                ring(runtime)
                return total
            pause = 0.0 if full else runtime.settings.drain_gather_seconds
            if not runtime.db.is_postgres:
                pause = max(pause, SQLITE_YIELD_S)
            if pause:
                time.sleep(pause)
    except BaseException:
        # Rings that found the doorbell held by this job queued nothing: the next ring queues a job,
        # and the sweeper finds whatever waits longer.
        hold.release()
        raise


class EventFailed(Exception):
    """Raised by `process_event` so RQ records the failure and applies the retry policy."""


def process_event(event_id: str) -> str:
    """Apply one event (a retry or a replay). Idempotent: a processed event is left alone."""
    runtime = current()
    try:
        with runtime.db.write_session() as session, session.begin():
            events = claim_events(session, [event_id])
            if not events:
                return "missing"
            event = events[0]
            if event.status in ("processed", "ignored"):
                return event.status
            report = apply_events(session, events)
            status, error = event.status, event.last_error
    except Exception as exc:
        # Refused by the database: count the attempt and keep the error, as for any failure.
        if not isolable(exc) or (error := record_failure(runtime, event_id, exc, retry=True)) is None:
            raise
        raise EventFailed(f"event {event_id}: {error}") from exc
    if report.failed:
        raise EventFailed(f"event {event_id}: {error}")
    return status
