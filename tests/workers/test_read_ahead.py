"""A batch on SQLite read ahead of the write lock (models/read_ahead.py, workers/jobs.py): it claims,
loads and merges without the lock and takes it for its write-back only; a write to anything it read
in between sends it back to be applied under the lock, and nothing is lost."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.helpers import before_each_statement, customer, identify
from tributary.models.read_ahead import WATCHED, ReadAhead, trigger_name
from tributary.runtime.process import Runtime
from tributary.workers import jobs
from tributary.workers.batch import write_back_sqlite
from tributary.workers.batch.held_writes import HeldWrites, held_writes
from tributary.workers.jobs import drain_batch


@pytest.fixture
def sqlite_runtime(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's batches lock rows, not the database: they never read ahead")
    # Not paused by an earlier test's batch that had to be applied again.
    monkeypatch.setattr(jobs.READ_AHEAD, "paused_until", 0.0)
    return runtime


@contextlib.contextmanager
def other_process(runtime: Runtime) -> Iterator[sqlite3.Connection]:
    """A connection of its own to the database file, as another process holds one; it never waits
    for a lock."""
    conn = sqlite3.connect(str(runtime.db.engine.url.database), isolation_level=None, timeout=0)
    try:
        yield conn
    finally:
        conn.close()


def locked_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches applied under the lock from their claim on (the way back)."""
    calls: list[int] = []
    locked = jobs._locked_batch

    def counted(runtime: Runtime, limit: int) -> Any:
        calls.append(limit)
        return locked(runtime, limit)

    monkeypatch.setattr(jobs, "_locked_batch", counted)
    return calls


def before_the_lock(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run `action` when the batch has read and merged, just before it takes the write lock."""
    take_lock = ReadAhead.take_lock

    def acting_first(self: ReadAhead, claimed: Sequence[str]) -> None:
        action()
        take_lock(self, claimed)

    monkeypatch.setattr(ReadAhead, "take_lock", acting_first)


def test_the_batch_reads_without_the_write_lock_and_writes_back_under_it(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com", name="Ada", status="trial")
    seen: list[str] = []
    take_lock = ReadAhead.take_lock

    def watched(self: ReadAhead, claimed: Sequence[str]) -> None:
        with other_process(sqlite_runtime) as conn:
            conn.execute("BEGIN IMMEDIATE")  # free while the batch has only read
            conn.execute("ROLLBACK")
            seen.append("free")
            take_lock(self, claimed)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                conn.execute("BEGIN IMMEDIATE")
            seen.append("held")

    monkeypatch.setattr(ReadAhead, "take_lock", watched)
    back = locked_batches(monkeypatch)
    assert drain_batch(sqlite_runtime) == 1
    assert seen == ["free", "held"] and back == []
    found = customer(client, admin_key, "a@example.com")
    assert found["name"] == "Ada" and found["projects"]["default"]["status"] == "trial"


def test_a_write_between_the_reads_and_the_lock_sends_the_batch_back_and_loses_nothing(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com", params={"plan": "free"})
    assert drain_batch(sqlite_runtime) == 1
    identify(client, admin_key, email="a@example.com", params={"seats": 5})

    def operator_fix() -> None:
        # Another process writes the row the batch has read and merged into: written back from
        # what the batch read, its change would be gone.
        with other_process(sqlite_runtime) as conn:
            conn.execute("UPDATE customer_projects SET params = json_set(params, '$.region', 'eu')")

    before_the_lock(monkeypatch, operator_fix)
    back = locked_batches(monkeypatch)
    assert drain_batch(sqlite_runtime) == 1
    assert len(back) == 1
    params = customer(client, admin_key, "a@example.com")["projects"]["default"]["params"]
    assert params == {"plan": "free", "seats": 5, "region": "eu"}


@pytest.mark.parametrize("where", ["before the lock", "after its write-back was sent"])
def test_a_batch_that_fails_on_its_first_try_leaves_nothing_of_it(
    client: FlaskClient,
    admin_key: str,
    sqlite_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    identify(client, admin_key, email="a@example.com", name="Ada")
    if where == "before the lock":

        def fail() -> None:
            raise RuntimeError("the disk is on fire")

        before_the_lock(monkeypatch, fail)
    else:
        release = HeldWrites.release

        def failing(self: HeldWrites) -> None:
            release(self)  # the lock taken, every held statement sent
            raise RuntimeError("the disk filled up at the commit")

        monkeypatch.setattr(HeldWrites, "release", failing)
    back = locked_batches(monkeypatch)
    assert drain_batch(sqlite_runtime) == 1
    assert len(back) == 1
    assert customer(client, admin_key, "a@example.com")["name"] == "Ada"
    # Nothing of the first try stayed: one customer, one attempt and one change for the event.
    with sqlite_runtime.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM event_attempts")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM customer_changes")).scalar() == 1


def test_an_event_applied_elsewhere_meanwhile_sends_the_batch_back(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com", name="Ada")
    identify(client, admin_key, email="b@example.com", name="Bob")

    def another_worker() -> None:
        # Another worker applied b's event (here: marked it ignored) after this batch claimed it.
        with other_process(sqlite_runtime) as conn:
            conn.execute("UPDATE events SET status = 'ignored' WHERE email = 'b@example.com'")

    before_the_lock(monkeypatch, another_worker)
    back = locked_batches(monkeypatch)
    assert drain_batch(sqlite_runtime) == 1  # the batch applied under the lock claims a's alone
    assert len(back) == 1
    assert customer(client, admin_key, "a@example.com")["name"] == "Ada"
    assert (
        client.get(
            "/v1/customers/b@example.com", headers={"Authorization": f"Bearer {admin_key}"}
        ).status_code
        == 404
    )
    with sqlite_runtime.db.engine.connect() as conn:
        statuses = {email: status for email, status in conn.execute(text("SELECT email, status FROM events"))}
    assert statuses == {"a@example.com": "processed", "b@example.com": "ignored"}


def test_writes_to_what_a_batch_reads_are_counted_and_its_own_outcomes_are_not(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime
) -> None:
    def generation() -> int:
        with sqlite_runtime.db.engine.connect() as conn:
            return int(conn.execute(text("SELECT n FROM write_generation")).scalar_one())

    with sqlite_runtime.db.engine.connect() as conn:
        triggers = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
    assert {trigger_name(table, write) for table, write in WATCHED} <= triggers
    before = generation()
    identify(client, admin_key, email="a@example.com", name="Ada")
    assert generation() == before  # the web's INSERT of an event
    assert drain_batch(sqlite_runtime) == 1
    applied = generation()
    assert applied > before  # the new customer and its project row
    with other_process(sqlite_runtime) as conn:

        def counted(sql: str) -> int:
            conn.execute(sql)
            return int(conn.execute("SELECT n FROM write_generation").fetchone()[0]) - applied

        assert counted("UPDATE events SET status = 'failed', attempts = 2") == 0  # an outcome
        assert counted("UPDATE events SET body = x'7b7d'") == 1  # what the event holds
        assert counted("UPDATE customers SET name = 'Grace'") == 2
        assert counted("DELETE FROM identity_tombstones") == 2  # no row: no write


def test_a_batch_that_wrote_before_its_write_back_is_applied_again_under_the_lock(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com", name="Ada")
    assert drain_batch(sqlite_runtime) == 1
    identify(client, admin_key, email="a@example.com", name="Ada Lovelace")
    take_lock = ReadAhead.take_lock

    def writing_early(self: ReadAhead, claimed: Sequence[str]) -> None:
        # As a merge's new customer row would be: written inside the read transaction.
        self._driver.execute("UPDATE customers SET name = 'Early'")
        take_lock(self, claimed)

    monkeypatch.setattr(ReadAhead, "take_lock", writing_early)
    back = locked_batches(monkeypatch)
    assert drain_batch(sqlite_runtime) == 1
    assert len(back) == 1
    assert customer(client, admin_key, "a@example.com")["name"] == "Ada Lovelace"


def test_after_a_batch_applied_again_the_next_ones_take_the_lock_first_for_a_while(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def an_import_applying() -> None:
        with other_process(sqlite_runtime) as conn:
            conn.execute("UPDATE customers SET name = name || '.'")

    identify(client, admin_key, email="a@example.com", name="Ada")
    assert drain_batch(sqlite_runtime) == 1
    before_the_lock(monkeypatch, an_import_applying)
    back = locked_batches(monkeypatch)
    identify(client, admin_key, email="b@example.com", name="Bob")
    assert drain_batch(sqlite_runtime) == 1  # read ahead, stale, applied again
    identify(client, admin_key, email="c@example.com", name="Cy")
    assert drain_batch(sqlite_runtime) == 1  # straight under the lock: not read ahead
    assert len(back) == 2
    assert customer(client, admin_key, "a@example.com")["name"] == "Ada."  # written once, before b's
    monkeypatch.setattr(jobs.READ_AHEAD, "paused_until", time.monotonic() - 1)  # the pause is over
    identify(client, admin_key, email="d@example.com", name="Di")
    assert drain_batch(sqlite_runtime) == 1
    assert len(back) == 3  # read ahead again, stale again (the import still writes), applied again


def test_the_write_back_is_bound_before_the_lock_and_sent_under_it(
    client: FlaskClient, admin_key: str, sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com", name="Ada")
    identify(client, admin_key, email="b@example.com", name="Bob")
    steps: list[str] = []
    parameters = write_back_sqlite._DriverForm.parameters
    take_lock = ReadAhead.take_lock

    def binding(self: Any, row: dict[str, Any]) -> tuple[Any, ...]:
        steps.append("bind")
        return parameters(self, row)

    def locking(self: ReadAhead, claimed: Sequence[str]) -> None:
        take_lock(self, claimed)
        steps.append("lock")

    def writing(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            steps.append("write")

    monkeypatch.setattr(write_back_sqlite._DriverForm, "parameters", binding)
    monkeypatch.setattr(ReadAhead, "take_lock", locking)
    with before_each_statement(sqlite_runtime.db.engine, writing):
        assert drain_batch(sqlite_runtime) == 2
    # Every row of the write-back (customers, project rows, timeline, outcomes, attempts) was
    # bound with the lock still free, and nothing was written before it was held.
    lock = steps.index("lock")
    assert steps.count("bind") >= 10 and "bind" not in steps[lock:]
    assert "write" not in steps[:lock] and steps.count("write") >= 5
    assert customer(client, admin_key, "b@example.com")["name"] == "Bob"


def test_any_other_statement_sends_what_is_held_first(sqlite_runtime: Runtime) -> None:
    locks: list[str] = []
    with sqlite_runtime.db.read_ahead_session() as session, session.begin():
        session.execute(text("CREATE TEMP TABLE held_rows (n INTEGER)"))
        held = HeldWrites(session, lambda: locks.append("taken"))
        assert held_writes(session) is held
        assert not held.add("INSERT INTO held_rows VALUES (?)", [(0,)])  # not holding yet
        held.hold()
        assert held.add("INSERT INTO held_rows VALUES (?)", [(1,), (2,)])
        assert held.add("INSERT INTO held_rows VALUES (?)", [(3,)])
        assert locks == []
        # A read of what the batch wrote (or an ORM flush, a merge's DELETE) sees it written.
        assert session.execute(text("SELECT count(*) FROM held_rows")).scalar_one() == 3
        assert locks == ["taken"]
        assert not held.add("INSERT INTO held_rows VALUES (?)", [(4,)])  # sent straight from now on
        held.release()  # once only
        assert locks == ["taken"]
