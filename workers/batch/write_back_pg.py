"""The bulk writes of a batch on PostgreSQL: one statement per table whatever the batch's size,
and the batch's last writes (project rows, timeline, event outcomes) as one (`finish_batch`).

Each statement takes its rows as one JSON array and turns it into typed rows with
`jsonb_to_recordset` (`UPDATE … FROM jsonb_to_recordset(…)`, `INSERT … SELECT … ON CONFLICT`;
workers/batch/row_source.py), so a batch of 500 events costs the same handful of round trips and
plans as a batch of 5, where the ORM's flush would send one UPDATE per row.
workers/batch/write_back.py decides what to write and calls these on PostgreSQL
(write_back_sqlite.py's executemany on SQLite). The ORM rows the batch loaded are then marked as
written (`mark_written`), so the session holds what the database holds and its flush sends
nothing more for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from tributary.models.sql import mark_written
from tributary.workers.batch.row_source import Part, execute, execute_together

if TYPE_CHECKING:
    from tributary.models import Customer, CustomerProject, Event
    from tributary.workers.batch.new_customers import NewCustomer

__all__ = [
    "begin_writes",
    "delete_identities",
    "finish_batch",
    "insert_identities",
    "update_events",
    "upsert_tombstones",
    "write_customers",
]


# The load plans its lookups for the values at hand, for the whole transaction (`plan_cache_mode`
# in workers/batch/state.py `_LOCK_PARENTS`). That setting also reached everything after the load,
# the foreign-key checks PostgreSQL runs for each identity written (its customer, its account)
# among them: each check was planned afresh, and in a sustained run of Stripe webhooks those plans
# took as much of PostgreSQL's time as the identities' inserts spent on their own rows
# (bench/README.md, 2026-12-07). A batch's writes are row sources and lookups by key, whose
# generic plans are the custom ones, so they go back to the server's setting and the plan cache.
_DEFAULT_PLANS = text("RESET plan_cache_mode")


def begin_writes(session: Session) -> None:
    """Before the batch's first write: plans from the plan cache again (`_DEFAULT_PLANS`)."""
    session.execute(_DEFAULT_PLANS)


# The events' outcomes and their attempt rows (the attempt history) in one statement: the attempt
# is what the update wrote (number = the new `attempts`, at `processed_at`), in the batch's order.
_UPDATE_EVENTS = """
    events_done AS (
        UPDATE events AS e SET
            attempts = v.attempts,
            status = v.status,
            last_error = v.last_error,
            processed_at = v.processed_at,
            changes = CASE WHEN v.has_changes THEN v.changes ELSE e.changes END,
            awaiting_source = CASE WHEN v.has_awaiting THEN v.awaiting_source ELSE e.awaiting_source END,
            awaiting_id = CASE WHEN v.has_awaiting THEN v.awaiting_id ELSE e.awaiting_id END
        FROM {rows}
        WHERE e.id = v.id
        RETURNING v.n, e.id, e.attempts, e.status, e.last_error, e.processed_at
    ),
    attempts_added AS (
        INSERT INTO event_attempts (event_id, number, outcome, error, attempted_at)
        SELECT done.id, done.attempts, done.status, done.last_error, done.processed_at
        FROM events_done AS done
        ORDER BY done.n
    )
"""
_EVENT_COLUMNS = (
    ("id", "text"),
    ("attempts", "int"),
    ("status", "text"),
    ("last_error", "text"),
    ("processed_at", "timestamptz"),
    ("has_changes", "boolean"),
    ("changes", "jsonb"),
    ("has_awaiting", "boolean"),
    ("awaiting_source", "text"),
    ("awaiting_id", "text"),
)


def update_events(session: Session, events: Sequence[tuple[Event, dict[str, Any]]]) -> None:
    """Write each event's new attributes (`attempts`, `status`, `last_error`, `processed_at`, and
    `changes` / `awaiting_source` / `awaiting_id` when given) and one attempt row for each, in one
    statement."""
    finish_batch(session, [], [], [], events)


def _events_part(events: Sequence[tuple[Event, dict[str, Any]]]) -> Part:
    rows = [
        {
            "id": event.id,
            "attempts": values["attempts"],
            "status": values["status"],
            "last_error": values["last_error"],
            "processed_at": values["processed_at"],
            "has_changes": "changes" in values,
            "changes": values.get("changes"),
            "has_awaiting": "awaiting_source" in values,
            "awaiting_source": values.get("awaiting_source"),
            "awaiting_id": values.get("awaiting_id"),
        }
        for event, values in events
    ]
    return Part("events", _UPDATE_EVENTS, _EVENT_COLUMNS, rows)


def finish_batch(
    session: Session,
    projects: Sequence[dict[str, Any]],
    loaded: Sequence[CustomerProject | None],
    timeline: Sequence[dict[str, Any]],
    events: Sequence[tuple[Event, dict[str, Any]]],
) -> None:
    """A batch's last writes in one statement: its project rows, inserted or updated by key
    (`loaded[i]` is the ORM row `projects[i]` updates, or None for a new one), its timeline rows
    (ids in their order) and its events' outcomes with their attempts (as `update_events`). They
    write four tables apart and read none of each other's rows, so they can share a statement; a
    trickle's batch pays its fixed number of statements per event (bench/README.md, 2026-12-04)."""
    parts: list[Part] = []
    pairs = sorted(
        zip(projects, loaded, strict=True), key=lambda p: (p[0]["customer_id"], p[0]["project_id"])
    )
    if pairs:
        # Sorted by key, so two batches that touch the same rows lock them in the same order.
        parts.append(Part("projects", _UPSERT_PROJECTS, _PROJECT_COLUMNS, [r for r, _ in pairs]))
    if timeline:
        parts.append(Part("timeline", _INSERT_TIMELINE, _TIMELINE_COLUMNS, timeline))
    if events:
        parts.append(_events_part(events))
    execute_together(session, parts)
    for row, existing in pairs:
        if existing is not None:
            mark_written(existing, {name: row[name] for name in _PROJECT_VALUES})
    for event, values in events:
        mark_written(event, values)


_UPDATE_CUSTOMERS = """
    customers_updated AS (
        UPDATE customers AS c SET
            name = v.name,
            clock = v.clock,
            last_activity_at = v.last_activity_at,
            email = v.email,
            past_emails = v.past_emails,
            updated_at = v.updated_at
        FROM {rows}
        WHERE c.id = v.id
    )
"""
_CUSTOMER_COLUMNS = (
    ("id", "text"),
    ("name", "text"),
    ("clock", "jsonb"),
    ("last_activity_at", "timestamptz"),
    ("email", "text"),
    ("past_emails", "jsonb"),
    ("updated_at", "timestamptz"),
)


def write_customers(
    session: Session,
    created: Sequence[tuple[NewCustomer, dict[str, Any]]],
    changed: Sequence[tuple[Customer, dict[str, Any]]],
) -> None:
    """The batch's customers in one statement: `created` inserted with their final values (`name`,
    `clock`, `last_activity_at`, `email`, `past_emails`, `created_at`, `updated_at`), `changed`
    updated with the same but `created_at`, sorted by id, the order the load locked them in.

    PostgreSQL writes a statement's CTEs in no set order and checks the unique address as each row
    lands, so neither set may take an address the other gives up. Neither does: a new customer takes
    an address nobody held (its advisory lock held since the load), and the addresses that renames
    and merges give up were freed by the identity changes written before (write_back.py)."""
    parts: list[Part] = []
    if created:
        rows = [{"id": c.id, "account_id": c.account_id, **values} for c, values in created]
        parts.append(Part("created", _INSERT_CUSTOMERS, _NEW_CUSTOMER_COLUMNS, rows))
    ordered = sorted(changed, key=lambda item: item[0].id)
    if ordered:
        # The row source takes each row's `_CUSTOMER_COLUMNS` and nothing else.
        rows = [{"id": customer.id, **values} for customer, values in ordered]
        parts.append(Part("changed", _UPDATE_CUSTOMERS, _CUSTOMER_COLUMNS, rows))
    execute_together(session, parts)
    for customer, values in ordered:
        mark_written(customer, values)


_UPSERT_PROJECTS = """
    projects_upserted AS (
        INSERT INTO customer_projects
            (customer_id, project_id, status, params, clock, first_seen_at, last_activity_at, updated_at)
        SELECT v.customer_id, v.project_id, v.status, v.params, v.clock, v.first_seen_at,
               v.last_activity_at, v.updated_at
        FROM {rows}
        ORDER BY v.n
        ON CONFLICT (customer_id, project_id) DO UPDATE SET
            status = excluded.status,
            params = excluded.params,
            clock = excluded.clock,
            first_seen_at = excluded.first_seen_at,
            last_activity_at = excluded.last_activity_at,
            updated_at = excluded.updated_at
    )
"""
# The values a project row's upsert writes (its key aside).
_PROJECT_VALUES = ("status", "params", "clock", "first_seen_at", "last_activity_at", "updated_at")
_PROJECT_COLUMNS = (
    ("customer_id", "text"),
    ("project_id", "text"),
    ("status", "text"),
    ("params", "jsonb"),
    ("clock", "jsonb"),
    ("first_seen_at", "timestamptz"),
    ("last_activity_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


_INSERT_TIMELINE = """
    timeline_added AS (
        INSERT INTO customer_changes
            (customer_id, project_id, event_id, kind, data, occurred_at, recorded_at)
        SELECT v.customer_id, v.project_id, v.event_id, v.kind, v.data, v.occurred_at, v.recorded_at
        FROM {rows}
        ORDER BY v.n
    )
"""
_TIMELINE_COLUMNS = (
    ("customer_id", "text"),
    ("project_id", "text"),
    ("event_id", "text"),
    ("kind", "text"),
    ("data", "jsonb"),
    ("occurred_at", "timestamptz"),
    ("recorded_at", "timestamptz"),
)


# A customer the batch created (workers/batch/new_customers.py), written once with its final values.
# No ON CONFLICT: the batch holds its address's advisory lock, so a conflict is a broken invariant
# and fails the batch loudly (workers/isolation.py applies it again in halves, which then find the
# other customer).
_INSERT_CUSTOMERS = """
    customers_created AS (
        INSERT INTO customers
            (id, account_id, email, name, past_emails, clock, last_activity_at, created_at, updated_at)
        SELECT v.id, v.account_id, v.email, v.name, v.past_emails, v.clock, v.last_activity_at,
               v.created_at, v.updated_at
        FROM {rows}
        ORDER BY v.n
    )
"""
_NEW_CUSTOMER_COLUMNS = (
    ("id", "text"),
    ("account_id", "text"),
    *_CUSTOMER_COLUMNS[1:-1],
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


_IDENTITY_KEY = (("account_id", "text"), ("source", "text"), ("external_id", "text"))
_DELETE_IDENTITIES = """
    DELETE FROM identities AS i
    USING {rows}
    WHERE i.account_id = v.account_id AND i.source = v.source AND i.external_id = v.external_id
"""


def delete_identities(session: Session, refs: Sequence[tuple[str, str, str]]) -> None:
    """Remove the links of `refs` (account, source, external id), in one statement. The rows are
    taken in the join's order, not sorted: a linked identity's customer is locked by the batch's
    load (workers/batch/state.py), so no other batch removes the same links meanwhile."""
    if not refs:
        return
    rows = [{"account_id": a, "source": s, "external_id": x} for a, s, x in refs]
    execute(session, _DELETE_IDENTITIES, _IDENTITY_KEY, rows)


_INSERT_IDENTITIES = """
    INSERT INTO identities (account_id, source, external_id, customer_id, created_at)
    SELECT v.account_id, v.source, v.external_id, v.customer_id, v.created_at
    FROM {rows}
    ORDER BY v.n
    ON CONFLICT (account_id, source, external_id) DO NOTHING
"""
_IDENTITY_COLUMNS = (*_IDENTITY_KEY, ("customer_id", "text"), ("created_at", "timestamptz"))


def insert_identities(
    session: Session, links: Sequence[tuple[tuple[str, str, str], str]], now: datetime
) -> None:
    """Link each (account, source, external id) to its customer unless already linked, in one
    statement. Rows go in the given order (sorted by the caller), the unique index's lock order."""
    if not links:
        return
    rows = [
        {"account_id": a, "source": s, "external_id": x, "customer_id": c, "created_at": now}
        for (a, s, x), c in links
    ]
    execute(session, _INSERT_IDENTITIES, _IDENTITY_COLUMNS, rows)


# Concurrent deletions of one identity meet on the unique index: the later deletion wins and a known
# customer is never replaced by "unknown" (as write_back_sqlite.py's statement on SQLite).
_UPSERT_TOMBSTONES = """
    INSERT INTO identity_tombstones AS t
        (account_id, source, external_id, customer_id, forgotten_at, event_id, event_type, created_at)
    SELECT v.account_id, v.source, v.external_id, v.customer_id, v.forgotten_at, v.event_id,
           v.event_type, v.created_at
    FROM {rows}
    ORDER BY v.n
    ON CONFLICT (account_id, source, external_id) DO UPDATE SET
        customer_id = coalesce(excluded.customer_id, t.customer_id),
        forgotten_at = CASE WHEN excluded.forgotten_at >= t.forgotten_at
                            THEN excluded.forgotten_at ELSE t.forgotten_at END,
        event_id = CASE WHEN excluded.forgotten_at >= t.forgotten_at
                        THEN excluded.event_id ELSE t.event_id END,
        event_type = CASE WHEN excluded.forgotten_at >= t.forgotten_at
                          THEN excluded.event_type ELSE t.event_type END
"""
_TOMBSTONE_COLUMNS = (
    *_IDENTITY_KEY,
    ("customer_id", "text"),
    ("forgotten_at", "bigint"),
    ("event_id", "text"),
    ("event_type", "text"),
    ("created_at", "timestamptz"),
)


def upsert_tombstones(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or merge tombstones (keyed by account, source and external id) in one statement; the
    caller sorts them by key, so two batches lock the same rows in the same order."""
    if not rows:
        return
    execute(session, _UPSERT_TOMBSTONES, _TOMBSTONE_COLUMNS, rows)
