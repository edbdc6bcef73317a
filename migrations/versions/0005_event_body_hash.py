"""events.body_hash: tell an idempotent retry from a conflicting reuse of its message id

Revision ID: 0005_event_body_hash
Revises: 0004_change_kind_length
Create Date: 2026-12-01 15:40:00

`POST /v1/identify` and `/v1/ping` with a `message_id` (or `Idempotency-Key`) already stored
answer 202 duplicate when the body is the same and 409 `idempotency_conflict` when it is not. The
hash of the canonical validated message makes that comparison one column read. Rows stored before
this revision have no hash; the API recomputes it from their stored body when it needs to.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_event_body_hash"
down_revision = "0004_change_kind_length"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("body_hash")
