"""`/v1/batch` on SQLite writes its rows as the group commit does (app/sqlite_event_writes.py): one
INSERT that checks the key and commits itself, waiting for the lock in short polls; rows beyond
what one statement binds go in several statements of one transaction, all or none."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event as sqla_event
from sqlalchemy import func, select

from tests.helpers import auth
from tributary.app.event_rows import ROW_COLUMNS, event_row
from tributary.app.event_store import EventStore
from tributary.app.sqlite_event_writes import SqliteEventWrites
from tributary.models import Event, Project
from tributary.runtime.process import Runtime

PER_ROW = len(ROW_COLUMNS) + 1  # a row's values and its key
WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE", "COMMIT")
REFUSE = (
    "CREATE TEMP TRIGGER refuse_boom BEFORE INSERT ON main.events WHEN NEW.email = 'boom@example.com' "
    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
)


@pytest.fixture(autouse=True)
def _sqlite_only(runtime: Runtime) -> None:
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL writes a batch with one fixed statement (app/event_store.py)")


@contextmanager
def on_connections(runtime: Runtime, setup: Callable[[sqlite3.Connection], None]) -> Iterator[None]:
    """`setup` on every driver connection checked out while the block runs, the group commit's
    among them (`EventStore`: `/v1/batch` writes in its shared statements); they are given back
    as they were (no trace, the default variable limit, no temporary trigger)."""
    touched: list[tuple[sqlite3.Connection, int]] = []  # and its variable limit
    limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        if all(conn is not dbapi_connection for conn, _ in touched):
            touched.append((dbapi_connection, dbapi_connection.getlimit(limit)))
            setup(dbapi_connection)

    store = EventStore.for_runtime(runtime)
    store.close()  # its next write checks out a connection of its own, set up here
    sqla_event.listen(runtime.db.engine, "checkout", checkout)
    try:
        yield
    finally:
        sqla_event.remove(runtime.db.engine, "checkout", checkout)
        store.close()
        for conn, original in touched:
            with suppress(sqlite3.ProgrammingError):  # closed: a failed write's, invalidated
                conn.set_trace_callback(None)
                conn.setlimit(limit, original)
                conn.execute("DROP TRIGGER IF EXISTS temp.refuse_boom")


def _messages(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"type": "identify", "email": f"{prefix}{n}@example.com", "message_id": f"{prefix}-{n}"}
        for n in range(count)
    ]


def _count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_a_batch_is_one_insert_that_checks_its_key_and_commits_itself(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    sent: list[str] = []
    with on_connections(runtime, lambda conn: conn.set_trace_callback(sent.append)):
        response = client.post("/v1/batch", json={"batch": _messages("one", 3)}, headers=auth(admin_key))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["accepted"] == 3
    # (A plain BEGIN and its ROLLBACK are reads elsewhere in the request: key and project lookups.)
    writes = [sql for sql in sent if sql.startswith(WRITES)]
    assert len(writes) == 1, writes
    assert writes[0].startswith("INSERT INTO events") and "FROM api_keys" in writes[0]
    # No lookup of whether the key is revoked before the write (the key's own lookup by its hash,
    # for authentication, comes before; the tests' key cache keeps nothing).
    assert not [sql for sql in sent if sql.startswith("SELECT") and "revoked_at IS NULL" in sql]
    assert _count(runtime) == 3


def test_rows_beyond_one_statement_are_written_in_one_transaction(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    sent: list[str] = []

    def two_rows_a_statement(conn: sqlite3.Connection) -> None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2 * PER_ROW)
        conn.set_trace_callback(sent.append)

    with on_connections(runtime, two_rows_a_statement):
        response = client.post("/v1/batch", json={"batch": _messages("many", 5)}, headers=auth(admin_key))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["accepted"] == 5
    writes = [sql.split(" (")[0] for sql in sent if sql.startswith(WRITES)]
    assert writes == ["BEGIN IMMEDIATE", *["INSERT INTO events"] * 3, "COMMIT"]
    assert _count(runtime) == 5


def test_a_chunk_refused_stores_nothing_of_the_batch(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    messages = _messages("whole", 5)
    messages[3]["email"] = "boom@example.com"  # in the second of three statements

    def refuse_one(conn: sqlite3.Connection) -> None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2 * PER_ROW)
        conn.execute(REFUSE)

    with on_connections(runtime, refuse_one):
        response = client.post("/v1/batch", json={"batch": messages}, headers=auth(admin_key))
        assert response.status_code == 500, response.get_json()
        assert response.get_json()["error"]["code"] == "internal_error"
        assert _count(runtime) == 0  # the first statement's rows were rolled back with it
        # The connection went back to the pool out of any transaction: the next batch is stored.
        again = client.post("/v1/batch", json={"batch": _messages("after", 3)}, headers=auth(admin_key))
    assert again.status_code == 202, again.get_json()
    assert _count(runtime) == 3


def test_one_statement_refused_stores_nothing_either(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    messages = _messages("single", 3)
    messages[2]["email"] = "boom@example.com"
    with on_connections(runtime, lambda conn: conn.execute(REFUSE)):
        response = client.post("/v1/batch", json={"batch": messages}, headers=auth(admin_key))
    assert response.status_code == 500, response.get_json()
    assert _count(runtime) == 0


def test_one_writer_of_a_process_waits_for_the_lock_and_the_others_wait_their_turn(
    runtime: Runtime, account_id: str
) -> None:
    """While another process holds the write lock, one writer of this process tries for it (its
    statement, then probes); a second writer arriving meanwhile (on a connection of its own: a
    batch stored alone after a failed shared write) waits behind it without trying, then writes
    once."""
    with runtime.db.session() as session:
        project_id = session.scalar(select(Project.id).where(Project.account_id == account_id))
    path = runtime.db.engine.url.database or ""
    ours = [sqlite3.connect(path, isolation_level=None, check_same_thread=False) for _ in range(2)]
    sent: list[list[str]] = [[], []]
    for conn, statements in zip(ours, sent, strict=True):
        conn.set_trace_callback(statements.append)
    writes = SqliteEventWrites.for_dialect(runtime.db.engine.dialect)

    def write(n: int) -> None:
        now = datetime.now(UTC)
        row = event_row(
            account_id=account_id,
            project_id=project_id,
            channel="identify",
            type="identify",
            occurred_at=now,
            received_at=now,
            body=b"{}",
            email=f"turn{n}@example.com",
            dedup_key=None,
            provider_event_id=None,
        )
        assert len(writes.insert(ours[n], [row], [None])) == 1

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    first = threading.Thread(target=write, args=(0,))
    first.start()
    while not any(" WHERE 0" in sql for sql in list(sent[0])):
        time.sleep(0.005)
    second = threading.Thread(target=write, args=(1,))
    second.start()
    time.sleep(0.2)  # the second writer reaches its turn meanwhile
    other.execute("COMMIT")
    first.join()
    second.join()
    for conn in (other, *ours):
        conn.close()
    assert _count(runtime) == 2
    assert any(" WHERE 0" in sql for sql in sent[0])  # the first waited for the lock
    # The second never asked SQLite while the first was waiting: one try, which wrote.
    assert [sql for sql in sent[1] if sql.startswith("INSERT")] == [
        next(sql for sql in sent[1] if sql.startswith("INSERT"))
    ]
    assert not any(" WHERE 0" in sql for sql in sent[1])
