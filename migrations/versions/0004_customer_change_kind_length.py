"""customer_changes.kind holds any event type

Revision ID: 0004_change_kind_length
Revises: 0003_tombstones_merges
Create Date: 2026-11-21 13:00:00

The timeline's `kind` is the event type that caused the change. Provider event types are longer
than 32 characters (Stripe's `customer.subscription.trial_will_end` has 36), and PostgreSQL refused
them, failing the event; `events.type` allows 200, and so does this column now.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_change_kind_length"
down_revision = "0003_tombstones_merges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer_changes", schema=None) as batch_op:
        batch_op.alter_column("kind", existing_type=sa.String(length=32), type_=sa.String(length=200))


def downgrade() -> None:
    with op.batch_alter_table("customer_changes", schema=None) as batch_op:
        batch_op.alter_column("kind", existing_type=sa.String(length=200), type_=sa.String(length=32))
