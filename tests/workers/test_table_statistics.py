"""The worker ANALYZEs a table a batch reads by key once it has doubled since its statistics
(workers/table_statistics.py), so the planner does not take a grown table for a tiny one.

No timings: what is checked is what PostgreSQL's catalog says about the table (`pg_class.relpages`
and `reltuples`, written by ANALYZE) and which plan the batch's lookup gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, text

from tests.helpers import identify, plan_of, statements_sent
from tributary.models import Customer
from tributary.models.base import Base
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch
from tributary.workers.table_statistics import (
    MIN_PAGES,
    NEXT_CHECK,
    TABLES,
    analyze_outgrown,
    keep_fresh,
    outgrown,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 1_000
PAGES = "SELECT pg_relation_size('customers') / current_setting('block_size')::int"


@pytest.fixture
def pg(runtime: Runtime) -> Iterator[Runtime]:
    """A PostgreSQL runtime whose tables' statistics describe the empty tables it starts with
    (TRUNCATE between tests keeps whatever an earlier test's ANALYZE saw), checked on demand."""
    if not runtime.db.is_postgres:
        pytest.skip("planner statistics are PostgreSQL's; SQLite's planner trusts its indexes unasked")
    with runtime.db.engine.begin() as conn:
        conn.execute(text("ANALYZE customers, customer_projects, events, identities"))
    NEXT_CHECK[runtime.db] = 0.0
    yield runtime


def _pages(runtime: Runtime) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.scalar(text(PAGES)) or 0)


def _catalog(runtime: Runtime) -> tuple[int, float]:
    """(relpages, reltuples) of `customers`: its size and row count at its last ANALYZE."""
    with runtime.db.engine.connect() as conn:
        row = conn.execute(text("SELECT relpages, reltuples FROM pg_class WHERE relname = 'customers'")).one()
    return int(row.relpages), float(row.reltuples)


def _customer(account_id: str, email: str, name: str | None) -> dict[str, Any]:
    """A `customers` row to insert."""
    return {"account_id": account_id, "email": email, "name": name, "past_emails": [], "clock": {},
            "created_at": START, "updated_at": START}  # fmt: skip


def _grow(runtime: Runtime, account_id: str, pages: int, first: int = 0, named: bool = True) -> int:
    """Insert customers (nameless unless `named`) until the table holds at least `pages` pages;
    the next free number."""
    n = first
    while _pages(runtime) < pages:
        with runtime.db.engine.begin() as conn:
            conn.execute(
                insert(Customer),
                [
                    _customer(account_id, f"c{i}@example.com", f"Customer {i}" if named else None)
                    for i in range(n, n + CHUNK)
                ],
            )
        n += CHUNK
    return n


def _count(runtime: Runtime) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM customers")) or 0)


def test_a_drain_analyzes_the_customers_table_once_it_outgrew_its_statistics(
    pg: Runtime, client: FlaskClient, admin_key: str, account_id: str
) -> None:
    _grow(pg, account_id, MIN_PAGES)
    assert outgrown(pg.db) == ["customers"]
    assert _catalog(pg) == (0, 0.0)  # the empty table's statistics: what the planner believes

    identify(client, admin_key, email="c7@example.com", status="paid")
    with statements_sent(pg) as sent:
        assert drain_batch(pg) == 1

    relpages, reltuples = _catalog(pg)
    assert relpages == _pages(pg)
    assert reltuples == _count(pg)  # a table this small is read whole: the count is exact
    assert outgrown(pg.db) == []
    # With statistics, the batch's lookup by address is a probe of the unique index, not a scan.
    (lock,) = [s for s in sent if s.reads("customers") and "FOR UPDATE" in s.sql]
    with pg.db.engine.connect() as conn:
        plan = plan_of(conn, lock.sql, lock.parameters)
    assert "uq_customers_account_id_email" in plan, plan


def test_a_drain_analyzes_a_backlog_of_events_and_claims_it_in_id_order(
    pg: Runtime, client: FlaskClient, admin_key: str, account_id: str
) -> None:
    """Statistics of the empty table say a few dozen events are pending; a claim planned on them
    read every pending row by a bitmap scan and sorted them all below the row locks, once per
    batch. Once the worker has analyzed the grown table, the claim walks the pending events' index
    in id order and stops at the batch."""
    identify(client, admin_key, email="first@example.com")
    with pg.db.engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO events (id, account_id, project_id, channel, type, email, occurred_at,
                       received_at, body, headers, status, attempts)
                   SELECT 'evt_backlog' || lpad(g::text, 6, '0'), e.account_id, e.project_id,
                          'identify', 'identify', 'b' || g || '@example.com', e.occurred_at,
                          e.received_at, convert_to('{"email": "b' || g || '@example.com"}', 'UTF8'),
                          e.headers, 'pending', 0
                   FROM events AS e, generate_series(1, 3000) AS g"""
            )
        )
    assert "events" in outgrown(pg.db)
    with statements_sent(pg) as sent:
        assert drain_batch(pg, 50) == 50
    assert "events" not in outgrown(pg.db)
    with pg.db.engine.connect() as conn:
        reltuples = conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'events'"))
        (claim,) = [s for s in sent if s.reads("events") and "SKIP LOCKED" in s.sql]
        plan = plan_of(conn, claim.sql, claim.parameters)
    assert reltuples == 3001
    assert "Index Scan using ix_events_pending on events" in plan, plan
    assert "Sort" not in plan and "Bitmap" not in plan, plan


def test_only_the_columns_the_batch_looks_up_by_are_analyzed(
    pg: Runtime, client: FlaskClient, admin_key: str, account_id: str
) -> None:
    """The read side's columns are autovacuum's to analyze: sampling them all cost the drain up to
    thirteen times what its own lookups' columns do (customer_projects' params most)."""
    with pg.db.engine.begin() as conn:
        conn.execute(
            insert(Customer), [_customer(account_id, f"before{i}@example.com", "Before") for i in range(100)]
        )
        conn.execute(text("ANALYZE customers"))  # every column: 100 named customers
    _grow(pg, account_id, MIN_PAGES, named=False)
    identify(client, admin_key, email="c7@example.com")
    assert drain_batch(pg) == 1
    assert _catalog(pg)[1] == _count(pg)
    with pg.db.engine.connect() as conn:
        stats = {
            row.attname: row
            for row in conn.execute(
                text(
                    "SELECT attname, null_frac, histogram_bounds::text AS bounds FROM pg_stats "
                    "WHERE tablename = 'customers' AND attname IN ('email', 'name')"
                )
            )
        }
    assert "c1" in stats["email"].bounds  # the grown table sampled: nearly all its addresses are c<n>@
    assert stats["name"].null_frac == 0  # as the whole ANALYZE left it, not the nameless thousands


@pytest.mark.parametrize("table", sorted(TABLES))
def test_the_analyzed_columns_are_the_tables_columns(table: str) -> None:
    """ANALYZE refuses a column the table lacks, and the statistics would silently go stale."""
    assert set(TABLES[table]) <= set(Base.metadata.tables[table].c.keys())


def test_the_check_runs_once_per_interval_and_again_at_each_doubling(pg: Runtime, account_id: str) -> None:
    below = _grow(pg, account_id, MIN_PAGES // 2)
    assert keep_fresh(pg.db) == []  # half of MIN_PAGES: not worth an ANALYZE yet
    assert _catalog(pg) == (0, 0.0)

    more = _grow(pg, account_id, MIN_PAGES, below)
    assert keep_fresh(pg.db) == []  # outgrown, but checked a moment ago
    NEXT_CHECK[pg.db] = 0.0
    assert keep_fresh(pg.db) == ["customers"]
    analyzed_at = _catalog(pg)[0]
    assert analyzed_at >= MIN_PAGES

    grown = _grow(pg, account_id, 2 * analyzed_at - CHUNK // 40, more)
    NEXT_CHECK[pg.db] = 0.0
    assert keep_fresh(pg.db) == []  # grown, not yet doubled
    _grow(pg, account_id, 2 * analyzed_at, grown)
    NEXT_CHECK[pg.db] = 0.0
    assert keep_fresh(pg.db) == ["customers"]
    assert _catalog(pg)[1] == _count(pg)


def test_a_table_another_process_is_analyzing_is_left_to_it(pg: Runtime, account_id: str) -> None:
    _grow(pg, account_id, MIN_PAGES)
    with pg.db.engine.connect() as other, other.begin():
        other.execute(text("SELECT pg_advisory_xact_lock(hashtext('tributary:analyze:customers'))"))
        assert analyze_outgrown(pg.db) == []
        assert _catalog(pg) == (0, 0.0)
    assert analyze_outgrown(pg.db) == ["customers"]


def test_sqlite_is_left_alone(runtime: Runtime) -> None:
    if runtime.db.is_postgres:
        pytest.skip("the SQLite side")
    NEXT_CHECK[runtime.db] = 0.0
    assert outgrown(runtime.db) == []
    assert keep_fresh(runtime.db) == []
