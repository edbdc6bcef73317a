"""read side indexes: trigram search for `q`

Revision ID: 0011_read_side_indexes
Revises: 0010_customers_past_emails
Create Date: 2026-12-01 19:00:00

`GET /v1/customers?q=` is a case-insensitive substring of email or name. No b-tree serves a
substring, so PostgreSQL read every customer of the account for a rare one. `pg_trgm`'s GIN indexes
do (`email LIKE`, `name ILIKE`: a BitmapOr of the two). The extension ships with PostgreSQL (contrib)
and is trusted, so the database owner may create it. SQLite has no trigram index and keeps scanning:
there the indexes cover no row (`WHERE 0`) and only keep the schemas alike, as 0002's params index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_read_side_indexes"
down_revision = "0010_customers_past_emails"
branch_labels = None
depends_on = None

TRIGRAM_COLUMNS = ("email", "name")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in TRIGRAM_COLUMNS:
        if postgres:
            op.create_index(
                f"ix_customers_{column}_trgm",
                "customers",
                [sa.text(f"{column} gin_trgm_ops")],
                postgresql_using="gin",
            )
        else:
            op.create_index(f"ix_customers_{column}_trgm", "customers", [column], sqlite_where=sa.text("0"))


def downgrade() -> None:
    # The extension stays: other objects may use it, and dropping it is the operator's call.
    for column in TRIGRAM_COLUMNS:
        op.drop_index(f"ix_customers_{column}_trgm", table_name="customers")
