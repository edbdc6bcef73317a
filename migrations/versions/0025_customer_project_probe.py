"""a hash index for a customer's project rows (PostgreSQL)

Revision ID: 0025_customer_project_probe
Revises: 0024_lz4_compression
Create Date: 2026-12-07 05:00:00

`GET /v1/customers` with a params filter over every project walks the account's customers down the
activity order and, for each customer it passes, probes `customer_projects` for a row that matches.
A value of middling rarity makes that walk long: `params.seats=50` (0.6 % of project rows, 1,000,000
customers) probes 4,807 customers for a page of 50. Each probe went through the unique B-tree on
(customer_id, project_id): three levels descended comparing text, then the row, four pages a
probe. A hash index on `customer_id` serves the same equality from its bucket's page: two pages a
probe, and the walk took 9.6-14.7 ms instead of 19.7-28.4 (one database, the two alternated 12
times; bench/README.md).

Every project row written adds an entry, as it does to the table's other six indexes. The index
is built while writes to `customer_projects` wait: 2.5 s for 1,350,000 rows here. SQLite's walk
probes the unique B-tree; there the index covers no row (`WHERE 0`), so both backends keep one
schema for autogenerate to compare.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025_customer_project_probe"
down_revision = "0024_lz4_compression"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_customer_projects_customer",
        "customer_projects",
        ["customer_id"],
        postgresql_using="hash",
        sqlite_where=sa.text("0"),
    )


def downgrade() -> None:
    op.drop_index("ix_customer_projects_customer", table_name="customer_projects")
