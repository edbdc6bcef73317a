"""identity tombstones and customer merges

Revision ID: 0003_tombstones_merges
Revises: 0002_customer_query_indexes
Create Date: 2026-11-21 13:00:00

Two tables written by the worker (models/merges.py): what a provider's user deletion left behind
(so late events about the deleted user neither get lost nor link it again), and where a customer
absorbed by an email-change merge went.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tombstones_merges"
down_revision = "0002_customer_query_indexes"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "identity_tombstones",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("forgotten_at", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("event_type", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_identity_tombstones_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_identity_tombstones_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_identity_tombstones_event_id_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_tombstones")),
        sa.UniqueConstraint(
            "account_id",
            "source",
            "external_id",
            name=op.f("uq_identity_tombstones_account_id_source_external_id"),
        ),
    )
    with op.batch_alter_table("identity_tombstones", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identity_tombstones_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "customer_merges",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("absorbed_id", sa.String(length=40), nullable=False),
        sa.Column("survivor_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_customer_merges_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"],
            ["customers.id"],
            name=op.f("fk_customer_merges_survivor_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_customer_merges_event_id_events"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_merges")),
    )
    with op.batch_alter_table("customer_merges", schema=None) as batch_op:
        batch_op.create_index("ix_customer_merges_absorbed", ["account_id", "absorbed_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_merges_survivor_id"), ["survivor_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_merges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_merges_survivor_id"))
        batch_op.drop_index("ix_customer_merges_absorbed")
    op.drop_table("customer_merges")
    with op.batch_alter_table("identity_tombstones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_tombstones_customer_id"))
    op.drop_table("identity_tombstones")
