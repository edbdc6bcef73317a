"""customer query indexes

Revision ID: 0002_customer_query_indexes
Revises: 0001
Create Date: 2026-11-21 12:00:00

`GET /v1/customers` filters on `customer_projects.params` and, with a project, pages by that
project's activity. PostgreSQL gets a GIN index (`jsonb_path_ops`: containment only, the one
operator the filters use, at a fraction of the default opclass's size); SQLite has no equivalent
and scans, so there the index covers no row (`WHERE 0`) and only keeps the schemas alike. Both
get the keyset index for per-project activity pages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_customer_query_indexes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer_projects", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customer_projects_project_activity",
            ["project_id", "last_activity_at", "customer_id"],
            unique=False,
        )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_customer_projects_params",
            "customer_projects",
            [sa.text("params jsonb_path_ops")],
            postgresql_using="gin",
        )
    else:
        op.create_index(
            "ix_customer_projects_params", "customer_projects", ["params"], sqlite_where=sa.text("0")
        )


def downgrade() -> None:
    op.drop_index("ix_customer_projects_params", table_name="customer_projects", if_exists=True)
    with op.batch_alter_table("customer_projects", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_projects_project_activity")
