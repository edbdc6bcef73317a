"""event tallies: pending events are counted live, not tallied on every ingest

Revision ID: 0019_pending_counted_live
Revises: 0018_tally_updates_unjoined
Create Date: 2026-12-05 12:30:00

Every INSERT into `events` ran migration 0013's insert trigger, which appended one `event_counts`
row (the new events, all pending) per statement: an extra INSERT executed inside each ingest
statement, a sixth of PostgreSQL's CPU for a one-event statement, the shape of nearly every
identify, ping and webhook delivery (bench/README.md, 2026-12-05 12:00). Yet a scrape already
reads the pending events themselves, through their partial index, for the backlog's size and age.

So pending events are no longer tallied: the triggers count only rows whose status is not
`pending` (an insert of pending events now runs one EXISTS over its new rows and writes nothing),
and a scrape counts the pending events by source and connector in the query it already made
(models/event_tally.py). Moving an event out of pending counts it in its new status only; moving
one back counts it out of its old status only. The pending rows already tallied are deleted while
this migration holds writers off, so nothing is counted twice or missed. PostgreSQL only, like the
triggers. The downgrade restores 0013's and 0018's bodies and tallies the pending events again.
"""

from __future__ import annotations

from alembic import op

revision = "0019_pending_counted_live"
down_revision = "0018_tally_updates_unjoined"
branch_labels = None
depends_on = None

APPLIED = "('processed', 'ignored')"

# An applied event's latency, or NULL for any other event (`r` is a row of `events`); as in 0013.
_SECONDS = (
    f"CASE WHEN {{r}}.status IN {APPLIED} AND {{r}}.processed_at IS NOT NULL "
    "THEN extract(epoch FROM {r}.processed_at - {r}.received_at) END"
)


# The bodies below are built from this module's constants only: no value from outside reaches the SQL.
def _added_or_removed(rows: str, sign: str, counted: str) -> str:
    """The INSERT and DELETE triggers' body: count `rows` with `sign`, those matching `counted`."""
    seconds = _SECONDS.format(r="r")
    return f"""
        INSERT INTO event_counts (source_id, channel, status, events)
        SELECT source_id, channel, status, {sign}count(*) FROM {rows} WHERE {counted}
        GROUP BY source_id, channel, status;
        INSERT INTO event_latency (bucket, events, seconds)
        SELECT tributary_latency_bucket(s), {sign}count(*), {sign}sum(s)
        FROM (SELECT {seconds} AS s FROM {rows} AS r) AS applied
        WHERE s IS NOT NULL
        GROUP BY 1;
    """  # noqa: S608


def _counted_only(rows: str, sign: str) -> str:
    # A statement of pending events only (every ingest) runs the EXISTS and nothing else: an
    # INSERT that writes no row still costs its execution. Latency is only ever counted for
    # applied events, never pending, so the guard covers both statements.
    counted = "status <> 'pending'"
    body = _added_or_removed(rows, sign, counted)
    return f"IF EXISTS (SELECT 1 FROM {rows} WHERE {counted}) THEN {body} END IF;"  # noqa: S608


def _updated(counted: str) -> str:
    """The update trigger's body as of 0018 (old rows counted out, new rows counted in, no join),
    each side limited to its rows matching `counted` (`{r}` names the side)."""
    return f"""
    INSERT INTO event_counts (source_id, channel, status, events)
    SELECT k.source_id, k.channel, k.status, sum(k.events)
    FROM (SELECT o.source_id, o.channel, o.status, -1 FROM old_rows AS o WHERE {counted.format(r="o")}
          UNION ALL
          SELECT n.source_id, n.channel, n.status, 1 FROM new_rows AS n WHERE {counted.format(r="n")})
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


_LIVE = {
    "tributary_tally_inserted_events": _counted_only("new_rows", ""),
    "tributary_tally_deleted_events": _counted_only("old_rows", "-"),
    "tributary_tally_updated_events": _updated("{r}.status <> 'pending'"),
}
# 0013's insert and delete bodies and 0018's update body, for the downgrade.
_TALLIED = {
    "tributary_tally_inserted_events": _added_or_removed("new_rows", "", "true"),
    "tributary_tally_deleted_events": _added_or_removed("old_rows", "-", "true"),
    "tributary_tally_updated_events": _updated("true"),
}


def _replace(bodies: dict[str, str]) -> None:
    # Writers are held off first (they take ROW EXCLUSIVE on `events`; SHARE waits for those in
    # flight to commit and blocks new ones until this migration commits), so the pending tallies
    # changed below are exactly those of the events the new functions go on from.
    op.execute("LOCK TABLE events IN SHARE MODE")
    # Replacing a function keeps its trigger; sessions plan its statements afresh.
    for name, body in bodies.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_LIVE)
        op.execute("DELETE FROM event_counts WHERE status = 'pending'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(_TALLIED)
        op.execute(
            "INSERT INTO event_counts (source_id, channel, status, events) "
            "SELECT source_id, channel, status, count(*) FROM events WHERE status = 'pending' "
            "GROUP BY source_id, channel, status"
        )
