"""project params: 1,000 sampled values for the planner instead of 100 (PostgreSQL)

Revision ID: 0016_params_statistics
Revises: 0015_locked_parent_keys
Create Date: 2026-12-03 15:20:00

The customer list's `params.<key>=<value>` filter is a JSONB containment test (`params @> …`),
which PostgreSQL estimates by trying it on the column's sampled values: its most common values and
its histogram, up to the statistics target each (default 100). Whole `params` documents are rarely
common, so with 100 samples the estimate is a lottery: `{"seats": 50}`, true for 8,645 of 1.35
million project rows (bench/readside_data.py), was estimated at 87, 8,700-8,800 or 26,214 rows by
successive ANALYZEs. At 87 the planner chose to read every matching row through the GIN index,
join each customer and sort them (140-180 ms) instead of walking the sort order's index until the
page is full (25-35 ms). With 1,000 samples six ANALYZEs in a row estimated 7,768-9,157 rows and
chose the walk every time; with 300, still 2,235-11,197. The price: ANALYZE samples 300,000 rows of
the table instead of 30,000 (3 s on 1.35 million rows), and planning a params filter tries the
operator on up to 2,000 values (about 2 ms). SQLite has no such statistics: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = "0016_params_statistics"
down_revision = "0015_locked_parent_keys"
branch_labels = None
depends_on = None

TARGET = 1000


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE customer_projects ALTER COLUMN params SET STATISTICS {TARGET}")
        # Now rather than at autovacuum's next pass over the table.
        op.execute("ANALYZE customer_projects (params)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE customer_projects ALTER COLUMN params SET STATISTICS -1")
