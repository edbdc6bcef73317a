"""Apply claimed events to customer records, many events per transaction.

A batch costs a fixed number of statements whatever its size: claim, upsert the customers it names,
lock them, load their project rows, then write back every change in bulk. The merge itself is pure
(`workers/merge.py`) and runs on immutable snapshots, so an event whose changes cannot be applied
is marked failed alone while the rest of the batch commits. Event status and customer writes share
the transaction: a worker killed mid-batch leaves every claimed event pending and nothing applied.

Provider identity rules (email changes, merges, deletions) live in `workers/identities.py`; the
batch's loaded state in `workers/batch_state.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, object_session

from connectors.changes import CustomerChange
from models import CustomerChange as ChangeRow
from models import CustomerProject, Event, EventAttempt, Identity
from models.base import utcnow
from models.sql import dialect_insert, is_postgres
from workers.batch_state import IdentityUnknown, Working, change_row, jsonable
from workers.deferred import claim_woken, defer, known_refs
from workers.identities import EventIdentities, clock_with_email, write_identity_changes, write_tombstones
from workers.merge import CustomerRecord, MergeResult, ProjectRecord, apply_change, new_project_record
from workers.normalize import EventIgnored, changes_for_event

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
ATTEMPTS = "tributary.attempts"


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
    stmt = select(Event).where(Event.status == "pending").order_by(Event.id).limit(limit)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def claim_events(session: Session, ids: Sequence[str]) -> list[Event]:
    """Lock specific events for a retry or replay, waiting for any worker that holds them."""
    stmt = select(Event).where(Event.id.in_(ids)).order_by(Event.id)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


def _apply_event(work: Working, event: Event, changes: list[CustomerChange]) -> list[dict[str, Any]]:
    """Merge one event's changes into the working state, all or nothing, and return its report."""
    records = dict[str, CustomerRecord]()
    projects = dict[tuple[str, str], ProjectRecord]()
    links: dict[tuple[str, str, str], str] = {}
    forgets: set[tuple[str, str, str]] = set()
    announced: set[str] = set()
    rows: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    identities = EventIdentities(work, event, records, projects, rows)
    for change in changes:
        data: dict[str, Any] = {}
        ref = (
            (event.account_id, change.identity.source, change.identity.external_id)
            if change.identity
            else None
        )
        if ref is not None and change.forget_identity:
            # A provider deletion changes no field and joins no project: it only retires the link.
            report.append(identities.forget(ref, change, forgets, data))
            continue
        if ref is not None and change.email_change and change.email:
            customer_id = identities.assert_email(ref, change, data)
        else:
            customer_id = work.resolve(event.account_id, change)
        # Older than the identity's deletion: applied to the customer it had, never linked again.
        ghosted = identities.resolved(ref, change, customer_id)
        key = (customer_id, event.project_id)
        customer = records.get(customer_id) or work.records[customer_id]
        joined = key not in projects and key not in work.project_records
        project = projects.get(key) or work.project_records.get(key) or new_project_record(change)
        result: MergeResult = apply_change(customer, project, change)
        records[customer_id] = result.customer
        projects[key] = result.project
        if result.changed:
            data["changed"] = jsonable(result.changed)
        if result.stale:
            data["stale"] = jsonable(result.stale)
        if customer_id in work.created and customer_id not in work.announced and customer_id not in announced:
            announced.add(customer_id)
            data["created"] = True
        if joined:
            data["joined_project"] = True
        if ref is not None and not ghosted and ref not in work.by_identity and ref not in work.new_identities:
            links[ref] = customer_id
            data["identity_linked"] = [ref[1], ref[2]]
        rows.append(change_row(work, event, customer_id, change, data))
        report.append({"customer_id": customer_id, "change": change.to_json(), **data})
    # The whole event merged cleanly: publish it to the batch.
    work.records.update(records)
    work.project_records.update(projects)
    work.new_identities.update(links)
    for ref in forgets:
        work.forgotten.add(ref)
        work.new_identities.pop(ref, None)
        work.by_identity.pop(ref, None)
    work.change_rows.extend(rows)
    work.announced.update(announced)
    work.touched.update(row["customer_id"] for row in rows if row["data"])
    identities.publish()
    return report


def _write_back(work: Working) -> None:
    session = work.session
    write_identity_changes(work)
    for customer_id, record in work.records.items():
        row = work.customers[customer_id]
        address = work.addresses[customer_id]
        clock = clock_with_email(record.clock, address)
        if (row.name, row.clock, row.last_activity_at, row.email, row.past_emails) != (
            record.name,
            clock,
            record.last_activity_at,
            address.email,
            address.past_emails(),
        ):
            row.name = record.name
            row.clock = clock
            row.last_activity_at = record.last_activity_at
            row.email = address.email
            row.past_emails = address.past_emails()
            row.updated_at = work.now
        elif customer_id in work.touched:
            row.updated_at = work.now
    for key, project in work.project_records.items():
        existing = work.project_rows.get(key)
        if existing is None:
            session.add(
                CustomerProject(
                    customer_id=key[0],
                    project_id=key[1],
                    status=project.status,
                    params=dict(project.params),
                    clock=dict(project.clock),
                    first_seen_at=project.first_seen_at,
                    last_activity_at=project.last_activity_at,
                    updated_at=work.now,
                )
            )
        elif (
            existing.status,
            existing.params,
            existing.clock,
            existing.first_seen_at,
            existing.last_activity_at,
        ) != (
            project.status,
            project.params,
            project.clock,
            project.first_seen_at,
            project.last_activity_at,
        ):
            existing.status = project.status
            existing.params = dict(project.params)
            existing.clock = dict(project.clock)
            existing.first_seen_at = project.first_seen_at
            existing.last_activity_at = project.last_activity_at
            existing.updated_at = work.now
    # Deletions first: an identity forgotten and then linked again in one batch ends up linked.
    for account_id, source, external_id in sorted(work.forgotten):
        session.execute(
            delete(Identity).where(
                Identity.account_id == account_id,
                Identity.source == source,
                Identity.external_id == external_id,
            )
        )
    if work.new_identities:
        stmt = dialect_insert(session, Identity).on_conflict_do_nothing(
            index_elements=["account_id", "source", "external_id"]
        )
        session.execute(
            stmt,
            [
                {"account_id": a, "source": s, "external_id": x, "customer_id": c}
                for (a, s, x), c in sorted(work.new_identities.items())
            ],
        )
    write_tombstones(work)
    if work.change_rows:
        session.execute(insert(ChangeRow), work.change_rows)


def apply_events(session: Session, events: Sequence[Event]) -> BatchReport:
    """Apply locked events inside the caller's transaction. Returns what happened to each."""
    now = utcnow()
    report = BatchReport(claimed=len(events))
    session.info.pop(ATTEMPTS, None)  # nothing left over from an earlier call that raised
    planned: list[tuple[Event, list[CustomerChange]]] = []
    for event in events:
        # `attempts` is counted in _finish, which every event reaches exactly once: set here, it made
        # the first autoflush (in load) UPDATE every event once more before its real write-back.
        try:
            planned.append((event, changes_for_event(session, event)))
        except EventIgnored as exc:
            _finish(event, "ignored", now, error=str(exc) or "event type not tracked")
            report.ignored += 1
        except Exception as exc:
            log.info("event %s failed to normalize: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)

    work = Working(session, now)
    work.load(planned)
    for event, changes in planned:
        try:
            event_report = _apply_event(work, event, changes)
        except IdentityUnknown as exc:
            # Not a failure: retrying cannot help until an event names the person.
            _finish(event, "deferred", now, error=_error_text(exc))
            defer(event, exc.ref)
            report.deferred.append(event.id)
            continue
        except Exception as exc:
            log.info("event %s failed to apply: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)
            continue
        _finish(event, "processed", now, changes=event_report)
        report.processed += 1
    _write_back(work)
    record_attempts(session)
    session.flush()
    # Events that waited for a person this batch made known: applied now, in this transaction.
    if woken := claim_woken(session, known_refs(work)):
        more = apply_events(session, woken)
        report.woken += len(woken) + more.woken
        report.processed += more.processed
        report.ignored += more.ignored
        report.failed.extend(more.failed)
        again = {event.id for event in woken}
        report.deferred = [e for e in report.deferred if e not in again] + more.deferred
    return report


def record_attempts(session: Session) -> None:
    """Insert the attempt rows `_finish` queued on `session`, taking them off it so that each is
    written once. Whoever calls `_finish` outside `apply_events` calls this in the same transaction."""
    if attempts := session.info.pop(ATTEMPTS, None):
        session.execute(insert(EventAttempt), attempts)


def _finish(
    event: Event, status: str, now: datetime, *, error: str | None = None, changes: list[Any] | None = None
) -> None:
    event.attempts += 1
    event.status = status
    event.last_error = error
    event.processed_at = now
    if changes is not None:
        event.changes = changes
    # Collected as plain rows and inserted in bulk by apply_events, in the event's transaction: a
    # rolled-back batch leaves no attempt, and 500 events cost one executemany, not 500 ORM objects.
    if (session := object_session(event)) is not None:
        session.info.setdefault(ATTEMPTS, []).append(
            {
                "event_id": event.id,
                "number": event.attempts,
                "outcome": status,
                "error": error,
                "attempted_at": now,
            }
        )
