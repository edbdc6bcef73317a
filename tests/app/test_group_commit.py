"""Group commit (app/event_store.py): concurrent single-event stores share one statement and one
commit, each caller answered only after that commit, and a failed shared write fails nobody: every
caller then stores its row alone.

The database itself holds the first write back (a transaction of another connection locks the
events table), so the rows that arrive meanwhile queue up for the next shared write: no timing
guesses, no stand-in for the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import event as sqla_event
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from tests.helpers import auth, make_key
from tributary.app.accounts import create_project
from tributary.app.event_rows import event_row
from tributary.app.event_store import EventStore, insert_one, insert_rows
from tributary.models import Account, ApiKey, Event, Project
from tributary.runtime.process import Runtime


@contextmanager
def events_locked(runtime: Runtime) -> Iterator[None]:
    """Hold writes to the events table in another transaction until the block ends."""
    with runtime.db.write_connection() as conn:  # BEGIN IMMEDIATE on SQLite: the write lock
        if runtime.db.is_postgres:
            conn.execute(text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))
        yield


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _row(runtime: Runtime, account_id: str, n: int, **overrides: Any) -> dict[str, Any]:
    with runtime.db.session() as session:
        project_id = session.scalar(select(Project.id).where(Project.account_id == account_id))
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "account_id": account_id,
        "project_id": project_id,
        "channel": "identify",
        "type": "identify",
        "occurred_at": now,
        "received_at": now,
        "body": f'{{"email":"g{n}@example.com"}}'.encode(),
        "email": f"g{n}@example.com",
        "dedup_key": None,
        "provider_event_id": None,
    }
    fields.update(overrides)
    return event_row(**fields)


@pytest.fixture
def store(runtime: Runtime) -> Iterator[EventStore]:
    """A store of its own (not the app's), its connection given back at the end."""
    made = EventStore(runtime)
    yield made
    made.close()


def _key_id(runtime: Runtime) -> str:
    make_key(runtime, ["ingest"])
    with runtime.db.session() as session:
        return str(session.scalars(select(ApiKey.id).order_by(ApiKey.created_at.desc())).first())


def _stored_ids(runtime: Runtime) -> set[str]:
    with runtime.db.session() as session:
        return set(session.scalars(select(Event.id)))


def behind_a_held_write(store: EventStore, runtime: Runtime, calls: list[Callable[[], Any]]) -> list[Any]:
    """The first call writes alone while the events table is locked; the others queue meanwhile
    and share the next write. Returns every call's result, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with events_locked(runtime):
        threads[0].start()
        wait_for(lambda: store._writing, "the first write to start")
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(store._open.items) == len(calls) - 1, "the others to queue")
        assert all(r is None for r in results)  # nobody answered before a commit
    for thread in threads:
        thread.join(10)
    return results


def _run_behind_a_held_write(
    store: EventStore, runtime: Runtime, first: tuple[dict[str, Any], str | None], rest: list[tuple]
) -> list[bool | None]:
    """`behind_a_held_write` of single stores, `first` first."""
    calls = [partial(store.store, row, key_id) for row, key_id in [first, *rest]]
    return behind_a_held_write(store, runtime, calls)


def test_requests_arriving_during_a_write_share_the_next_statement_and_commit(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    key_id = _key_id(runtime)
    first = (_row(runtime, account_id, 0), key_id)
    rest = [(_row(runtime, account_id, n), key_id) for n in range(1, 9)]
    results = _run_behind_a_held_write(store, runtime, first, rest)
    assert results == [True] * 9
    assert (store.batches, store.rows) == (2, 9)  # one write alone, then eight rows in one
    assert _stored_ids(runtime) == {first[0]["id"], *(row["id"] for row, _ in rest)}


def test_a_full_batch_is_written_on_its_own_and_the_next_one_follows(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """At `MAX_ROWS` a batch closes: the rows after it start the next one, and the closed batches
    are written in turn, every caller answered after its own batch's commit."""
    store.MAX_ROWS = 3
    key_id = _key_id(runtime)
    rows = [_row(runtime, account_id, n) for n in range(8)]
    results: list[bool | None] = [None] * len(rows)

    def call(i: int) -> None:
        results[i] = store.store(rows[i], key_id)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows))]
    with events_locked(runtime):
        threads[0].start()
        wait_for(lambda: store._writing, "the first write to start")
        for thread in threads[1:]:
            thread.start()
        wait_for(
            lambda: sum(len(b.items) for b in store._full) + len(store._open.items) == 7,
            "the others to queue",
        )
        assert [len(b.items) for b in store._full] == [3, 3] and len(store._open.items) == 1
        assert all(r is None for r in results)
    for thread in threads:
        thread.join(10)
    assert results == [True] * 8
    assert (store.batches, store.rows) == (4, 8)  # alone, then 3, 3 and 1
    assert _stored_ids(runtime) == {row["id"] for row in rows}


def test_a_shared_write_dedups_and_checks_each_rows_key(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    live, revoked = _key_id(runtime), _key_id(runtime)
    with runtime.db.session() as session, session.begin():
        session.get_one(ApiKey, revoked).revoked_at = datetime.now(UTC)
    earlier = _row(runtime, account_id, 0, dedup_key="api:m-1")
    assert store.store(earlier, live) is True
    twin_a = _row(runtime, account_id, 1, dedup_key="api:m-2")
    twin_b = _row(runtime, account_id, 2, dedup_key="api:m-2")
    rest = [
        (_row(runtime, account_id, 3, dedup_key="api:m-1"), live),  # stored before
        (twin_a, live),
        (twin_b, live),  # same message id in the same statement
        (_row(runtime, account_id, 4), revoked),
        (_row(runtime, account_id, 5), None),  # a webhook's row: no key to check
    ]
    results = _run_behind_a_held_write(store, runtime, (_row(runtime, account_id, 6), live), rest)
    assert results[0] is True
    assert results[1] is False
    assert sorted(results[2:4]) == [False, True]  # exactly one of the twins
    assert results[4] is False
    assert results[5] is True
    assert store.batches == 3


def _refused_by_every_insert(
    runtime: Runtime, store: EventStore, row: dict[str, Any], valid: dict[str, Any], key_id: str
) -> None:
    """`row` fails the shared write, `insert_one`, and `insert_rows` beside a `valid` row."""
    assert store.store(row, key_id) is None  # the shared write failed
    with runtime.db.autocommit() as conn, pytest.raises(IntegrityError):
        insert_one(conn, row, key_id)
    # On PostgreSQL `insert_rows` goes to the driver, whose error is not wrapped.
    with runtime.db.autocommit() as conn, pytest.raises((IntegrityError, psycopg.IntegrityError)):
        insert_rows(conn, [valid, row], key_id)


def test_an_event_id_stored_before_is_an_error_not_a_duplicate(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """Only the dedup key makes a row a duplicate (`models.event.DEDUP_KEY`, the inserts' one
    ON CONFLICT target): a new row whose id is taken fails, alone or in a shared write, and is not
    answered as stored before."""
    key_id = _key_id(runtime)
    first = _row(runtime, account_id, 0, dedup_key="api:m-1")
    assert store.store(first, key_id) is True
    clash = _row(runtime, account_id, 1, dedup_key="api:m-2") | {"id": first["id"]}
    _refused_by_every_insert(runtime, store, clash, _row(runtime, account_id, 2), key_id)
    with runtime.db.session() as session:
        assert session.scalars(select(Event.dedup_key)).all() == ["api:m-1"]
    # The dedup key itself still skips quietly, in both forms.
    again = _row(runtime, account_id, 3, dedup_key="api:m-1")
    assert store.store(again, key_id) is False
    with runtime.db.autocommit() as conn:
        assert insert_one(conn, again, key_id) is None


def test_an_event_naming_a_project_of_another_account_is_refused(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """The events' one key to their project and its account (migration 0020): a project that
    exists but belongs to another account is refused like a missing one, by every insert."""
    key_id = _key_id(runtime)
    with runtime.db.session() as session, session.begin():
        other = Account(name="Other")
        session.add(other)
        session.flush()
        foreign_project = create_project(session, other.id, "theirs", "Theirs").id
    crossed = _row(runtime, account_id, 0, dedup_key="api:m-1") | {"project_id": foreign_project}
    missing = _row(runtime, account_id, 1, dedup_key="api:m-2") | {"project_id": "prj_missing"}
    for row in (crossed, missing):
        _refused_by_every_insert(runtime, store, row, _row(runtime, account_id, 2), key_id)
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
    # The same row with its own account's project is stored.
    assert store.store(_row(runtime, account_id, 3, dedup_key="api:m-1"), key_id) is True


@contextmanager
def sqlite_statements(runtime: Runtime, store: EventStore) -> Iterator[list[str]]:
    """Every statement SQLite itself runs while the block runs (its trace callback) on the store's
    held connection and on those checked out meanwhile, statements sent straight to the driver
    included."""
    sent: list[str] = []
    traced: list[Any] = []

    def trace(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(sent.append)
        traced.append(dbapi_connection)

    sqla_event.listen(runtime.db.engine, "checkout", trace)
    if store._conn is not None:
        trace(store._conn.connection.driver_connection)
    try:
        yield sent
    finally:
        sqla_event.remove(runtime.db.engine, "checkout", trace)
        for dbapi_connection in traced:
            dbapi_connection.set_trace_callback(None)


def test_a_shared_write_costs_the_same_statements_whatever_its_size(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """SQLite: one INSERT that checks the rows' keys itself, whatever the number of rows and
    whether they hold a payload (identify's rows do not, a webhook's do), not a statement per row."""
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's shared write is one fixed statement (app/pg_event_writes.py)")
    key_id = _key_id(runtime)
    counts = []
    for size, start in ((2, 0), (8, 100)):
        first = (_row(runtime, account_id, start), key_id)
        rest: list[tuple] = []
        for n in range(start + 1, start + 1 + size):
            rest.append((_row(runtime, account_id, n), key_id))
            rest.append((_row(runtime, account_id, n + 50, payload={"n": n}), None))
        with sqlite_statements(runtime, store) as sent:
            results = _run_behind_a_held_write(store, runtime, first, rest)
        assert results == [True] * (1 + 2 * size)
        # Leaving out the probes that wait for the lock (models/session.py `write_when_free`).
        ours = [sql for sql in sent if ("events" in sql or "api_keys" in sql) and " WHERE 0" not in sql]
        assert all(sql.startswith("INSERT INTO events") for sql in ours), ours
        # The first write's INSERT is tried again once the lock is free: one statement, sent again.
        counts.append(sum(1 for i, sql in enumerate(ours) if i == 0 or sql != ours[i - 1]))
    # The first write alone (its row), then the shared one (every row).
    assert counts == [1 + 1, 1 + 1]


def test_a_shared_write_on_sqlite_is_one_insert_that_commits_itself(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """No BEGIN and COMMIT around the INSERT, between which SQLite's one write lock would be held
    while the thread wins the GIL back (models/session.py `write_when_free`)."""
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's shared write is one statement in autocommit already")
    key_id = _key_id(runtime)
    assert store.store(_row(runtime, account_id, 0), key_id) is True  # opens the held connection
    assert store._conn is not None
    driver = store._conn.connection.driver_connection
    sent: list[str] = []
    driver.set_trace_callback(sent.append)
    try:
        assert store.store(_row(runtime, account_id, 1), key_id) is True
    finally:
        driver.set_trace_callback(None)
    statements = [sql for sql in sent if not sql.startswith("PRAGMA")]
    assert len(statements) == 1, statements
    assert statements[0].startswith("INSERT INTO events") and "FROM api_keys" in statements[0]
    assert not driver.in_transaction


def test_a_failed_shared_write_stores_nothing_and_each_caller_then_stores_alone(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    key_id = _key_id(runtime)
    good = _row(runtime, account_id, 1)
    bad = _row(runtime, account_id, 2, channel=None)  # NOT NULL: the whole statement fails
    results = _run_behind_a_held_write(
        store, runtime, (_row(runtime, account_id, 0), key_id), [(good, key_id), (bad, key_id)]
    )
    assert results == [True, None, None]
    assert good["id"] not in _stored_ids(runtime)
    with runtime.db.autocommit() as conn:
        assert insert_one(conn, good, key_id) == good["id"]
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error, whatever its class
            insert_one(conn, bad, key_id)
    assert good["id"] in _stored_ids(runtime)


def test_identify_answers_each_request_after_the_commit_that_holds_it(
    client: FlaskClient, runtime: Runtime, account_id: str
) -> None:
    """Through the API: requests that queue behind a held write are all accepted, all stored, in
    fewer commits than requests; the one whose row a shared write failed to store is answered from
    its own INSERT."""
    key = make_key(runtime, ["ingest"])
    store: EventStore = client.application.extensions["tributary"].events
    assert store is EventStore.for_runtime(runtime)  # one per runtime, whatever the app
    batches, rows = store.batches, store.rows
    answers: list[Any] = [None] * 6

    def post(i: int) -> None:
        answers[i] = client.post("/v1/identify", json={"email": f"q{i}@example.com"}, headers=auth(key))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    with events_locked(runtime):
        threads[0].start()
        wait_for(lambda: store._writing, "the first write to start")
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(store._open.items) == 5, "the others to queue")
    for thread in threads:
        thread.join(10)
    assert [a.status_code for a in answers] == [202] * 6
    ids = {a.get_json()["event_id"] for a in answers}
    assert ids == _stored_ids(runtime)
    assert (store.batches - batches, store.rows - rows) == (2, 6)
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 6


def test_dispose_gives_back_the_writes_connection_and_the_next_write_opens_another(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    key_id = _key_id(runtime)
    assert store.store(_row(runtime, account_id, 0), key_id) is True
    held = store._conn  # kept between writes
    assert held is not None and not held.closed
    assert store.store(_row(runtime, account_id, 2), key_id) is True
    assert store._conn is held
    runtime.db.dispose()
    assert held.closed
    assert store.store(_row(runtime, account_id, 1), key_id) is True
    assert store._conn is not held
    assert len(_stored_ids(runtime)) == 3


def test_rows_are_stored_as_given_whichever_encoder_carries_them(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """The shared statement's rows go as JSON (on PostgreSQL their bodies beside it, end to end in
    one binary value): orjson, or the standard encoder for what orjson refuses (an integer beyond 64 bits in
    a provider's payload). Either way every column of every row of a statement lands as given: the
    exact body bytes, the instants, the payload and headers."""
    odd_body = b'{"name": "Zo\xc3\xab \\"q\\" \\\\u00e9"}\x00\xff'
    plain = _row(runtime, account_id, 0, body=odd_body, payload={"n": 2.5, "t": [1, "x"]}, headers={"A": "b"})
    big = _row(runtime, account_id, 1, payload={"amount": 2**70, "credit": -(2**65)})
    # Each with a companion in the same statement, bodies apart: none may land on another's row.
    statements = [[plain, _row(runtime, account_id, 2, body=b"")], [_row(runtime, account_id, 3), big]]
    for rows in statements:
        assert store.store_rows(rows, None) == {row["id"] for row in rows}
    written = [row for rows in statements for row in rows]
    with runtime.db.session() as session:
        ids = [row["id"] for row in written]
        stored = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(ids)))}
    for row in written:
        event = stored[row["id"]]
        assert (event.body, event.payload, event.headers) == (row["body"], row.get("payload"), row["headers"])
        assert (event.occurred_at, event.received_at) == (row["occurred_at"], row["received_at"])


def test_a_row_without_a_payload_stores_sql_null(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """identify's rows carry no payload: the column holds SQL NULL (not JSON `null`), which the
    worker and the events API read as "none"."""
    row = _row(runtime, account_id, 0)
    assert "payload" not in row
    assert store.store(row, None) is True
    with runtime.db.session() as session:
        assert session.scalar(text("SELECT payload IS NULL FROM events WHERE id = :id"), {"id": row["id"]})
        # Nor headers, which PostgreSQL's statement is sent without when empty: an empty object.
        assert session.get_one(Event, row["id"]).headers == {}


def test_a_shared_write_tries_without_the_conflict_clause_and_again_with_it_on_a_duplicate(
    runtime: Runtime, account_id: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a write whose rows are all new is one INSERT without ON CONFLICT (whose per-row
    probe costs 7 % of the statement); one holding a message id stored before fails as a whole,
    writing nothing, and is made again with the conflict clause, in the same shared write."""
    if not runtime.db.is_postgres:
        pytest.skip("SQLite's write is its own statement (app/sqlite_event_writes.py)")
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def recording(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if str(query).startswith("INSERT INTO events"):
            sent.append("conflict clause" if "ON CONFLICT" in str(query) else "plain")
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", recording)
    key_id = _key_id(runtime)
    fresh = [_row(runtime, account_id, 0, dedup_key="api:m-1"), _row(runtime, account_id, 1)]
    assert store.store_rows(fresh, key_id) == {row["id"] for row in fresh}
    assert sent == ["plain"]
    again = _row(runtime, account_id, 2, dedup_key="api:m-1")
    new = _row(runtime, account_id, 3, dedup_key="api:m-2")
    assert store.store_rows([new, again], key_id) == {new["id"]}
    assert sent == ["plain", "plain", "conflict clause"]
    assert (store.batches, store.rows) == (2, 4)  # both shared, neither stored alone
    assert _stored_ids(runtime) == {fresh[0]["id"], fresh[1]["id"], new["id"]}
