"""The bulk writes of a batch on PostgreSQL: one statement per table whatever the batch's size.

Each statement takes its rows as one array per column and unnests them (`UPDATE … FROM unnest(…)`,
`INSERT … SELECT … FROM unnest(…) ON CONFLICT`), so a batch of 500 events costs the same handful
of round trips and plans as a batch of 5, where the ORM's flush would send one UPDATE per row.
workers/batch/write_back.py decides what to write and calls these on PostgreSQL; SQLite keeps the
ORM path there. The ORM rows the batch loaded are then marked as written (`set_committed_value`),
so the session holds what the database holds and its flush sends nothing more for them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tributary.models.base import sortable_id

if TYPE_CHECKING:
    from tributary.models import Customer, CustomerProject, Event

__all__ = [
    "insert_attempts",
    "insert_customers",
    "insert_timeline",
    "update_customers",
    "update_events",
    "upsert_projects",
]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


_UPDATE_EVENTS = text(
    """
    UPDATE events AS e SET
        attempts = v.attempts,
        status = v.status,
        last_error = v.last_error,
        processed_at = v.processed_at,
        changes = CASE WHEN v.has_changes THEN CAST(v.changes AS jsonb) ELSE e.changes END,
        awaiting_source = CASE WHEN v.has_awaiting THEN v.awaiting_source ELSE e.awaiting_source END,
        awaiting_id = CASE WHEN v.has_awaiting THEN v.awaiting_id ELSE e.awaiting_id END
    FROM unnest(
        CAST(:id AS text[]), CAST(:attempts AS int[]), CAST(:status AS text[]),
        CAST(:last_error AS text[]), CAST(:processed_at AS timestamptz[]),
        CAST(:has_changes AS boolean[]), CAST(:changes AS text[]),
        CAST(:has_awaiting AS boolean[]), CAST(:awaiting_source AS text[]), CAST(:awaiting_id AS text[])
    ) AS v(id, attempts, status, last_error, processed_at, has_changes, changes,
           has_awaiting, awaiting_source, awaiting_id)
    WHERE e.id = v.id
    """
)


def update_events(session: Session, events: Sequence[tuple[Event, dict[str, Any]]]) -> None:
    """Write each event's new attributes (`attempts`, `status`, `last_error`, `processed_at`, and
    `changes` / `awaiting_source` / `awaiting_id` when given) in one statement."""
    if not events:
        return
    rows = [
        {
            "id": event.id,
            "attempts": values["attempts"],
            "status": values["status"],
            "last_error": values["last_error"],
            "processed_at": values["processed_at"],
            "has_changes": "changes" in values,
            "changes": _json(values.get("changes")),
            "has_awaiting": "awaiting_source" in values,
            "awaiting_source": values.get("awaiting_source"),
            "awaiting_id": values.get("awaiting_id"),
        }
        for event, values in events
    ]
    session.execute(_UPDATE_EVENTS, _columns(rows, list(rows[0])))
    for event, values in events:
        for name, value in values.items():
            set_committed_value(event, name, value)


_UPDATE_CUSTOMERS = text(
    """
    UPDATE customers AS c SET
        name = v.name,
        clock = CAST(v.clock AS jsonb),
        last_activity_at = v.last_activity_at,
        email = v.email,
        past_emails = CAST(v.past_emails AS jsonb),
        updated_at = v.updated_at
    FROM unnest(
        CAST(:id AS text[]), CAST(:name AS text[]), CAST(:clock AS text[]),
        CAST(:last_activity_at AS timestamptz[]), CAST(:email AS text[]),
        CAST(:past_emails AS text[]), CAST(:updated_at AS timestamptz[])
    ) AS v(id, name, clock, last_activity_at, email, past_emails, updated_at)
    WHERE c.id = v.id
    """
)


def update_customers(session: Session, customers: Sequence[tuple[Customer, dict[str, Any]]]) -> None:
    """Write each customer's `name`, `clock`, `last_activity_at`, `email`, `past_emails` and
    `updated_at` in one statement. The rows are sorted by id, the order the load locked them in."""
    if not customers:
        return
    ordered = sorted(customers, key=lambda item: item[0].id)
    rows = [
        {
            "id": customer.id,
            "name": values["name"],
            "clock": _json(values["clock"]),
            "last_activity_at": values["last_activity_at"],
            "email": values["email"],
            "past_emails": _json(values["past_emails"]),
            "updated_at": values["updated_at"],
        }
        for customer, values in ordered
    ]
    session.execute(_UPDATE_CUSTOMERS, _columns(rows, list(rows[0])))
    for customer, values in ordered:
        for name, value in values.items():
            set_committed_value(customer, name, value)


_UPSERT_PROJECTS = text(
    """
    INSERT INTO customer_projects
        (customer_id, project_id, status, params, clock, first_seen_at, last_activity_at, updated_at)
    SELECT v.customer_id, v.project_id, v.status, CAST(v.params AS jsonb), CAST(v.clock AS jsonb),
           v.first_seen_at, v.last_activity_at, v.updated_at
    FROM unnest(
        CAST(:customer_id AS text[]), CAST(:project_id AS text[]), CAST(:status AS text[]),
        CAST(:params AS text[]), CAST(:clock AS text[]), CAST(:first_seen_at AS timestamptz[]),
        CAST(:last_activity_at AS timestamptz[]), CAST(:updated_at AS timestamptz[])
    ) AS v(customer_id, project_id, status, params, clock, first_seen_at, last_activity_at, updated_at)
    ON CONFLICT (customer_id, project_id) DO UPDATE SET
        status = excluded.status,
        params = excluded.params,
        clock = excluded.clock,
        first_seen_at = excluded.first_seen_at,
        last_activity_at = excluded.last_activity_at,
        updated_at = excluded.updated_at
    """
)


def upsert_projects(
    session: Session,
    rows: Sequence[dict[str, Any]],
    loaded: Sequence[CustomerProject | None],
) -> None:
    """Insert or update project rows (keyed by customer and project) in one statement; `loaded[i]`
    is the ORM row `rows[i]` updates, or None for a new one. Sorted by key, so two batches that
    touch the same rows lock them in the same order."""
    if not rows:
        return
    pairs = sorted(zip(rows, loaded, strict=True), key=lambda p: (p[0]["customer_id"], p[0]["project_id"]))
    columns = _columns([r for r, _ in pairs], list(rows[0]))
    columns["params"] = [_json(p) for p in columns["params"]]
    columns["clock"] = [_json(c) for c in columns["clock"]]
    session.execute(_UPSERT_PROJECTS, columns)
    for row, existing in pairs:
        if existing is not None:
            for name in ("status", "params", "clock", "first_seen_at", "last_activity_at", "updated_at"):
                set_committed_value(existing, name, row[name])


_INSERT_TIMELINE = text(
    """
    INSERT INTO customer_changes (customer_id, project_id, event_id, kind, data, occurred_at, recorded_at)
    SELECT v.customer_id, v.project_id, v.event_id, v.kind, CAST(v.data AS jsonb), v.occurred_at,
           v.recorded_at
    FROM unnest(
        CAST(:customer_id AS text[]), CAST(:project_id AS text[]), CAST(:event_id AS text[]),
        CAST(:kind AS text[]), CAST(:data AS text[]), CAST(:occurred_at AS timestamptz[]),
        CAST(:recorded_at AS timestamptz[])
    ) WITH ORDINALITY AS v(customer_id, project_id, event_id, kind, data, occurred_at, recorded_at, n)
    ORDER BY v.n
    """
)


def insert_timeline(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """The batch's timeline rows, in one statement; ids follow the rows' order."""
    if not rows:
        return
    names = ["customer_id", "project_id", "event_id", "kind", "data", "occurred_at", "recorded_at"]
    columns = _columns(rows, names)
    columns["data"] = [_json(d) for d in columns["data"]]
    session.execute(_INSERT_TIMELINE, columns)


_INSERT_ATTEMPTS = text(
    """
    INSERT INTO event_attempts (event_id, number, outcome, error, attempted_at)
    SELECT * FROM unnest(
        CAST(:event_id AS text[]), CAST(:number AS int[]), CAST(:outcome AS text[]),
        CAST(:error AS text[]), CAST(:attempted_at AS timestamptz[])
    )
    """
)


def insert_attempts(session: Session, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """One attempt row per event, in one statement."""
    if not rows:
        return
    columns = _columns(rows, ["event_id", "number", "outcome", "error"])
    columns["attempted_at"] = [now] * len(rows)
    session.execute(_INSERT_ATTEMPTS, columns)


_INSERT_CUSTOMERS = text(
    """
    INSERT INTO customers (id, account_id, email, past_emails, clock, created_at, updated_at)
    SELECT v.id, :account_id, v.email, '[]'::jsonb, '{}'::jsonb, :now, :now
    FROM unnest(CAST(:id AS text[]), CAST(:email AS text[])) WITH ORDINALITY AS v(id, email, n)
    ORDER BY v.n
    ON CONFLICT (account_id, email) DO NOTHING
    RETURNING id, email
    """
)


def insert_customers(
    session: Session, account_id: str, emails: Sequence[str], now: datetime
) -> list[tuple[str, str]]:
    """A customer for each of `emails` (sorted) that nobody holds, in one statement; returns the
    new (id, email) pairs."""
    if not emails:
        return []
    ids = [sortable_id("cus") for _ in emails]
    params = {"account_id": account_id, "now": now, "id": ids, "email": list(emails)}
    return [(row[0], row[1]) for row in session.execute(_INSERT_CUSTOMERS, params)]
