"""Planner statistics for the tables a batch reads by key, refreshed once a table outgrows them.

A batch claims its events in id order and finds its customers, their project rows and their
identities by key: a few hundred index probes. PostgreSQL picks those plans from its statistics,
which autovacuum refreshes once about a tenth of a table has changed, at its next round (a minute
apart by default), and never where it is turned off. Until then a table that grew fast (a new
install draining its first backlog, an import) is planned with default selectivities: one
account's `account_id = …` taken for 0.5 % of the rows, an `email IN (500 addresses)` for all of
them, a backlog of pending events for a few dozen. The lookups then become scans of the whole
table, once per batch, and the drain slows as the table grows: at 20,000-40,000 customers 3,276-3,351
events/s in process against 3,586-3,648 with statistics, and a Seq Scan of 539,072 rows (95 ms)
for 34 ids in a scratch database left unanalyzed (bench/README.md).

So `drain_batch` asks `keep_fresh` after each batch; at most every `CHECK_SECONDS` per database
it compares each table's size now with its size at the last ANALYZE (or VACUUM: `pg_class.relpages`,
0 before either) and ANALYZEs a table that has doubled, once past `MIN_PAGES`, on the columns its
lookups test (`TABLES`). Doubling bounds the work: about twenty ANALYZEs on a table's way to a
million rows, each sampling at most 30,000 rows.
Where autovacuum runs it analyzes at a tenth of growth and usually gets there first; then this
never fires. Pages rather than the statistics collector's row counts: a backend reports those up to
a second late (ten when idle), while a relation's size is current.

SQLite is left alone: without statistics its planner assumes an index narrows the search, which is
what these lookups want.
"""

from __future__ import annotations

import logging
import time
import weakref

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tributary.models.session import Database

__all__ = [
    "CHECK_SECONDS",
    "MIN_PAGES",
    "NEXT_CHECK",
    "TABLES",
    "analyze_outgrown",
    "keep_fresh",
    "outgrown",
]

log = logging.getLogger(__name__)

# The tables a batch's load reads by key (workers/batch/load_statements.py, identity_resolution.py),
# and `events`, which its claim reads in id order and its last write joins by id: unanalyzed, a
# backlog's pending rows were estimated at a few dozen, and each claim read and sorted all of them,
# whole rows, below the row locks (155 ms and an 18 MB spill a batch at 60,000 pending; 1 ms
# walking the pending events' index once analyzed).
# Each with the columns those statements test, the only ones analyzed here. Every column cost up to
# 13 times as much at 60,000 rows (customer_projects 460 against 35 ms: its `params` target of
# 1,000, migration 0016, samples 300,000 rows and sorts their documents; events 282 against 76 ms:
# every body read), a tenth of PostgreSQL's CPU in a new install's first drain. The other columns,
# which the read side's filters are planned on, stay autovacuum's: an ANALYZE of some columns
# leaves the count of changes since the last whole ANALYZE, which autovacuum's waits for, as it was.
TABLES: dict[str, tuple[str, ...]] = {
    "customers": ("id", "account_id", "email", "past_emails"),
    "customer_projects": ("id", "customer_id", "project_id"),
    "events": ("id", "account_id", "status", "received_at", "awaiting_source", "awaiting_id"),
    "identities": ("id", "account_id", "source", "external_id", "customer_id"),
}
# Below this many 8 kB pages (512 kB) a whole-table scan costs about what a few hundred probes do.
MIN_PAGES = 64
# How often one process looks, per database: one catalog query of four rows.
CHECK_SECONDS = 2.0

_OUTGROWN = text(
    """
    SELECT c.relname
    FROM pg_class AS c
    WHERE c.oid = ANY(CAST(:tables AS regclass[]))
      -- ANALYZE skips, with a warning, a table its role does not own: it would be retried forever.
      AND pg_has_role(c.relowner, 'USAGE')
      AND pg_relation_size(c.oid) / current_setting('block_size')::int
          >= greatest(:min_pages, 2 * c.relpages)
    ORDER BY c.relname
    """
)
# Another worker analyzing the same table is enough: this one does not queue behind it.
_CLAIM = text("SELECT pg_try_advisory_xact_lock(hashtext('tributary:analyze:' || :table))")


def outgrown(db: Database) -> list[str]:
    """The tables of `TABLES` at least twice their size at their last ANALYZE (and `MIN_PAGES`)."""
    if not db.is_postgres:
        return []
    with db.autocommit() as conn:
        found = conn.execute(_OUTGROWN, {"tables": list(TABLES), "min_pages": MIN_PAGES}).scalars()
        return [str(name) for name in found]


def analyze_outgrown(db: Database) -> list[str]:
    """ANALYZE each outgrown table no other process is analyzing, on the columns its lookups test
    (`TABLES`); the tables analyzed."""
    analyzed = []
    for table in outgrown(db):
        with db.engine.begin() as conn:
            if not conn.scalar(_CLAIM, {"table": table}):
                continue
            started = time.perf_counter()
            # `table` is one of TABLES (the catalog query returns only those names).
            conn.exec_driver_sql(f"ANALYZE {table} ({', '.join(TABLES[table])})")
        analyzed.append(table)
        elapsed_ms = 1000 * (time.perf_counter() - started)
        log.info("analyzed %s, which had doubled since its statistics (%.0f ms)", table, elapsed_ms)
    return analyzed


# When each database's next check is due in this process. Unlocked: two threads racing here cost one
# catalog query more, and ANALYZE itself is claimed under an advisory lock.
NEXT_CHECK: weakref.WeakKeyDictionary[Database, float] = weakref.WeakKeyDictionary()


def keep_fresh(db: Database) -> list[str]:
    """`analyze_outgrown`, at most once per `CHECK_SECONDS` per database in this process. A database
    error is logged, not raised: statistics are an optimization, and the batch before has committed."""
    now = time.monotonic()
    if not db.is_postgres or now < NEXT_CHECK.get(db, 0.0):
        return []
    NEXT_CHECK[db] = now + CHECK_SECONDS
    try:
        return analyze_outgrown(db)
    except SQLAlchemyError as exc:
        log.warning("could not refresh the planner's statistics: %s", exc)
        return []
