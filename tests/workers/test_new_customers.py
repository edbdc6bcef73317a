"""New customers (workers/batch/new_customers.py): written once, with their final values, on both
backends; on PostgreSQL a batch naming an address that another batch is creating waits for it and
merges into its customer, and an address freed between a batch's read and its lock still gets its
customer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select, text

from tests.helpers import before_each_statement, customer, identify, statements_sent
from tributary.models import Customer, Event
from tributary.runtime.process import Runtime
from tributary.workers.batch.apply import apply_events, claim_events
from tributary.workers.batch.new_customers import address_key
from tributary.workers.jobs import drain_batch


@pytest.fixture
def postgres(runtime: Runtime) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("SQLite has one writer at a time (the batch's write lock): nothing to agree on")


def _signed(key: int) -> int:
    """A 64-bit advisory lock key as PostgreSQL's `bigint` (pg_locks shows its two halves)."""
    return key - (1 << 64) if key >= 1 << 63 else key


def _customers(runtime: Runtime, email: str) -> list[Customer]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Customer).where(Customer.email == email)))


def _known_and_five_new(client: FlaskClient, admin_key: str, runtime: Runtime) -> None:
    """A known customer (applied), then five new addresses named twice each and a rename of the
    known one, pending: 11 events."""
    identify(client, admin_key, email="known@example.com", name="Old", status="trial")
    drain_batch(runtime, 100)
    for i in range(5):
        identify(client, admin_key, email=f"new{i}@example.com", name=f"New {i}", status="trial")
        identify(client, admin_key, email=f"new{i}@example.com", params={"seats": i})
    identify(client, admin_key, email="known@example.com", name="Renamed", status="paid")


def _assert_final_values(client: FlaskClient, admin_key: str, runtime: Runtime) -> None:
    """What `_known_and_five_new`'s events make, once applied; each customer created once."""
    for i in range(5):
        record = customer(client, admin_key, f"new{i}@example.com")
        assert record["name"] == f"New {i}"
        assert record["projects"]["default"]["status"] == "trial"
        assert record["projects"]["default"]["params"] == {"seats": i}
    assert customer(client, admin_key, "known@example.com")["name"] == "Renamed"
    with runtime.db.session() as session:
        reports = list(session.scalars(select(Event.changes).where(Event.status == "processed")))
    created = sorted(r[0]["change"]["email"] for r in reports if r[0].get("created"))
    assert created == ["known@example.com"] + [f"new{i}@example.com" for i in range(5)]


@pytest.mark.usefixtures("postgres")
def test_a_batch_writes_each_new_customer_once_with_its_final_values(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    _known_and_five_new(client, admin_key, runtime)

    held: list[int] = []

    def advisory_locks_held(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The batch's own advisory locks, read in its transaction right after it took them.
        if "pg_advisory_xact_lock" in statement:
            held.extend(
                _signed((classid << 32) | objid)
                for classid, objid in cursor.connection.execute(
                    "SELECT classid::bigint, objid::bigint FROM pg_locks"
                    " WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
                )
            )

    event.listen(runtime.db.engine, "after_cursor_execute", advisory_locks_held)
    try:
        with statements_sent(runtime) as sent:
            assert drain_batch(runtime, 100) == 11
    finally:
        event.remove(runtime.db.engine, "after_cursor_execute", advisory_locks_held)
    writes = [s for s in sent if "INSERT INTO customers" in s.sql or "UPDATE customers" in s.sql]
    locks = [s for s in sent if "pg_advisory_xact_lock" in s.sql]

    # One row each, inserted once with what the batch merged; the known customer alone is updated;
    # both in one statement (write_back_pg.write_customers).
    (write,) = writes
    assert "INSERT INTO customers" in write.sql and "UPDATE customers" in write.sql
    assert len(locks) == 1
    assert all(f'"New {i}"' in write.parameters["created"] for i in range(5))
    assert "known@" not in write.parameters["created"]
    assert "known@" in write.parameters["changed"] and "new0@" not in write.parameters["changed"]
    # The new addresses are locked, and only they: the known one is someone's already.
    assert sorted(held) == sorted(
        address_key(c.account_id, f"new{i}@example.com")
        for i, c in enumerate(_customers(runtime, f"new{i}@example.com")[0] for i in range(5))
    )
    _assert_final_values(client, admin_key, runtime)


def test_sqlite_inserts_each_new_customer_once_with_its_final_values(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's form is the test above")
    _known_and_five_new(client, admin_key, runtime)

    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 100) == 11

    # The new customers in one INSERT with what the batch merged, never updated; the known one in
    # one UPDATE (write_back_sqlite.write_customers).
    inserts = [s for s in sent if s.sql.startswith("INSERT INTO customers ")]
    updates = [s for s in sent if s.sql.startswith("UPDATE customers ")]
    (insert,) = inserts
    assert insert.many and len(insert.parameters) == 5
    assert sorted(row[insert.sql.split("(")[1].split(", ").index("name")] for row in insert.parameters) == [
        f"New {i}" for i in range(5)
    ]
    (update,) = updates  # one row: sent as a single execute
    assert "Renamed" in (update.parameters if not update.many else update.parameters[0])
    _assert_final_values(client, admin_key, runtime)


@pytest.fixture
def held_batch(runtime: Runtime) -> Iterator[Any]:
    """Start a batch of the given events in a thread and hold its transaction open after it applied
    them; yields (start, release)."""
    applied, release = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []

    def start(ids: list[str]) -> None:
        def batch() -> None:
            with runtime.db.write_session() as session, session.begin():
                apply_events(session, claim_events(session, ids))
                applied.set()
                release.wait(30)

        threads.append(threading.Thread(target=batch))
        threads[-1].start()
        assert applied.wait(30)

    yield start, release
    release.set()
    for thread in threads:
        thread.join(30)


@pytest.mark.usefixtures("postgres")
def test_a_batch_naming_an_address_another_batch_is_creating_waits_and_joins_it(
    client: FlaskClient, admin_key: str, runtime: Runtime, held_batch: Any
) -> None:
    start, release = held_batch
    first = identify(client, admin_key, email="ada@example.com", name="Ada", timestamp="2026-03-01T00:00:00Z")
    second = identify(
        client, admin_key, email="ada@example.com", params={"plan": "pro"}, timestamp="2026-03-02T00:00:00Z"
    )
    start([first["event_id"]])  # Ada's customer exists in that batch alone, uncommitted

    def later() -> None:
        with runtime.db.write_session() as session, session.begin():
            apply_events(session, claim_events(session, [second["event_id"]]))

    other = threading.Thread(target=later)
    other.start()
    other.join(0.5)
    assert other.is_alive()  # waiting on the address's lock, not creating a second Ada
    release.set()
    other.join(30)
    assert not other.is_alive()

    assert len(_customers(runtime, "ada@example.com")) == 1
    record = customer(client, admin_key, "ada@example.com")
    assert record["name"] == "Ada" and record["projects"]["default"]["params"] == {"plan": "pro"}
    with runtime.db.session() as session:
        reports = {e.id: e.changes for e in session.scalars(select(Event))}
    assert reports[first["event_id"]][0].get("created") is True
    assert "created" not in reports[second["event_id"]][0]


@pytest.mark.usefixtures("postgres")
def test_an_address_freed_between_the_read_and_the_lock_gets_a_new_customer(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    identify(client, admin_key, email="gone@example.com", name="Before", status="paid")
    drain_batch(runtime, 10)
    (old,) = _customers(runtime, "gone@example.com")
    identify(client, admin_key, email="gone@example.com", params={"back": True})
    erased: list[str] = []

    def erase_before_the_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The batch read the address as held; the customer is erased (and committed) before the
        # batch locks it.
        if erased or "FOR UPDATE" not in statement or "FROM customers" not in statement:
            return
        erased.append(old.id)
        with runtime.db.engine.connect() as other:
            other.execute(text("DELETE FROM customers WHERE id = :id"), {"id": old.id})
            other.commit()

    with before_each_statement(runtime.db.engine, erase_before_the_lock):
        assert drain_batch(runtime, 10) == 1

    assert erased == [old.id]
    (new,) = _customers(runtime, "gone@example.com")
    assert new.id != old.id and new.name is None
    record = customer(client, admin_key, "gone@example.com")
    assert record["projects"]["default"]["params"] == {"back": True}
    with runtime.db.session() as session:
        (report,) = session.scalars(
            select(Event.changes).where(Event.status == "processed").order_by(Event.id.desc()).limit(1)
        )
    assert report[0]["created"] is True
