"""event indexes: a hash index for the email, a partial one for the retention purge

Revision ID: 0022_event_index_writes
Revises: 0021_insert_tally_per_row
Create Date: 2026-12-06 05:00:00

Every event written adds an entry to each index of `events`: once when inserted (every ingest),
again when the worker applies it (the update changes `status`, which indexes hold). Two of those
entries cost more than what they serve:

- `ix_events_email` serves only equalities (the event list's `email` filter, an erasure's events).
  As a B-tree, each new address descended to a random leaf comparing itself in the database's
  collation at every level: 15 % of PostgreSQL's CPU for a 100-row insert. On PostgreSQL it is now
  a hash index (equalities only, crash-safe and replicated since PostgreSQL 10), which hashes the
  address once: half of that cost. SQLite has no hash index and keeps its B-tree.
- `ix_events_status_id` (status, id) held an entry for every event, pending ones included, while no
  query needs it: the worker's claim, the sweep and the pending count read `ix_events_pending`,
  deferred events `ix_events_awaiting`, an account's events by status
  `ix_events_account_status_received`. The retention purge (applied events older than the
  retention, oldest first) did not use it either: on PostgreSQL it read the whole table every five
  minutes (150 ms per million events). It is replaced by `ix_events_purgeable` (received_at, id)
  partial on the purge's own predicate: an event gets its entry when applied, none while pending,
  and the purge reads its oldest entries in order.

Each index is built while writes to `events` wait: 2.3 s per million events on PostgreSQL here,
0.9 s on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_event_index_writes"
down_revision = "0021_insert_tally_per_row"
branch_labels = None
depends_on = None

# As models/event.py `PURGEABLE_ROWS` today; a migration keeps its own copy of what it creates.
PURGEABLE_ROWS = "status IN ('processed', 'ignored') AND purged_at IS NULL"


def _email_index(using: str) -> None:
    op.drop_index("ix_events_email", table_name="events")
    op.create_index("ix_events_email", "events", ["email"], postgresql_using=using)


def _keeps_statistics(bind: sa.Connection) -> bool:
    """An SQLite database that was ANALYZEd: a new index needs statistics too (see 0009: SQLite
    misplans when only some indexes have them)."""
    return bind.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first() is not None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _email_index("hash")
    op.drop_index("ix_events_status_id", table_name="events")
    predicate = sa.text(PURGEABLE_ROWS)
    op.create_index(
        "ix_events_purgeable",
        "events",
        ["received_at", "id"],
        postgresql_where=predicate,
        sqlite_where=predicate,
    )
    if bind.dialect.name == "sqlite" and _keeps_statistics(bind):
        op.execute("ANALYZE ix_events_purgeable")


def downgrade() -> None:
    op.drop_index("ix_events_purgeable", table_name="events")
    op.create_index("ix_events_status_id", "events", ["status", "id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _email_index("btree")
    elif _keeps_statistics(bind):
        op.execute("ANALYZE ix_events_status_id")
