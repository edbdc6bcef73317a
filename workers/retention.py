"""Retention (SPEC §3): raw bodies of processed and ignored events older than
`TRIBUTARY_EVENT_RETENTION_DAYS` are purged. The event row, its changes, attempts and the timeline
stay; failed, pending and deferred events keep their bodies whatever their age, since an operator
may still need to retry or replay them. The payload (the connector's split of the body) goes too:
it holds the same personal data. A purged event can no longer be replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, TextClause, null, select, text, update

from tributary.models import Event
from tributary.models.base import utcnow
from tributary.models.event import PURGEABLE, PURGEABLE_ROWS
from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

PURGE_BATCH = 1000
PURGED_BODY = b""
RETENTION_LOCK_KEY = "tributary:retention:lock"
RETENTION_INTERVAL_SECONDS = 300


def expired(cutoff: datetime) -> tuple[TextClause, ColumnElement[bool]]:
    """The events whose body may be purged, received before `cutoff`: the partial index's own
    predicate, so they are found through it, oldest first (models/event.py)."""
    return (text(PURGEABLE_ROWS), Event.received_at < cutoff)


def purge_batch(runtime: Runtime, older_than: timedelta, limit: int = PURGE_BATCH) -> int:
    """Purge up to `limit` bodies in one short transaction; returns how many."""
    cutoff = utcnow() - older_than
    with runtime.db.write_session() as session, session.begin():
        ids = list(
            session.scalars(
                select(Event.id).where(*expired(cutoff)).order_by(Event.received_at, Event.id).limit(limit)
            )
        )
        if not ids:
            return 0
        session.execute(
            update(Event)
            # Re-checked here: an event replayed into `failed` meanwhile keeps its body.
            .where(Event.id.in_(ids), Event.status.in_(PURGEABLE))
            .values(body=PURGED_BODY, payload=null(), purged_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return len(ids)


def purge(
    runtime: Runtime, older_than: timedelta | None = None, progress: Callable[[int], None] | None = None
) -> int:
    """Purge every expired body, batch by batch; returns the total."""
    if older_than is None:
        older_than = timedelta(days=runtime.settings.event_retention_days)
    total = 0
    while purged := purge_batch(runtime, older_than):
        total += purged
        if progress is not None:
            progress(purged)
    if total:
        log.info("retention: purged the raw bodies of %d events older than %s", total, older_than)
    return total


def purge_if_due(runtime: Runtime) -> int | None:
    """From the periodic sweep: at most every few minutes across all workers (a Redis lock elects one)."""
    try:
        if not runtime.redis.set(RETENTION_LOCK_KEY, 1, nx=True, ex=RETENTION_INTERVAL_SECONDS):
            return None
    except RedisError:
        return None
    return purge(runtime)
