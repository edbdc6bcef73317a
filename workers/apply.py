"""Apply claimed events to customer records, many events per transaction.

A batch costs a fixed number of statements whatever its size: claim, upsert the customers it names,
lock them, load their project rows, then write back every change in bulk. The merge itself is pure
(`workers/merge.py`) and runs on immutable snapshots, so an event whose changes cannot be applied
is marked failed alone while the rest of the batch commits. Event status and customer writes share
the transaction: a worker killed mid-batch leaves every claimed event pending and nothing applied.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors.changes import CustomerChange
from models import Customer, CustomerProject, Event, Identity
from models import CustomerChange as ChangeRow
from models.base import isoformat, utcnow
from workers.merge import CustomerRecord, MergeResult, ProjectRecord, apply_change, new_project_record
from workers.normalize import EventIgnored, changes_for_event

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


class ApplyError(Exception):
    """A change that cannot be applied (for example, no way to tell whom it is about)."""


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: list[str] = field(default_factory=list)


def dialect_insert(session: Session, table: Any) -> Any:
    """An INSERT that understands ON CONFLICT on the session's backend."""
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


class _Working:
    """The batch's customers and project rows: ORM rows as loaded, snapshots as merged so far."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self.customers: dict[str, Customer] = {}
        self.by_email: dict[tuple[str, str], str] = {}
        self.by_identity: dict[tuple[str, str, str], str] = {}
        self.created: set[str] = set()
        self.records: dict[str, CustomerRecord] = {}
        self.project_rows: dict[tuple[str, str], CustomerProject] = {}
        self.project_records: dict[tuple[str, str], ProjectRecord] = {}
        self.new_identities: dict[tuple[str, str, str], str] = {}
        self.forgotten: set[tuple[str, str, str]] = set()
        self.change_rows: list[dict[str, Any]] = []
        # Customers whose creation is already on the timeline, and customers this batch touched.
        self.announced: set[str] = set()
        self.touched: set[str] = set()

    def load(self, planned: Iterable[tuple[Event, list[CustomerChange]]]) -> None:
        emails: dict[str, set[str]] = defaultdict(set)
        identities: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for event, changes in planned:
            for change in changes:
                if change.email:
                    emails[event.account_id].add(change.email)
                if change.identity:
                    identities[event.account_id].add((change.identity.source, change.identity.external_id))
        for account_id in sorted(emails.keys() | identities.keys()):
            self._load_account(account_id, sorted(emails[account_id]), sorted(identities[account_id]))
        if self.customers:
            rows = self.session.scalars(
                select(CustomerProject).where(CustomerProject.customer_id.in_(list(self.customers)))
            )
            for row in rows:
                key = (row.customer_id, row.project_id)
                self.project_rows[key] = row
                self.project_records[key] = ProjectRecord(
                    first_seen_at=row.first_seen_at,
                    status=row.status,
                    params=row.params,
                    clock=row.clock,
                    last_activity_at=row.last_activity_at,
                )

    def _load_account(self, account_id: str, emails: list[str], identities: list[tuple[str, str]]) -> None:
        session = self.session
        identity_customer_ids: list[str] = []
        if identities:
            rows = session.execute(
                select(Identity.source, Identity.external_id, Identity.customer_id).where(
                    Identity.account_id == account_id,
                    tuple_(Identity.source, Identity.external_id).in_(identities),
                )
            )
            for source, external_id, customer_id in rows:
                self.by_identity[(account_id, source, external_id)] = customer_id
                identity_customer_ids.append(customer_id)
        if emails:
            # Sorted inserts: concurrent batches take unique-index locks in the same order.
            stmt = (
                dialect_insert(session, Customer)
                .on_conflict_do_nothing(index_elements=["account_id", "email"])
                .returning(Customer.id)
            )
            rows = [
                {"account_id": account_id, "email": email, "past_emails": [], "clock": {}} for email in emails
            ]
            self.created.update(session.scalars(stmt, rows))
        if not emails and not identity_customer_ids:
            return
        conditions = []
        if emails:
            conditions.append(Customer.email.in_(emails))
        if identity_customer_ids:
            conditions.append(Customer.id.in_(identity_customer_ids))
        stmt = (
            select(Customer)
            .where(Customer.account_id == account_id, or_(*conditions))
            .order_by(Customer.id)
            .execution_options(populate_existing=True)
        )
        if is_postgres(session):
            # The customer row is the lock that serializes workers writing the same person.
            stmt = stmt.with_for_update()
        for customer in session.scalars(stmt):
            self.customers[customer.id] = customer
            self.by_email[(account_id, customer.email)] = customer.id
            self.records[customer.id] = CustomerRecord(
                name=customer.name, clock=customer.clock, last_activity_at=customer.last_activity_at
            )

    def resolve(self, account_id: str, change: CustomerChange) -> str:
        if change.email:
            customer_id = self.by_email.get((account_id, change.email))
            if customer_id is None:
                raise ApplyError(f"customer {change.email!r} could not be created")
            return customer_id
        if change.identity:
            ref = (account_id, change.identity.source, change.identity.external_id)
            customer_id = self.by_identity.get(ref) or self.new_identities.get(ref)
            if customer_id is None or ref in self.forgotten:
                raise ApplyError(
                    f"no customer is known for {change.identity.source} id "
                    f"{change.identity.external_id!r} and the event carries no email"
                )
            return customer_id
        raise ApplyError("the change names neither an email nor an identity")


def _apply_event(work: _Working, event: Event, changes: list[CustomerChange]) -> list[dict[str, Any]]:
    """Merge one event's changes into the working state, all or nothing, and return its report."""
    records = dict[str, CustomerRecord]()
    projects = dict[tuple[str, str], ProjectRecord]()
    links: dict[tuple[str, str, str], str] = {}
    forgets: set[tuple[str, str, str]] = set()
    announced: set[str] = set()
    rows: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    for change in changes:
        if change.email_change:
            raise ApplyError("email changes are not supported by this version of the worker")
        customer_id = work.resolve(event.account_id, change)
        key = (customer_id, event.project_id)
        customer = records.get(customer_id) or work.records[customer_id]
        joined = key not in projects and key not in work.project_records
        project = projects.get(key) or work.project_records.get(key) or new_project_record(change)
        result: MergeResult = apply_change(customer, project, change)
        records[customer_id] = result.customer
        projects[key] = result.project
        data: dict[str, Any] = {}
        if result.changed:
            data["changed"] = _jsonable(result.changed)
        if result.stale:
            data["stale"] = _jsonable(result.stale)
        if customer_id in work.created and customer_id not in work.announced and customer_id not in announced:
            announced.add(customer_id)
            data["created"] = True
        if joined:
            data["joined_project"] = True
        if change.identity:
            ref = (event.account_id, change.identity.source, change.identity.external_id)
            if change.forget_identity:
                if ref in work.by_identity or ref in work.new_identities:
                    forgets.add(ref)
                    data["identity_removed"] = [change.identity.source, change.identity.external_id]
            elif ref not in work.by_identity and ref not in work.new_identities:
                links[ref] = customer_id
                data["identity_linked"] = [change.identity.source, change.identity.external_id]
        rows.append(
            {
                "customer_id": customer_id,
                "project_id": event.project_id,
                "event_id": event.id,
                "kind": event.type,
                "data": data,
                "occurred_at": change.occurred_at,
                "recorded_at": work.now,
            }
        )
        report.append({"customer_id": customer_id, "change": change.to_json(), **data})
    # The whole event merged cleanly: publish it to the batch.
    work.records.update(records)
    work.project_records.update(projects)
    work.new_identities.update(links)
    for ref in forgets:
        work.forgotten.add(ref)
        work.new_identities.pop(ref, None)
    work.change_rows.extend(rows)
    work.announced.update(announced)
    work.touched.update(row["customer_id"] for row in rows if row["data"])
    return report


def _write_back(work: _Working) -> None:
    session = work.session
    for customer_id, record in work.records.items():
        row = work.customers[customer_id]
        if (row.name, row.clock, row.last_activity_at) != (
            record.name,
            record.clock,
            record.last_activity_at,
        ):
            row.name = record.name
            row.clock = dict(record.clock)
            row.last_activity_at = record.last_activity_at
            row.updated_at = work.now
        elif customer_id in work.touched:
            row.updated_at = work.now
    for key, record in work.project_records.items():
        existing = work.project_rows.get(key)
        if existing is None:
            session.add(
                CustomerProject(
                    customer_id=key[0],
                    project_id=key[1],
                    status=record.status,
                    params=dict(record.params),
                    clock=dict(record.clock),
                    first_seen_at=record.first_seen_at,
                    last_activity_at=record.last_activity_at,
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
            record.status,
            record.params,
            record.clock,
            record.first_seen_at,
            record.last_activity_at,
        ):
            existing.status = record.status
            existing.params = dict(record.params)
            existing.clock = dict(record.clock)
            existing.first_seen_at = record.first_seen_at
            existing.last_activity_at = record.last_activity_at
            existing.updated_at = work.now
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
    for account_id, source, external_id in sorted(work.forgotten):
        session.execute(
            delete(Identity).where(
                Identity.account_id == account_id,
                Identity.source == source,
                Identity.external_id == external_id,
            )
        )
    if work.change_rows:
        session.execute(insert(ChangeRow), work.change_rows)


def apply_events(session: Session, events: Sequence[Event]) -> BatchReport:
    """Apply locked events inside the caller's transaction. Returns what happened to each."""
    now = utcnow()
    report = BatchReport(claimed=len(events))
    planned: list[tuple[Event, list[CustomerChange]]] = []
    for event in events:
        event.attempts += 1
        try:
            planned.append((event, changes_for_event(session, event)))
        except EventIgnored as exc:
            _finish(event, "ignored", now, error=str(exc) or "event type not tracked")
            report.ignored += 1
        except Exception as exc:
            log.info("event %s failed to normalize: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)

    work = _Working(session, now)
    work.load(planned)
    for event, changes in planned:
        try:
            event_report = _apply_event(work, event, changes)
        except Exception as exc:
            log.info("event %s failed to apply: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)
            continue
        _finish(event, "processed", now, changes=event_report)
        report.processed += 1
    _write_back(work)
    session.flush()
    return report


def _finish(
    event: Event, status: str, now: datetime, *, error: str | None = None, changes: list[Any] | None = None
) -> None:
    event.status = status
    event.last_error = error
    event.processed_at = now
    if changes is not None:
        event.changes = changes
