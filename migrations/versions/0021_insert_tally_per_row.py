"""event tallies: an insert is counted by a row trigger that only fires for a non-pending event

Revision ID: 0021_insert_tally_per_row
Revises: 0020_event_project_account_key
Create Date: 2026-12-06 02:30:00

Since 0019 the tallies leave pending events out, and every writer of the product inserts events
pending (the ingest doors, the imports). Yet the statement-level insert trigger still ran for each
of their statements: PostgreSQL copied every inserted row into the statement's transition table
(`new_rows`), then called the trigger function, whose EXISTS read them all back to find none to
count. The insert is counted now by a row-level trigger whose WHEN clause (`NEW.status <>
'pending'`) PostgreSQL evaluates itself, without calling the function or keeping the rows, so an
ingest statement runs no trigger of the tallies at all. An event inserted in another status (by
hand, by a future writer) is still counted, one row of `event_counts` (and of `event_latency` when
applied) for each. The other triggers (update, delete, truncate) stay statement-level. PostgreSQL
only, like the triggers; the downgrade restores 0019's statement trigger.
"""

from __future__ import annotations

from alembic import op

revision = "0021_insert_tally_per_row"
down_revision = "0020_event_project_account_key"
branch_labels = None
depends_on = None

NAME = "tributary_tally_inserted_events"
APPLIED = "('processed', 'ignored')"

# An applied event's latency, or NULL for any other event (`r` is a row of `events`); as in 0013.
_SECONDS = (
    f"CASE WHEN {{r}}.status IN {APPLIED} AND {{r}}.processed_at IS NOT NULL "
    "THEN extract(epoch FROM {r}.processed_at - {r}.received_at) END"
)
# Built from this module's constants only: no value from outside reaches the SQL.
_PER_ROW = f"""
    INSERT INTO event_counts (source_id, channel, status, events)
    VALUES (NEW.source_id, NEW.channel, NEW.status, 1);
    INSERT INTO event_latency (bucket, events, seconds)
    SELECT tributary_latency_bucket(s), 1, s FROM (SELECT {_SECONDS.format(r="NEW")} AS s) AS applied
    WHERE s IS NOT NULL;
"""  # noqa: S608
# 0019's statement-level body, for the downgrade.
_PER_STATEMENT = f"""
    IF EXISTS (SELECT 1 FROM new_rows WHERE status <> 'pending') THEN
        INSERT INTO event_counts (source_id, channel, status, events)
        SELECT source_id, channel, status, count(*) FROM new_rows WHERE status <> 'pending'
        GROUP BY source_id, channel, status;
        INSERT INTO event_latency (bucket, events, seconds)
        SELECT tributary_latency_bucket(s), count(*), sum(s)
        FROM (SELECT {_SECONDS.format(r="r")} AS s FROM new_rows AS r) AS applied
        WHERE s IS NOT NULL
        GROUP BY 1;
    END IF;
"""  # noqa: S608


def _replace(body: str, trigger: str) -> None:
    # Dropping the trigger locks `events` (ACCESS EXCLUSIVE) until this migration commits: no
    # insert runs between the old trigger and the new one.
    op.execute(f"DROP TRIGGER {NAME} ON events")
    op.execute(
        f"CREATE OR REPLACE FUNCTION {NAME}() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
    )
    op.execute(f"CREATE TRIGGER {NAME} AFTER INSERT ON events {trigger} EXECUTE FUNCTION {NAME}()")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_PER_ROW, "FOR EACH ROW WHEN (NEW.status <> 'pending')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_PER_STATEMENT, "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT")
