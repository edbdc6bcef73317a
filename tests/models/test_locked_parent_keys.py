"""Migration 0015: the references PostgreSQL leaves to the writers' locks still behave as their
foreign keys did when a parent goes (cascade, or SET NULL for the timeline's event), on both
backends: constraints on SQLite, statement triggers on PostgreSQL. And the check every test ends
with (tests/conftest.py) really finds a row pointing at nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.helpers import dangling_references, identify, make_key
from tributary.models.session import normalize_url
from tributary.models.sql import LOCK_GUARDED_FOREIGN_KEYS
from tributary.runtime.migrate import downgrade, upgrade
from tributary.runtime.process import Runtime
from tributary.workers.batch.apply import apply_events, claim_pending

GUARDED = {
    # constraint: (child table, column)
    "fk_customers_account_id_accounts": ("customers", "account_id"),
    "fk_customer_projects_project_id_projects": ("customer_projects", "project_id"),
    "fk_customer_changes_project_id_projects": ("customer_changes", "project_id"),
    "fk_customer_projects_customer_id_customers": ("customer_projects", "customer_id"),
    "fk_customer_changes_customer_id_customers": ("customer_changes", "customer_id"),
    "fk_customer_changes_event_id_events": ("customer_changes", "event_id"),
    "fk_event_attempts_event_id_events": ("event_attempts", "event_id"),
}


def scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    with runtime.db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def execute(runtime: Runtime, sql: str, **params: Any) -> None:
    with runtime.db.engine.begin() as conn:
        conn.execute(text(sql), params)


def rows_of(runtime: Runtime, customer_id: str) -> dict[str, int]:
    """How many project rows, timeline rows and attempts of its events a customer has."""
    return {
        "projects": scalar(
            runtime, "SELECT count(*) FROM customer_projects WHERE customer_id = :c", c=customer_id
        ),
        "timeline": scalar(
            runtime, "SELECT count(*) FROM customer_changes WHERE customer_id = :c", c=customer_id
        ),
        "attempts": scalar(
            runtime,
            "SELECT count(*) FROM event_attempts a JOIN customer_changes t ON t.event_id = a.event_id "
            "WHERE t.customer_id = :c",
            c=customer_id,
        ),
    }


@pytest.fixture
def two_customers(runtime: Runtime, client: FlaskClient, account_id: str, drain: Any) -> tuple[str, str]:
    """Ada (two events) and Bob (one), applied by a real worker: customers, project rows, timeline
    rows and attempts. Returns their customer ids."""
    token = make_key(runtime, ["ingest"])
    for payload in (
        {"email": "ada@example.com", "name": "Ada", "status": "trial"},
        {"email": "ada@example.com", "status": "active"},
        {"email": "bob@example.com", "name": "Bob"},
    ):
        identify(client, token, **payload)
    drain()
    ada = scalar(runtime, "SELECT id FROM customers WHERE email = 'ada@example.com'")
    bob = scalar(runtime, "SELECT id FROM customers WHERE email = 'bob@example.com'")
    assert rows_of(runtime, ada) == {"projects": 1, "timeline": 2, "attempts": 2}
    assert rows_of(runtime, bob) == {"projects": 1, "timeline": 1, "attempts": 1}
    return ada, bob


def test_deleting_a_customer_deletes_its_project_and_timeline_rows(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    ada, bob = two_customers
    execute(runtime, "DELETE FROM customers WHERE id = :c", c=ada)
    assert rows_of(runtime, ada) == {"projects": 0, "timeline": 0, "attempts": 0}
    assert rows_of(runtime, bob) == {"projects": 1, "timeline": 1, "attempts": 1}
    # Ada's events stay (they are the intake record), with their attempts.
    assert scalar(runtime, "SELECT count(*) FROM event_attempts") == 3


def test_deleting_events_deletes_their_attempts_and_unlinks_their_timeline_rows(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    ada, bob = two_customers
    # Every event of Ada's, in one statement (a project's deletion cascades to its events so).
    execute(
        runtime,
        "DELETE FROM events WHERE id IN (SELECT event_id FROM customer_changes WHERE customer_id = :c)",
        c=ada,
    )
    assert scalar(runtime, "SELECT count(*) FROM event_attempts") == 1
    timeline = f"SELECT count(*) FROM customer_changes WHERE customer_id = '{ada}'"
    assert scalar(runtime, timeline) == 2  # the history stays, without its event
    assert scalar(runtime, timeline + " AND event_id IS NULL") == 2
    assert rows_of(runtime, bob) == {"projects": 1, "timeline": 1, "attempts": 1}


def test_deleting_a_project_deletes_its_project_and_timeline_rows(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    ada, bob = two_customers
    execute(runtime, "DELETE FROM projects")
    for customer in (ada, bob):
        assert rows_of(runtime, customer) == {"projects": 0, "timeline": 0, "attempts": 0}
    assert scalar(runtime, "SELECT count(*) FROM events") == 0
    assert scalar(runtime, "SELECT count(*) FROM customers") == 2  # a person outlives a project


def test_a_batch_holds_its_project_and_account_until_it_commits(
    runtime: Runtime, client: FlaskClient, account_id: str
) -> None:
    """What the foreign keys' checks did on each row: the parents stay until the batch commits."""
    if not runtime.db.is_postgres:
        pytest.skip("SQLite's writer locks the whole database")
    identify(client, make_key(runtime, ["ingest"]), email="ada@example.com")
    project = scalar(runtime, "SELECT project_id FROM events")
    with runtime.db.write_session() as session, session.begin():
        applied = apply_events(session, claim_pending(session, 10))
        assert applied.processed == 1
        with runtime.db.engine.connect() as other:
            for table, row in (("projects", project), ("accounts", account_id)):
                with pytest.raises(OperationalError, match="could not obtain lock"):
                    other.execute(
                        text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE NOWAIT"), {"id": row}
                    )
                other.rollback()
    with runtime.db.engine.connect() as other:  # committed: free again
        other.execute(text("SELECT 1 FROM projects WHERE id = :id FOR UPDATE NOWAIT"), {"id": project})


def test_deleting_the_account_leaves_none_of_its_rows(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    execute(runtime, "DELETE FROM accounts")
    for table in ("customers", "customer_projects", "customer_changes", "events", "event_attempts"):
        assert scalar(runtime, f"SELECT count(*) FROM {table}") == 0, table


def test_truncating_a_parent_takes_its_children_along(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    # As `TRUNCATE … CASCADE` did through the constraints (SQLite has no TRUNCATE).
    if not runtime.db.is_postgres:
        pytest.skip("SQLite has no TRUNCATE")
    execute(runtime, "TRUNCATE events CASCADE")
    assert scalar(runtime, "SELECT count(*) FROM event_attempts") == 0
    assert scalar(runtime, "SELECT count(*) FROM customer_changes WHERE event_id IS NOT NULL") == 0
    assert scalar(runtime, "SELECT count(*) FROM customer_changes") == 3
    execute(runtime, "TRUNCATE customers CASCADE")
    assert scalar(runtime, "SELECT count(*) FROM customer_projects") == 0
    assert scalar(runtime, "SELECT count(*) FROM customer_changes") == 0


def test_the_end_of_test_check_finds_a_row_pointing_at_nothing(
    runtime: Runtime, two_customers: tuple[str, str]
) -> None:
    ada, _ = two_customers
    assert set(dangling_references(runtime)) == LOCK_GUARDED_FOREIGN_KEYS
    assert set(dangling_references(runtime).values()) == {0}
    orphan = "UPDATE customer_changes SET customer_id = 'cus_nobody' WHERE customer_id = :c"
    if not runtime.db.is_postgres:
        with pytest.raises(IntegrityError):  # SQLite keeps the constraint
            execute(runtime, orphan, c=ada)
        return
    execute(runtime, orphan, c=ada)
    assert dangling_references(runtime)["fk_customer_changes_customer_id_customers"] == 2
    execute(runtime, "DELETE FROM customer_changes WHERE customer_id = 'cus_nobody'")


def test_postgresql_holds_them_as_triggers_and_a_downgrade_restores_the_constraints(scratch_url: str) -> None:
    if not scratch_url.startswith("postgresql"):
        pytest.skip("SQLite keeps the constraints (migration 0015 changes nothing there)")
    upgrade(scratch_url)
    engine = create_engine(normalize_url(scratch_url))

    def constraints() -> set[str]:
        found = set()
        for table, _ in GUARDED.values():
            found |= {str(key["name"]) for key in inspect(engine).get_foreign_keys(table)}
        return found & set(GUARDED)

    def triggers() -> set[str]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgname ~ '_(deleted|truncated)$'"))
            return {row[0] for row in rows}

    try:
        assert constraints() == set()
        assert triggers() == {
            f"tributary_{parent}_{change}"
            for parent in ("accounts", "projects", "customers", "events")
            for change in ("deleted", "truncated")
        }
        downgrade(scratch_url, "0014_lighter_indexes")
        assert constraints() == set(GUARDED)
        assert triggers() == set()
        upgrade(scratch_url)
        assert constraints() == set()
    finally:
        engine.dispose()
