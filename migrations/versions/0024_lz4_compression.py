"""large values compressed with lz4 instead of pglz (PostgreSQL)

Revision ID: 0024_lz4_compression
Revises: 0023_write_generation
Create Date: 2026-12-06 17:00:00

PostgreSQL compresses a value that would make its row larger than about 2 KB before it stores it,
with pglz unless a column says otherwise. Real webhooks are that large: Stripe's subscription and
invoice events are 4-9 KB, and every event is stored twice, its raw body (kept byte for byte for
replays and audits) and its parsed payload. With pglz the compression of those two values was a
quarter of PostgreSQL's cost for an ingest statement: a row carrying `invoice.paid` (6.4 KB) cost
366-387 us of the backend's time in a 10-row insert, 273 us with lz4; reading such values back is
faster too (bench/README.md). lz4 stores about 17 % more for the same events.

The columns are those that can hold such values on the paths that write per event or per import:
an event's body, payload, headers and error, an attempt's error, a customer's clock and past
emails, a project row's params and clock (rewritten on every change of a customer with many
params), a change's data, an import's upload and errors. Only values written from now on are
compressed with lz4; the stored ones stay as they are, and PostgreSQL reads both. A catalog change,
instant whatever the tables hold.

PostgreSQL 14 and newer, built with lz4 (as Debian's and Ubuntu's packages, the official Docker
images and the managed services are): on a server without it, and on SQLite, nothing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_lz4_compression"
down_revision = "0023_write_generation"
branch_labels = None
depends_on = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("body", "payload", "headers", "last_error"),
    "event_attempts": ("error",),
    "customers": ("clock", "past_emails"),
    "customer_projects": ("params", "clock"),
    "customer_changes": ("data",),
    "imports": ("upload", "errors"),
}


def lz4_available(bind: sa.Connection) -> bool:
    """Whether this server can compress with lz4 (PostgreSQL 14 or newer, built with it)."""
    if bind.dialect.name != "postgresql":
        return False
    found = bind.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(found)


def _set_compression(method: str) -> None:
    if not lz4_available(op.get_bind()):
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    # `default`: no method of the column's own, the server's `default_toast_compression` (pglz
    # unless configured), as before.
    _set_compression("default")
