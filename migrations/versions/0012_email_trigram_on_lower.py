"""the email's trigram index on `lower(email)`, so equality never takes it

Revision ID: 0012_email_trigram_on_lower
Revises: 0011_read_side_indexes
Create Date: 2026-12-02 05:00:00

pg_trgm's GIN operator class answers `=` as well as `LIKE` (pg_trgm 1.6, PostgreSQL 14). With the
index on the bare column, the planner took it for the worker's `email IN (...)` lock of a batch's
customers, with statistics or without: every address of a shared domain (`@gmail.com`) carries the
same trigrams, so the bitmap read most of the table, 0.2-0.3 s per batch at 8,000 customers, where
the unique (account_id, email) index answers in well under a millisecond. On `lower(email)` (the
same text: emails are stored lower-case) the index serves `q`, which searches that expression, and
no equality on `email` can use it. SQLite keeps an index that covers no row (`WHERE 0`), as 0011.

Rebuilding the index blocks writes to `customers` while it runs (about as long as 0011 took).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_email_trigram_on_lower"
down_revision = "0011_read_side_indexes"
branch_labels = None
depends_on = None

INDEX = "ix_customers_email_trgm"


def _create(expression: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(INDEX, "customers", [sa.text(f"{expression} gin_trgm_ops")], postgresql_using="gin")
    else:
        op.create_index(INDEX, "customers", [sa.text(expression)], sqlite_where=sa.text("0"))


def upgrade() -> None:
    op.drop_index(INDEX, table_name="customers")
    _create("lower(email)")


def downgrade() -> None:
    op.drop_index(INDEX, table_name="customers")
    _create("email")
