"""events: a whole second's text with its microseconds on SQLite

Revision ID: 0017_sqlite_whole_seconds
Revises: 0016_params_statistics
Create Date: 2026-12-05 01:00:00

SQLite stores a UTC moment as text, `YYYY-MM-DD HH:MM:SS.ffffff`, and compares it as text. The
web's shared event write bound `occurred_at` and `received_at` through sqlite3's default datetime
adapter, which leaves out zero microseconds: an identify whose timestamp was a whole second, or a
webhook whose provider sends whole seconds (Stripe's `created`), was stored as `… 10:00:00`, which
sorts before `… 10:00:00.000000`, the text every other writer and every query's bound moment use
for the same second (a `since` of that second missed it). The write now binds the full text
(models/base.py `UTCDateTime`); this gives the rows already stored that way theirs. PostgreSQL
stores timestamptz: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = "0017_sqlite_whole_seconds"
down_revision = "0016_params_statistics"
branch_labels = None
depends_on = None

# `YYYY-MM-DD HH:MM:SS`: the text of a whole second without its microseconds.
SHORT = len("2026-01-01 00:00:00")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for column in ("occurred_at", "received_at"):
            op.execute(
                f"UPDATE events SET {column} = {column} || '.000000' WHERE length({column}) = {SHORT}"  # noqa: S608
            )


def downgrade() -> None:
    pass  # the full text is the one SQLAlchemy itself writes; the older revisions read it as well
