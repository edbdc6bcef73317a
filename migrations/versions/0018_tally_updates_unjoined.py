"""event tallies: the update trigger sums its transition tables, without joining them

Revision ID: 0018_tally_updates_unjoined
Revises: 0017_sqlite_whole_seconds
Create Date: 2026-12-05 04:00:00

Migration 0013's update trigger paired each old row with its new one (`old_rows JOIN new_rows ON
id`) and counted the pairs whose counted columns changed. PostgreSQL plans a trigger's statements
at their first call in a session and keeps that plan; when the first call saw no rows (a sweep
that updated nothing), the join was kept as a nested loop, and every later batch of 500 events
paid 250,000 comparisons in each of its two statements: a fifth of PostgreSQL's CPU in the
drain. The counts need no pairs: the old rows counted out and the new rows counted in, by key,
give the same changes (a row whose counted columns stayed cancels itself out, and `HAVING` drops
the keys that net to nothing); the latency sums likewise, exactly, being decimal. Each statement
now reads each transition table once, whatever plan it keeps. PostgreSQL only, like the triggers.
"""

from __future__ import annotations

from alembic import op

revision = "0018_tally_updates_unjoined"
down_revision = "0017_sqlite_whole_seconds"
branch_labels = None
depends_on = None

APPLIED = "('processed', 'ignored')"

# An applied event's latency, or NULL for any other event (`r` is a row of `events`); as in 0013.
_SECONDS = (
    f"CASE WHEN {{r}}.status IN {APPLIED} AND {{r}}.processed_at IS NOT NULL "
    "THEN extract(epoch FROM {r}.processed_at - {r}.received_at) END"
)

# Built from this module's constants only: no value from outside reaches the SQL.
_UNJOINED = f"""
    INSERT INTO event_counts (source_id, channel, status, events)
    SELECT k.source_id, k.channel, k.status, sum(k.events)
    FROM (SELECT o.source_id, o.channel, o.status, -1 FROM old_rows AS o
          UNION ALL
          SELECT n.source_id, n.channel, n.status, 1 FROM new_rows AS n)
         AS k(source_id, channel, status, events)
    GROUP BY k.source_id, k.channel, k.status
    HAVING sum(k.events) <> 0;
    INSERT INTO event_latency (bucket, events, seconds)
    SELECT tributary_latency_bucket(k.seconds), sum(k.events), sum(k.seconds * k.events)
    FROM (SELECT {_SECONDS.format(r="o")}, -1 FROM old_rows AS o
          UNION ALL
          SELECT {_SECONDS.format(r="n")}, 1 FROM new_rows AS n) AS k(seconds, events)
    WHERE k.seconds IS NOT NULL
    GROUP BY 1
    HAVING sum(k.events) <> 0 OR sum(k.seconds * k.events) <> 0;
"""  # noqa: S608

# 0013's body, for the downgrade.
_JOINED = f"""
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


def _replace(body: str) -> None:
    # Replacing the function keeps the trigger; sessions plan its statements afresh.
    op.execute(
        "CREATE OR REPLACE FUNCTION tributary_tally_updated_events() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_UNJOINED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_JOINED)
