"""event tallies: `/metrics` sums running counts instead of reading every event

Revision ID: 0013_event_tallies
Revises: 0012_email_trigram_on_lower
Create Date: 2026-12-02 08:00:00

A scrape counted the events table by source, connector and status and bucketed every applied
event's latency: 1.5 s of PostgreSQL at a million events, every scrape. Statement-level triggers
on `events` now append, in the writer's transaction, the change each statement made to those
counts (`event_counts`) and to the latency histogram (`event_latency`); a scrape sums a few
thousand rows (models/event_tally.py explains the design). The tables start from one count of the
existing events, taken while the triggers' creation holds writers off, so nothing is counted twice
or missed. SQLite has no statement-level triggers: the tables exist there and stay empty, and the
scrape keeps counting the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_event_tallies"
down_revision = "0012_email_trigram_on_lower"
branch_labels = None
depends_on = None

# The histogram's bucket bounds as of this revision (models/event_tally.py LATENCY_BOUNDS).
BOUNDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
APPLIED = "('processed', 'ignored')"

_BUCKET = (
    "CREATE FUNCTION tributary_latency_bucket(seconds numeric) RETURNS smallint "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (CASE "
    + " ".join(f"WHEN seconds <= {bound} THEN {index}" for index, bound in enumerate(BOUNDS))
    + f" ELSE {len(BOUNDS)} END)::smallint $$"
)

# An applied event's latency, or NULL for any other event (`r` is a row of `events`).
_SECONDS = (
    f"CASE WHEN {{r}}.status IN {APPLIED} AND {{r}}.processed_at IS NOT NULL "
    "THEN extract(epoch FROM {r}.processed_at - {r}.received_at) END"
)


def _added_or_removed(rows: str, sign: str) -> str:
    """The body of the INSERT and DELETE triggers: count `rows` with `sign`."""
    seconds = _SECONDS.format(r="r")
    # Built from this module's constants only: no value from outside reaches the SQL.
    return f"""
        INSERT INTO event_counts (source_id, channel, status, events)
        SELECT source_id, channel, status, {sign}count(*) FROM {rows}
        GROUP BY source_id, channel, status;
        INSERT INTO event_latency (bucket, events, seconds)
        SELECT tributary_latency_bucket(s), {sign}count(*), {sign}sum(s)
        FROM (SELECT {seconds} AS s FROM {rows} AS r) AS applied
        WHERE s IS NOT NULL
        GROUP BY 1;
    """  # noqa: S608


# Only rows whose counted columns changed move: the old values out, the new ones in.
_UPDATED = f"""
    INSERT INTO event_counts (source_id, channel, status, events)
    SELECT k.source_id, k.channel, k.status, sum(k.events)
    FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id,
    LATERAL (VALUES (o.source_id, o.channel, o.status, -1),
                    (n.source_id, n.channel, n.status, 1)) AS k(source_id, channel, status, events)
    WHERE (o.source_id, o.channel, o.status) IS DISTINCT FROM (n.source_id, n.channel, n.status)
    GROUP BY k.source_id, k.channel, k.status
    HAVING sum(k.events) <> 0;
    INSERT INTO event_latency (bucket, events, seconds)
    SELECT tributary_latency_bucket(k.seconds), sum(k.events), sum(k.seconds * k.events)
    FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id,
    LATERAL (VALUES ({_SECONDS.format(r="o")}, -1),
                    ({_SECONDS.format(r="n")}, 1)) AS k(seconds, events)
    WHERE k.seconds IS NOT NULL
      AND (o.status, o.received_at, o.processed_at) IS DISTINCT FROM (n.status, n.received_at, n.processed_at)
    GROUP BY 1
    HAVING sum(k.events) <> 0 OR sum(k.seconds * k.events) <> 0;
"""  # noqa: S608

_FUNCTIONS = {
    "tributary_tally_inserted_events": _added_or_removed("new_rows", ""),
    "tributary_tally_deleted_events": _added_or_removed("old_rows", "-"),
    "tributary_tally_updated_events": _UPDATED,
    "tributary_tally_truncated_events": "DELETE FROM event_counts; DELETE FROM event_latency;",
}

_TRIGGERS = {
    "tributary_tally_inserted_events": "AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows",
    "tributary_tally_deleted_events": "AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows",
    "tributary_tally_updated_events": (
        "AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "tributary_tally_truncated_events": "AFTER TRUNCATE ON events",
}

_BACKFILL = _added_or_removed("events", "")


def upgrade() -> None:
    op.create_table(
        "event_counts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("source_id", sa.String(length=40), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_counts")),
    )
    op.create_table(
        "event_latency",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_latency")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_BUCKET)
    for name, body in _FUNCTIONS.items():
        plpgsql = f"BEGIN {body} RETURN NULL; END"
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {plpgsql} $$")
    # Creating a trigger locks `events` against writes until this migration commits, so the count
    # below is exactly the table the triggers go on from.
    for name, when in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    op.execute(_BACKFILL)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON events")
            op.execute(f"DROP FUNCTION {name}()")
        op.execute("DROP FUNCTION tributary_latency_bucket(numeric)")
    op.drop_table("event_latency")
    op.drop_table("event_counts")
