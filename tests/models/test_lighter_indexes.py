"""Migration 0014's partial indexes still serve the queries they exist for, on both backends: a
partial index is only usable when the query's own conditions imply its predicate, so each test
plans the statement the product really sends (captured as it runs) with table scans priced out,
and fails when the plan falls back to reading the table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask.testing import FlaskClient
from sqlalchemy import Connection

from tests.connectors.stripe_helpers import create_source, post_customer_created
from tests.helpers import Sent, plan_of, statements_sent
from tests.workers.test_deferred import activity
from tests.workers.test_email_change import (  # noqa: F401 - the fixture registers the channel
    _changes_channel,
    apply,
    signup,
    statuses,
)
from tributary.runtime.process import Runtime


@contextmanager
def scans_priced_out(runtime: Runtime, *without: str) -> Iterator[Connection]:
    """A connection whose planner takes an index whenever one can serve (PostgreSQL would read a
    small table whole; SQLite takes a usable index on its own), with the indexes `without`
    dropped inside its transaction (rolled back at the end), so a plan shows whether the index
    under test can serve, not which of two good ones the planner preferred on a small table."""
    with runtime.db.engine.connect() as conn:
        if runtime.db.is_postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for index in without:
            conn.exec_driver_sql(f"DROP INDEX {index}")
        yield conn
        conn.rollback()


def reading(sent: list[Sent], table: str, marker: str) -> list[Sent]:
    found = [s for s in sent if s.reads(table) and marker in s.sql]
    assert found, [s.sql for s in sent]
    return found


def test_waking_deferred_events_uses_the_partial_awaiting_index(runtime: Runtime) -> None:
    [early] = apply(runtime, activity("user_1", 5))
    assert statuses(runtime, [early]) == ["deferred"]
    with statements_sent(runtime) as sent:
        apply(runtime, signup("user_1", "ada@example.com", 0))
    assert statuses(runtime, [early]) == ["processed"]
    # As deferred events pile up, the partial index on the identity keeps a batch's lookup short
    # (an index of every event's status, dropped by migration 0022, could serve it too, reading
    # every deferred event then filtering).
    with scans_priced_out(runtime) as conn:
        for lookup in reading(sent, "events", "events.awaiting_source = "):
            plan = plan_of(conn, lookup.sql, lookup.parameters)
            assert "ix_events_awaiting" in plan, plan


def test_looking_up_a_sources_events_uses_the_partial_source_index(
    runtime: Runtime, client: FlaskClient, admin: dict[str, str]
) -> None:
    source = create_source(client, admin)
    post_customer_created(client, source, "indexed", 1)
    postgres = runtime.db.is_postgres
    # One source's events, as the foreign key's ON DELETE SET NULL finds them when a source row is
    # deleted (on PostgreSQL, its UPDATE too), and as the event list's `source` filter names them.
    marker, parameters = ("%(s)s", {"s": source}) if postgres else ("?", (source,))
    statements = [f"SELECT id FROM events WHERE source_id = {marker}"]
    if postgres:
        statements.append(f"UPDATE events SET source_id = NULL WHERE source_id = {marker}")
    with scans_priced_out(runtime) as conn:
        for sql in statements:
            plan = plan_of(conn, sql, parameters)
            assert "ix_events_source_id" in plan, plan
