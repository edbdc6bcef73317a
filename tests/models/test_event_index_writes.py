"""Migration 0022: the email index is a hash index on PostgreSQL, the status index gives way to a
partial index for the retention purge. Each test plans what the product really sends (captured as
it runs) with table scans priced out, so it fails when no index can serve the query."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text

from tests.helpers import identify, indexes_of, plan_of, statements_sent
from tests.models.test_event_project_account_key import ACCOUNT_SQL, PROJECT_SQL, execute
from tests.models.test_lighter_indexes import reading, scans_priced_out
from tests.ops.test_retention import _age_all
from tributary.models.event import PURGEABLE_ROWS
from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade
from tributary.runtime.process import Runtime
from tributary.workers.retention import purge_batch

BEFORE = "0021_insert_tally_per_row"
EVENT_SQL = (
    "INSERT INTO events (id, account_id, project_id, channel, type, email, occurred_at, received_at, "
    "body, headers, status, attempts) VALUES (:id, 'acct_a', 'prj_a', 'identify', 'identify', :email, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :body, '{}', :status, 1)"
)


def test_the_retention_purge_reads_the_oldest_from_its_partial_index(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    for n in range(3):
        identify(client, token, email=f"old{n}@example.com")
    drain()
    _age_all(runtime, 31)
    with statements_sent(runtime) as sent:
        assert purge_batch(runtime, timedelta(days=30)) == 3
    with scans_priced_out(runtime) as conn:
        [oldest] = reading(sent, "events", "received_at <")
        plan = plan_of(conn, oldest.sql, oldest.parameters)
    # In the index's order: no sort of every candidate before the LIMIT.
    assert "ix_events_purgeable" in plan and "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def test_a_persons_events_are_found_through_the_email_index_not_the_accounts(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    # The event list by email and an erasure: the events naming the address, with the events that
    # touched its customer. Each must be found through the address's index (a hash index on
    # PostgreSQL), not by reading every event of the account and testing each.
    token = admin["Authorization"].split()[1]
    identify(client, token, email="ada@example.com")
    identify(client, token, email="bob@example.com")
    drain()
    with statements_sent(runtime) as sent:
        listed = client.get("/v1/events?email=ada@example.com", headers=admin)
        erased = client.delete("/v1/customers/ada@example.com", headers=admin)
    assert listed.status_code == 200 and len(listed.get_json()["data"]) == 1
    assert erased.status_code == 204
    lookups = reading(sent, "events", "events.email")
    assert len(lookups) >= 2, [s.sql for s in lookups]
    with scans_priced_out(runtime, "ix_events_account_received", "ix_events_account_status_received") as conn:
        for lookup in lookups:
            plan = plan_of(conn, lookup.sql, lookup.parameters)
            assert "ix_events_email" in plan, plan


def _purgeable_entries(engine: Engine) -> int:
    """Events found through `ix_events_purgeable` alone."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            select = "SELECT count(*) FROM events"
        else:
            select = "SELECT count(*) FROM events INDEXED BY ix_events_purgeable"
        where = f" WHERE {PURGEABLE_ROWS} AND received_at < '9999-01-01'"
        plan = plan_of(conn, select + where, {})
        assert "ix_events_purgeable" in plan, plan
        return int(conn.execute(text(select + where)).scalar_one())


def test_the_migration_rebuilds_both_indexes_and_its_downgrade_restores_them(scratch_url: str) -> None:
    upgrade(scratch_url, BEFORE)
    engine = create_engine(normalize_url(scratch_url))
    try:
        execute(engine, ACCOUNT_SQL, a="acct_a")
        execute(engine, PROJECT_SQL)
        for n, status in enumerate(("processed", "ignored", "pending", "failed")):
            execute(engine, EVENT_SQL, id=f"evt_{n}", email=f"u{n}@example.com", body=b"{}", status=status)
        postgres = engine.dialect.name == "postgresql"
        before = indexes_of(engine, "events")
        assert "ix_events_status_id" in before and "ix_events_purgeable" not in before
        upgrade(scratch_url)
        after = indexes_of(engine, "events")
        assert "ix_events_status_id" not in after
        assert ("USING hash (email)" in after["ix_events_email"]) is postgres, after["ix_events_email"]
        assert "WHERE" in after["ix_events_purgeable"]
        assert _purgeable_entries(engine) == 2  # the applied events only: none pending or failed
        downgrade(scratch_url, BEFORE)
        assert indexes_of(engine, "events") == before
    finally:
        engine.dispose()


def test_an_analyzed_sqlite_database_gets_statistics_for_the_new_index(tmp_path: Path) -> None:
    # As in 0009: with statistics for every index but a new one, SQLite misplans.
    url = f"sqlite:///{tmp_path / 'analyzed.db'}"
    upgrade(url, BEFORE)
    engine = create_engine(url)
    try:
        execute(engine, ACCOUNT_SQL, a="acct_a")
        execute(engine, PROJECT_SQL)
        execute(engine, EVENT_SQL, id="evt_1", email="u@example.com", body=b"{}", status="processed")
        execute(engine, "ANALYZE")
        upgrade(url)
        with engine.connect() as conn:
            analyzed = {row[0] for row in conn.execute(text("SELECT idx FROM sqlite_stat1"))}
        assert "ix_events_purgeable" in analyzed
    finally:
        engine.dispose()
