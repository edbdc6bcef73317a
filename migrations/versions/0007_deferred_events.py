"""events wait for an identity: status `deferred` and the identity awaited

Revision ID: 0007_deferred
Revises: 0006_ops
Create Date: 2026-12-01 15:40:00

An event about a person Tributary cannot attribute yet (a Clerk session of a user whose signup had
no email, a Stripe subscription of a customer never seen with an email) is parked as `deferred`
instead of failing. `events.awaiting_source` and `awaiting_id` name the identity it waits for,
indexed per account so the event that makes that identity known wakes it at once, and the sweeper's
check against `identities` uses that table's unique index (workers/deferred.py). `status` is a
plain string column: the new value needs no DDL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_deferred"
down_revision = "0006_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("awaiting_source", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("awaiting_id", sa.String(length=255), nullable=True))
        batch_op.create_index(
            "ix_events_awaiting", ["account_id", "awaiting_source", "awaiting_id"], unique=False
        )


def downgrade() -> None:
    # Deferred events become failed ones: the previous schema has no other way to show them.
    op.execute("UPDATE events SET status = 'failed' WHERE status = 'deferred'")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_awaiting")
        batch_op.drop_column("awaiting_id")
        batch_op.drop_column("awaiting_source")
