"""write_generation: a count of writes to what a worker batch reads, kept by triggers on SQLite

Revision ID: 0023_write_generation
Revises: 0022_event_index_writes
Create Date: 2026-12-06 12:30:00

On SQLite a worker batch reads before it takes the write lock and checks, once it holds it, that
this count has not moved (models/read_ahead.py). Every write to a watched table adds one, by a
trigger per table and kind of write, whoever writes; inserted events do not count, nor a change to
an event's outcome (its status, attempts, errors and report), which every batch writes. PostgreSQL gets
the table (its one row unused there) and no trigger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_write_generation"
down_revision = "0022_event_index_writes"
branch_labels = None
depends_on = None

# As models/read_ahead.py `EVENT_CONTENT` and `WATCHED` today; a migration keeps its own copy of
# what it creates.
EVENT_CONTENT = (
    "account_id, project_id, source_id, channel, type, provider_event_id, dedup_key, body_hash, "
    "email, occurred_at, received_at, body, headers, payload, purged_at"
)
TABLES = (
    "accounts",
    "projects",
    "sources",
    "customers",
    "customer_projects",
    "identities",
    "identity_tombstones",
)
WATCHED: tuple[tuple[str, str], ...] = (
    *((table, write) for table in TABLES for write in ("INSERT", "UPDATE", "DELETE")),
    ("events", f"UPDATE OF {EVENT_CONTENT}"),
    ("events", "DELETE"),
)


def _name(table: str, write: str) -> str:
    return f"tr_write_generation_{table}_{write.split(maxsplit=1)[0].lower()}"


def upgrade() -> None:
    op.create_table(
        "write_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_write_generation_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO write_generation (id, n) VALUES (1, 0)")
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, write in WATCHED:
        # Built from the constants above only.
        op.execute(
            f"CREATE TRIGGER {_name(table, write)} AFTER {write} ON {table} "  # noqa: S608
            "BEGIN UPDATE write_generation SET n = n + 1 WHERE id = 1; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, write in WATCHED:
            op.execute(f"DROP TRIGGER {_name(table, write)}")
    op.drop_table("write_generation")
