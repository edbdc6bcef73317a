"""lighter indexes: entries only for the rows their queries can ask for

Revision ID: 0014_lighter_indexes
Revises: 0013_event_tallies
Create Date: 2026-12-02 08:30:00

Every event is inserted once and updated at least once, and the update changes `status`, which
indexes hold, so each write adds an entry to every index on `events`; the same goes for
`customer_projects` rows the worker writes. Three indexes held entries no query reads:

- `ix_events_awaiting` (account, awaiting source, awaiting id) serves only the lookup of deferred
  events waiting for an identity, which always asks for `status = 'deferred'`: now partial on that
  status, so the events that never wait (nearly all) add no entry.
- `ix_events_source_id` serves the event list by source and the foreign key's `SET NULL` when a
  source is deleted, both `source_id = <a source>`: now partial on `source_id IS NOT NULL`, so
  events from the API (identify, ping, batch), which have no source, add no entry.
- `ix_customer_projects_project_id` is the leading column of two other indexes,
  (project_id, last_activity_at, customer_id) and (project_id, status), which serve every query
  and the foreign key's cascade it served: dropped.

Each is rebuilt (or dropped) while writes to its table wait: a few seconds per million events.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_lighter_indexes"
down_revision = "0013_event_tallies"
branch_labels = None
depends_on = None

# (index, table, columns, the partial index's predicate)
PARTIAL = (
    ("ix_events_awaiting", "events", ["account_id", "awaiting_source", "awaiting_id"], "status = 'deferred'"),
    ("ix_events_source_id", "events", ["source_id"], "source_id IS NOT NULL"),
)


def _create(name: str, table: str, columns: list[str], where: str | None) -> None:
    predicate = None if where is None else sa.text(where)
    op.create_index(name, table, columns, postgresql_where=predicate, sqlite_where=predicate)


def upgrade() -> None:
    for name, table, columns, where in PARTIAL:
        op.drop_index(name, table_name=table)
        _create(name, table, columns, where)
    op.drop_index("ix_customer_projects_project_id", table_name="customer_projects")


def downgrade() -> None:
    _create("ix_customer_projects_project_id", "customer_projects", ["project_id"], None)
    for name, table, columns, _ in PARTIAL:
        op.drop_index(name, table_name=table)
        _create(name, table, columns, None)
