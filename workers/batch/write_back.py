"""Every SQL write of a worker batch, in one place: customers (created, renamed, updated, merged,
deleted), project rows, identity links, tombstones, merges, timeline rows and event outcomes with
their attempts.

`write_batch` takes the whole batch's pending writes at once (the `BatchState` its events committed
into, workers/batch/state.py) and runs in the batch's transaction: event status and customer writes
share it, so a worker killed mid-batch leaves its events pending and applies nothing. The only writes
that happen earlier are the load's (workers/batch/new_customers.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, insert, literal, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tributary.models import (
    Customer,
    CustomerMerge,
    CustomerProject,
    Event,
    Identity,
    IdentityTombstone,
    TimelineEntry,
)
from tributary.models.sql import is_postgres
from tributary.workers.batch import write_back_pg, write_back_sqlite
from tributary.workers.batch.email_record import clock_with_email
from tributary.workers.batch.new_customers import NewCustomer

if TYPE_CHECKING:
    from tributary.workers.batch.state import BatchState, EventOutcome, PlannedMerge

__all__ = ["write_batch", "write_event_outcomes"]


class _BulkWriter(Protocol):
    """The bulk statements of a batch, one module per backend: write_back_pg.py (one statement per
    table, rows as one JSON parameter) and write_back_sqlite.py (one executemany per table)."""

    def begin_writes(self, session: Session) -> None: ...
    def update_events(self, session: Session, events: Sequence[tuple[Event, dict[str, Any]]]) -> None: ...
    def write_customers(
        self,
        session: Session,
        created: Sequence[tuple[NewCustomer, dict[str, Any]]],
        changed: Sequence[tuple[Customer, dict[str, Any]]],
    ) -> None: ...
    def finish_batch(
        self,
        session: Session,
        projects: Sequence[dict[str, Any]],
        loaded: Sequence[CustomerProject | None],
        timeline: Sequence[dict[str, Any]],
        events: Sequence[tuple[Event, dict[str, Any]]],
    ) -> None: ...
    def delete_identities(self, session: Session, refs: Sequence[tuple[str, str, str]]) -> None: ...
    def insert_identities(
        self, session: Session, links: Sequence[tuple[tuple[str, str, str], str]], now: datetime
    ) -> None: ...
    def upsert_tombstones(self, session: Session, rows: Sequence[dict[str, Any]]) -> None: ...


def _writer(session: Session) -> _BulkWriter:
    # Two returns, not one conditional expression: mypy checks each module against the protocol
    # (the expression's type would be the plain module type, which it does not check).
    if is_postgres(session):
        return write_back_pg
    return write_back_sqlite


_QUIET = {"synchronize_session": False}


def write_batch(state: BatchState) -> None:
    """Write everything the batch's committed events changed, and every event's outcome."""
    writer = _writer(state.session)
    writer.begin_writes(state.session)
    # What the ORM holds dirty (woken events' cleared `awaiting`, a merge survivor's `created_at`)
    # goes first, so the bulk statements below are the last word on their rows.
    state.session.flush()
    _write_identity_changes(state)
    _write_customers(state, writer)
    _write_identities(state, writer)
    _write_tombstones(state, writer)
    # Project rows, timeline and event outcomes last: one statement on PostgreSQL.
    projects, loaded = _project_writes(state)
    outcomes = _event_writes(state.outcomes, state.now)
    writer.finish_batch(state.session, projects, loaded, state.timeline, outcomes)


def write_event_outcomes(session: Session, outcomes: Sequence[EventOutcome], now: datetime) -> None:
    """Each event's status, error and report, and one attempt row for it (the attempt history), in
    the caller's transaction: a rolled-back batch leaves none. On PostgreSQL one statement writes
    both (write_back_pg.py), on SQLite one executemany each (write_back_sqlite.py)."""
    _writer(session).update_events(session, _event_writes(outcomes, now))


def _event_writes(outcomes: Sequence[EventOutcome], now: datetime) -> list[tuple[Event, dict[str, Any]]]:
    """Each event with the values its outcome writes."""
    written: list[tuple[Event, dict[str, Any]]] = []
    for outcome in outcomes:
        event = outcome.event
        values: dict[str, Any] = {
            "attempts": event.attempts + 1,
            "status": outcome.status,
            "last_error": outcome.error,
            "processed_at": now,
        }
        if outcome.changes is not None:
            values["changes"] = outcome.changes
        if outcome.awaiting is not None:
            values["awaiting_source"], values["awaiting_id"] = outcome.awaiting[1], outcome.awaiting[2]
        written.append((event, values))
    return written


def _write_identity_changes(state: BatchState) -> None:
    """Placeholders, merges and renames, before any customer row is updated: they free the
    addresses that renamed customers take, and the unique index on (account, email) must hold
    after every statement."""
    session = state.session
    unused = sorted(state.displaced - state.used - state.absorbed.keys())
    stored: list[Customer] = []
    for customer_id in unused:
        row = state.customers.pop(customer_id)
        if isinstance(row, Customer):  # a new customer was never written: nothing to delete
            stored.append(row)
        state.records.pop(customer_id, None)
        state.drop_addresses(customer_id)
    if stored:
        ids = [row.id for row in stored]
        session.execute(delete(Customer).where(Customer.id.in_(ids)), execution_options=_QUIET)
        for row in stored:
            session.expunge(row)
    if state.merges:
        state.materialize({m.absorbed_id for m in state.merges} | {m.survivor_id for m in state.merges})
    for merge in state.merges:
        _write_merge(state, merge)
    # A new customer's row is written with its final address (see `_write_customers`).
    renamed = [r for c in sorted(state.renamed) if isinstance(r := state.customers.get(c), Customer)]
    if renamed:
        # Two steps, because renames can swap addresses (a -> b while b -> a): every renamed row
        # first takes a placeholder unique to it, then its final address (set with the row below).
        session.execute(
            update(Customer)
            .where(Customer.id.in_([row.id for row in renamed]))
            .values(email=literal("~renaming~") + Customer.id),
            execution_options=_QUIET,
        )
        for row in renamed:
            set_committed_value(row, "email", f"~renaming~{row.id}")


def _write_merge(state: BatchState, merge: PlannedMerge) -> None:
    session = state.session
    absorbed, survivor = merge.absorbed_id, merge.survivor_id
    for model in (Identity, IdentityTombstone, TimelineEntry):
        session.execute(
            update(model).where(model.customer_id == absorbed).values(customer_id=survivor),
            execution_options=_QUIET,
        )
    # Where the absorbed customer's earlier merges point: always the current survivor.
    session.execute(
        update(CustomerMerge).where(CustomerMerge.survivor_id == absorbed).values(survivor_id=survivor),
        execution_options=_QUIET,
    )
    for key in sorted(k for k in state.project_rows if k[0] == absorbed):
        row = state.project_rows.pop(key)
        target = (survivor, key[1])
        if target in state.project_rows:
            # Both had the project: the united record is written to the survivor's row.
            session.execute(
                delete(CustomerProject).where(CustomerProject.id == row.id), execution_options=_QUIET
            )
            session.expunge(row)
        else:
            session.execute(
                update(CustomerProject).where(CustomerProject.id == row.id).values(customer_id=survivor),
                execution_options=_QUIET,
            )
            set_committed_value(row, "customer_id", survivor)
            state.project_rows[target] = row
    gone, kept = state.row(absorbed), state.row(survivor)
    del state.customers[absorbed]
    kept.created_at = min(kept.created_at, gone.created_at)
    session.execute(delete(Customer).where(Customer.id == absorbed), execution_options=_QUIET)
    session.expunge(gone)
    session.execute(
        insert(CustomerMerge).values(
            account_id=merge.account_id,
            absorbed_id=absorbed,
            survivor_id=survivor,
            email=merge.email,
            event_id=merge.event_id,
            occurred_at=merge.occurred_at,
            recorded_at=state.now,
        )
    )


def _write_customers(state: BatchState, writer: _BulkWriter) -> None:
    """Name, clocks, activity and addresses (an email change lands here): on PostgreSQL in one
    statement for the new customers and the others (write_back_pg.py), on SQLite in one
    executemany each (write_back_sqlite.py)."""
    created: list[tuple[NewCustomer, dict[str, Any]]] = []
    changed: list[tuple[Customer, dict[str, Any]]] = []
    for customer_id, record in state.records.items():
        row = state.customers[customer_id]
        address = state.addresses[customer_id]
        values: dict[str, Any] = {
            "name": record.name,
            "clock": clock_with_email(record.clock, address),
            "last_activity_at": record.last_activity_at,
            "email": address.email,
            "past_emails": address.past_emails(),
        }
        if isinstance(row, NewCustomer):
            created.append((row, {**values, "created_at": row.created_at, "updated_at": state.now}))
        elif any(getattr(row, name) != value for name, value in values.items()):
            changed.append((row, {**values, "updated_at": state.now}))
        elif customer_id in state.touched:
            changed.append((row, {**_current(row), "updated_at": state.now}))
    # New customers' addresses are free once the identity changes above have run, and the others'
    # updates only take addresses that no new customer has: one statement on PostgreSQL.
    writer.write_customers(state.session, created, changed)


def _current(row: Customer) -> dict[str, Any]:
    return {
        "name": row.name,
        "clock": row.clock,
        "last_activity_at": row.last_activity_at,
        "email": row.email,
        "past_emails": row.past_emails,
    }


def _project_writes(state: BatchState) -> tuple[list[dict[str, Any]], list[CustomerProject | None]]:
    """The project rows the batch changed, each with the ORM row it updates (None for a new one)."""
    rows: list[dict[str, Any]] = []
    loaded: list[CustomerProject | None] = []
    for key, project in state.project_records.items():
        existing = state.project_rows.get(key)
        values = {
            "status": project.status,
            "params": dict(project.params),
            "clock": dict(project.clock),
            "first_seen_at": project.first_seen_at,
            "last_activity_at": project.last_activity_at,
        }
        if existing is not None and all(getattr(existing, n) == v for n, v in values.items()):
            continue
        rows.append({"customer_id": key[0], "project_id": key[1], **values, "updated_at": state.now})
        loaded.append(existing)
    return rows, loaded


def _write_identities(state: BatchState, writer: _BulkWriter) -> None:
    # Deletions first: an identity forgotten and then linked again in one batch ends up linked.
    forgotten = sorted(state.forgotten)
    links = sorted(state.new_identities.items())
    writer.delete_identities(state.session, forgotten)
    writer.insert_identities(state.session, links, state.now)


def _write_tombstones(state: BatchState, writer: _BulkWriter) -> None:
    if not state.tombstones_changed:
        return
    rows = [
        {
            "account_id": ref[0],
            "source": ref[1],
            "external_id": ref[2],
            "customer_id": tombstone.customer_id,
            "forgotten_at": tombstone.forgotten_at,
            "event_id": tombstone.event_id,
            "event_type": tombstone.event_type,
            "created_at": state.now,
        }
        for ref in sorted(state.tombstones_changed)
        if (tombstone := state.tombstones[ref])
    ]
    writer.upsert_tombstones(state.session, rows)
