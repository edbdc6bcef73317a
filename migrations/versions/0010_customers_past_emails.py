"""customers with past addresses: a partial index for the earlier-holder lookup

Revision ID: 0010_customers_past_emails
Revises: 0009_dashboard_indexes
Create Date: 2026-12-01 17:20:00

A batch that creates customers looks for customers that once held each new address (an identity's
older address must reach whoever held it then, in any delivery order: workers/identities.py). Only
customers whose `past_emails` is not empty can match, so the index covers just those rows and the
lookup costs nothing on an install where few people changed their address.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_customers_past_emails"
down_revision = "0009_dashboard_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_customers_with_past_emails",
        "customers",
        ["account_id"],
        postgresql_where=sa.text("past_emails != '[]'::jsonb"),
        sqlite_where=sa.text("past_emails != '[]'"),
    )


def downgrade() -> None:
    op.drop_index("ix_customers_with_past_emails", table_name="customers")
