"""Find events left pending (Redis was flushed or down at ingest) and schedule them again; wake
or expire events deferred while they wait for their person (workers/deferred.py); fold the
metrics' event tallies (models/event_tally.py); queue again the background replays whose runner
died (workers/replay_watch.py)."""

from __future__ import annotations

import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import func, select

from tributary.models import Event
from tributary.models.base import utcnow
from tributary.models.event_tally import compact
from tributary.runtime.doorbell import DOORBELL_KEY, ring
from tributary.runtime.process import Runtime
from tributary.workers.deferred import expire_deferred, wake_known
from tributary.workers.replay_watch import resume_orphaned
from tributary.workers.retention import purge_if_due

log = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "tributary:sweep:lock"


def stale_pending(runtime: Runtime, older_than: timedelta) -> int:
    cutoff = utcnow() - older_than
    with runtime.db.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.status == "pending", Event.received_at <= cutoff)
        )
    return int(count or 0)


def sweep(runtime: Runtime, older_than: timedelta | None = None) -> int:
    """Returns how many pending events older than `older_than` it found (and scheduled)."""
    if older_than is None:
        older_than = timedelta(seconds=runtime.settings.sweep_after_seconds)
    sweep_deferred(runtime)
    compact_tallies(runtime)
    resume_replays(runtime)
    found = stale_pending(runtime, older_than)
    if found:
        try:
            # Events this old missed their drain job: whatever the doorbell says, schedule one.
            runtime.redis.delete(DOORBELL_KEY)
        except RedisError as exc:
            log.warning("sweep found %d pending events but Redis is unreachable: %s", found, exc)
            return found
        ring(runtime)
        log.info("sweep: %d pending events older than %s rescheduled", found, older_than)
    return found


def sweep_deferred(runtime: Runtime) -> tuple[int, int]:
    """(woken, expired): deferred events whose person became known go back to pending (a batch
    normally wakes them itself); those that waited longer than TRIBUTARY_DEFER_SECONDS are ignored."""
    with runtime.db.write_session() as session, session.begin():
        woken = wake_known(session)
        expired = expire_deferred(session, timedelta(seconds=runtime.settings.defer_seconds), utcnow())
    if woken:
        ring(runtime)
    if woken or expired:
        log.info("sweep: %d deferred events woken, %d expired (ignored)", woken, expired)
    return woken, expired


def resume_replays(runtime: Runtime) -> list[str]:
    try:
        return resume_orphaned(runtime)
    except RedisError as exc:
        log.warning("sweep could not check the background replays, Redis is unreachable: %s", exc)
        return []


def compact_tallies(runtime: Runtime) -> int:
    """Fold the rows the triggers appended since the last sweep (a few per second under load), so
    a scrape sums a bounded number of rows; returns how many were folded. SQLite keeps no
    tallies: it is not asked for its write lock for nothing."""
    if not runtime.db.is_postgres:
        return 0
    with runtime.db.write_session() as session, session.begin():
        return compact(session)


def sweep_if_due(runtime: Runtime) -> int | None:
    """Sweep at most once per interval across all workers (a Redis lock elects one)."""
    try:
        if not runtime.redis.set(SWEEP_LOCK_KEY, 1, nx=True, ex=runtime.settings.sweep_interval_seconds):
            return None
    except RedisError:
        return None
    found = sweep(runtime)
    purge_if_due(runtime)  # retention rides on the same elected sweeper, on its own longer lock
    return found
