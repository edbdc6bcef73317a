"""Apply claimed events to customer records, many events per transaction.

A batch costs a fixed number of statements whatever its size: claim, find and lock the customers it
names (new ones: workers/batch/new_customers.py), load their project rows, then write back every
change in bulk. For each event:

1. its connector's changes (workers/normalize.py);
2. an `EventOverlay` over the `BatchState` (overlay.py, state.py), where each change is resolved to
   its customer (identity_resolution.py) and merged by the pure field rules (merge_rules.py);
3. one `commit` of the overlay into the state, or, when anything raised, nothing: the event is
   marked failed (or `deferred`, waiting for its person) alone while the rest of the batch commits.

Then `write_back.write_batch` writes the whole batch. Event status and customer writes share the
transaction: a worker killed mid-batch leaves every claimed event pending and nothing applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from tributary.connectors.changes import CustomerChange
from tributary.models import Event
from tributary.models.base import isoformat, utcnow
from tributary.models.sql import is_postgres
from tributary.workers.batch.identity_resolution import (
    IdentityUnknown,
    assert_email,
    forget_identity,
    note_resolved,
    resolve_customer,
)
from tributary.workers.batch.merge_rules import apply_change, new_project_record
from tributary.workers.batch.overlay import EventOverlay
from tributary.workers.batch.state import BatchState
from tributary.workers.batch.write_back import write_batch
from tributary.workers.deferred import claim_woken
from tributary.workers.normalize import EventIgnored, changes_for_event

__all__ = ["MAX_ERROR_CHARS", "BatchReport", "apply_events", "claim_events", "claim_pending"]

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: list[str] = field(default_factory=list)
    # Waiting for their person (workers/deferred.py), and how many waiting events this batch woke.
    deferred: list[str] = field(default_factory=list)
    woken: int = 0


def claim_pending(session: Session, limit: int) -> list[Event]:
    """Lock up to `limit` pending events, oldest first. Other workers skip rows locked here
    (PostgreSQL); on SQLite the caller's BEGIN IMMEDIATE already excludes other writers."""
    return list(session.scalars(_claim_statement(is_postgres(session)), {"limit": limit}))


@cache
def _claim_statement(postgres: bool) -> Select[Event]:
    # Built once, as the load's statements are (load_statements.py).
    stmt = select(Event).where(Event.status == "pending").order_by(Event.id).limit(bindparam("limit"))
    return stmt.with_for_update(skip_locked=True) if postgres else stmt


def claim_events(session: Session, ids: Sequence[str]) -> list[Event]:
    """Lock specific events for a retry or replay, waiting for any worker that holds them."""
    stmt = select(Event).where(Event.id.in_(ids)).order_by(Event.id)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _merge_event(overlay: EventOverlay, changes: list[CustomerChange]) -> list[dict[str, Any]]:
    """Merge one event's changes into its overlay and return the event's report."""
    state, event = overlay.state, overlay.event
    report: list[dict[str, Any]] = []
    for change in changes:
        data: dict[str, Any] = {}
        ref = (
            (event.account_id, change.identity.source, change.identity.external_id)
            if change.identity
            else None
        )
        if ref is not None and change.forget_identity:
            # A provider deletion changes no field and joins no project: it only retires the link.
            report.append(forget_identity(overlay, ref, change, data))
            continue
        if ref is not None and change.email_change and change.email:
            customer_id = assert_email(overlay, ref, change, data)
        else:
            customer_id = resolve_customer(overlay, change)
        # Older than the identity's deletion: applied to the customer it had, never linked again.
        ghosted = note_resolved(overlay, ref, change, customer_id)
        key = (customer_id, event.project_id)
        joined = key not in overlay.projects and key not in state.project_records
        project = overlay.project(key) or new_project_record(change)
        result = apply_change(overlay.customer(customer_id), project, change)
        overlay.records[customer_id] = result.customer
        overlay.projects[key] = result.project
        if result.changed:
            data["changed"] = jsonable(result.changed)
        if result.stale:
            data["stale"] = jsonable(result.stale)
        if (
            customer_id in state.created
            and customer_id not in state.announced
            and customer_id not in overlay.announced
        ):
            overlay.announced.add(customer_id)
            data["created"] = True
        if joined:
            data["joined_project"] = True
        if (
            ref is not None
            and not ghosted
            and ref not in state.by_identity
            and ref not in state.new_identities
        ):
            overlay.links[ref] = customer_id
            data["identity_linked"] = [ref[1], ref[2]]
        overlay.record_timeline(customer_id, change, data)
        report.append({"customer_id": customer_id, "change": change.to_json(), **data})
    return report


def apply_events(
    session: Session, events: Sequence[Event], before_write: Callable[[], None] | None = None
) -> BatchReport:
    """Apply locked events inside the caller's transaction. Returns what happened to each.
    `before_write` runs between the merge and the write-back: where a batch read ahead of SQLite's
    write lock starts holding its statements until it takes the lock (workers/jobs.py)."""
    state = BatchState(session, utcnow())
    report = BatchReport(claimed=len(events))
    planned: list[tuple[Event, list[CustomerChange]]] = []
    for event in events:
        try:
            planned.append((event, changes_for_event(session, event)))
        except EventIgnored as exc:
            state.finish(event, "ignored", error=str(exc) or "event type not tracked")
            report.ignored += 1
        except Exception as exc:
            log.info("event %s failed to normalize: %s", event.id, exc)
            state.finish(event, "failed", error=_error_text(exc))
            report.failed.append(event.id)

    state.load(planned)
    for event, changes in planned:
        overlay = EventOverlay(state, event)
        try:
            event_report = _merge_event(overlay, changes)
        except IdentityUnknown as exc:
            # Not a failure: retrying cannot help until an event names the person.
            state.finish(event, "deferred", error=_error_text(exc), awaiting=exc.ref)
            report.deferred.append(event.id)
            continue
        except Exception as exc:
            log.info("event %s failed to apply: %s", event.id, exc)
            state.finish(event, "failed", error=_error_text(exc))
            report.failed.append(event.id)
            continue
        # The whole event merged cleanly: its one commit into the batch.
        overlay.commit()
        state.finish(event, "processed", changes=event_report)
        report.processed += 1
    if before_write is not None:
        before_write()
    write_batch(state)
    session.flush()
    # Events that waited for a person this batch made known: applied now, in this transaction.
    if woken := claim_woken(session, state.known_identities()):
        more = apply_events(session, woken)
        report.woken += len(woken) + more.woken
        report.processed += more.processed
        report.ignored += more.ignored
        report.failed.extend(more.failed)
        again = {event.id for event in woken}
        report.deferred = [e for e in report.deferred if e not in again] + more.deferred
    return report
