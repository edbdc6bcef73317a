"""Failure isolation for what the database refuses: one poison event must never halt the pipeline.

`apply_events` isolates the failures it can see (an event that does not normalize or merge). Some
only surface when the database takes the batch's writes: PostgreSQL refuses NUL in text and NaN or
Infinity in JSON, and no driver encodes a lone surrogate. Those make the flush (or the commit) raise,
the whole batch rolls back, and its events stay pending, to be claimed and refused again by every
later drain. So when a batch raises, its events are applied again in halves, each half in its own
transaction, until the refused event stands alone; that event is then marked failed in its own
transaction (attempt counted, error kept) and the rest is applied. A batch with one poison event
costs about 2·log2(batch) extra transactions; a clean batch costs nothing extra.

Losing the database is not a poison: those errors propagate, the events stay pending, and the
sweeper re-queues them once it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rq.timeouts import JobTimeoutException
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from tributary.models import Event
from tributary.models.base import utcnow
from tributary.models.sql import is_postgres
from tributary.runtime.process import Runtime
from tributary.workers.batch.apply import MAX_ERROR_CHARS, BatchReport, apply_events, claim_events
from tributary.workers.batch.state import EventOutcome
from tributary.workers.batch.write_back import write_event_outcomes

log = logging.getLogger(__name__)


def isolable(exc: BaseException) -> bool:
    """Whether a failed batch may be blamed on its events (not on a lost database or a timeout)."""
    if isinstance(exc, JobTimeoutException | PoolTimeout):
        return False
    return not (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _database_answers(runtime: Runtime) -> bool:
    # A database that went down between statements must not get every event marked failed.
    try:
        runtime.db.ping()
    except Exception:
        return False
    return True


def failure_text(exc: BaseException) -> str:
    """The error kept on the event: the driver's own words, never the batch's SQL or parameters,
    and storable by every backend (the value that broke the write may be quoted in it)."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    text = f"the database refused this event's writes: {type(cause).__name__}: {cause}"
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:MAX_ERROR_CHARS]


def _claim_pending_ids(session: Session, ids: Sequence[str]) -> list[Event]:
    # Another worker may have claimed some of these since the batch rolled back (PostgreSQL): it
    # applies or isolates them itself, so skip its locks rather than wait for them.
    stmt = select(Event).where(Event.id.in_(ids), Event.status == "pending").order_by(Event.id)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def record_failure(runtime: Runtime, event_id: str, exc: BaseException, *, retry: bool = False) -> str | None:
    """Mark one event failed in its own transaction; returns the error kept, or None when there is
    nothing to mark: the event is gone, or another worker settled it meanwhile (a retry marks a
    failed event again, a drain only a pending one)."""
    error = failure_text(exc)
    with runtime.db.write_session() as session, session.begin():
        events = claim_events(session, [event_id])
        status = events[0].status if events else None
        if status is None or (status in ("processed", "ignored") if retry else status != "pending"):
            return None
        # The attempt history has this attempt too.
        write_event_outcomes(session, [EventOutcome(events[0], "failed", error)], utcnow())
    log.warning("event %s failed alone: %s", event_id, error)
    return error


def apply_isolated(runtime: Runtime, ids: Sequence[str]) -> BatchReport:
    """Apply the still-pending events among `ids`, bisecting around the ones the database refuses."""
    report = BatchReport()
    parts = [sorted(ids)]
    while parts:
        part = parts.pop()
        try:
            with runtime.db.write_session() as session, session.begin():
                events = _claim_pending_ids(session, part)
                applied = apply_events(session, events) if events else BatchReport()
        except Exception as exc:
            if not isolable(exc) or not _database_answers(runtime):
                raise
            if len(part) > 1:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # the older half first
            elif record_failure(runtime, part[0], exc):
                report.claimed += 1
                report.failed.append(part[0])
            continue
        report.claimed += applied.claimed
        report.processed += applied.processed
        report.ignored += applied.ignored
        report.failed += applied.failed
    return report
