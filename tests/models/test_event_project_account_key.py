"""Migration 0020: the events' two foreign keys (account, project) become one key to the project and
its account, on both backends. Stored events, and on SQLite their attempts (its table is rebuilt),
come through; an event naming another account's project stops the migration before it changes
anything; a downgrade restores the two keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import IntegrityError

from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade

BEFORE = "0019_pending_counted_live"
ACCOUNT_SQL = "INSERT INTO accounts (id, name, created_at) VALUES (:a, :a, CURRENT_TIMESTAMP)"
PROJECT_SQL = (
    "INSERT INTO projects (id, account_id, slug, name, created_at) "
    "VALUES ('prj_a', 'acct_a', 'a', 'A', CURRENT_TIMESTAMP)"
)
EVENT_SQL = (
    "INSERT INTO events (id, account_id, project_id, channel, type, occurred_at, received_at, body, "
    "headers, status, attempts) VALUES (:id, :account, :project, 'identify', 'identify', "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :body, '{}', 'processed', 1)"
)


@pytest.fixture
def engine(scratch_url: str) -> Iterator[Engine]:
    made = create_engine(normalize_url(scratch_url))
    if made.dialect.name == "sqlite":  # as the product connects: foreign keys enforced

        @event.listens_for(made, "connect")
        def _on(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

    yield made
    made.dispose()


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def event_keys(engine: Engine) -> set[tuple[str, tuple[str, ...], str, tuple[str, ...]]]:
    return {
        (
            str(key["name"]),
            tuple(key["constrained_columns"]),
            key["referred_table"],
            tuple(key["referred_columns"]),
        )
        for key in inspect(engine).get_foreign_keys("events")
    }


TWO_KEYS = {
    ("fk_events_account_id_accounts", ("account_id",), "accounts", ("id",)),
    ("fk_events_project_id_projects", ("project_id",), "projects", ("id",)),
    ("fk_events_source_id_sources", ("source_id",), "sources", ("id",)),
}
ONE_KEY = {
    ("fk_events_project_id_projects", ("project_id", "account_id"), "projects", ("id", "account_id")),
    ("fk_events_source_id_sources", ("source_id",), "sources", ("id",)),
}


def test_the_events_keep_their_attempts_and_one_key_checks_project_and_account(
    scratch_url: str, engine: Engine
) -> None:
    upgrade(scratch_url, BEFORE)
    for account in ("acct_a", "acct_b"):
        execute(engine, ACCOUNT_SQL, a=account)
    execute(engine, PROJECT_SQL)
    execute(engine, EVENT_SQL, id="evt_1", account="acct_a", project="prj_a", body=b"{}")
    execute(
        engine,
        "INSERT INTO event_attempts (event_id, number, outcome, attempted_at) "
        "VALUES ('evt_1', 1, 'processed', CURRENT_TIMESTAMP)",
    )
    # Possible under the two keys: account B with account A's project.
    execute(engine, EVENT_SQL, id="evt_2", account="acct_b", project="prj_a", body=b"{}")
    assert event_keys(engine) == TWO_KEYS

    with pytest.raises(RuntimeError, match="1 events name a project"):
        upgrade(scratch_url)
    assert scalar(engine, "SELECT version_num FROM alembic_version") == BEFORE
    assert event_keys(engine) == TWO_KEYS
    assert "uq_projects_id_account_id" not in {i["name"] for i in inspect(engine).get_indexes("projects")}

    execute(engine, "DELETE FROM events WHERE id = 'evt_2'")
    upgrade(scratch_url)
    assert event_keys(engine) == ONE_KEY
    assert scalar(engine, "SELECT count(*) FROM event_attempts WHERE event_id = 'evt_1'") == 1
    with pytest.raises(IntegrityError):
        execute(engine, EVENT_SQL, id="evt_3", account="acct_b", project="prj_a", body=b"{}")
    # Deleting an account still deletes its events (through its projects) and their attempts.
    execute(engine, "DELETE FROM accounts WHERE id = 'acct_a'")
    assert scalar(engine, "SELECT count(*) FROM events") == 0
    assert scalar(engine, "SELECT count(*) FROM event_attempts") == 0

    execute(engine, ACCOUNT_SQL, a="acct_a")
    execute(engine, PROJECT_SQL)
    execute(engine, EVENT_SQL, id="evt_4", account="acct_a", project="prj_a", body=b"{}")
    engine.dispose()  # SQLite's rebuild needs the table free of other connections
    downgrade(scratch_url, BEFORE)
    assert event_keys(engine) == TWO_KEYS
    assert scalar(engine, "SELECT count(*) FROM events WHERE id = 'evt_4'") == 1
    engine.dispose()
    upgrade(scratch_url)
    assert event_keys(engine) == ONE_KEY
