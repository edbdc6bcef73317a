"""The batch applier on a real database: what gets recorded, and failure isolation."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select, update

from tests.helpers import customer, identify
from tributary.models import Event, TimelineEntry
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch, process_event


def _event(runtime: Runtime, event_id: str) -> Event:
    with runtime.db.session() as session:
        event = session.get(Event, event_id)
        assert event is not None
        return event


def _changes(runtime: Runtime) -> list[TimelineEntry]:
    with runtime.db.session() as session:
        return list(session.scalars(select(TimelineEntry).order_by(TimelineEntry.id)))


def test_stale_writes_are_ignored_and_recorded(client: FlaskClient, admin_key: str, runtime: Runtime) -> None:
    new = identify(
        client, admin_key, email="a@example.com", status="churned", timestamp="2026-03-01T00:00:00Z"
    )
    drain_batch(runtime)
    old = identify(client, admin_key, email="a@example.com", status="paid", timestamp="2026-02-01T00:00:00Z")
    drain_batch(runtime)
    assert customer(client, admin_key, "a@example.com")["projects"]["default"]["status"] == "churned"
    event = _event(runtime, old["event_id"])
    assert event.status == "processed"
    assert event.changes is not None and event.changes[0]["stale"] == {"status": "paid"}
    rows = _changes(runtime)
    assert [r.event_id for r in rows] == [new["event_id"], old["event_id"]]
    assert rows[0].data["created"] is True and rows[0].data["changed"]["status"] == [None, "churned"]
    assert rows[1].data == {"stale": {"status": "paid"}}


def test_a_failing_event_fails_alone_and_gets_a_retry_job(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    ids = [identify(client, admin_key, email=f"u{i}@example.com", name=f"U{i}")["event_id"] for i in range(5)]
    # Corrupt one stored body: its changes can no longer be built.
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == ids[2]).values(body=b"{not json"))
    assert drain_batch(runtime) == 5
    statuses = {i: _event(runtime, i).status for i in ids}
    assert statuses == {**dict.fromkeys(ids, "processed"), ids[2]: "failed"}
    failed = _event(runtime, ids[2])
    assert failed.attempts == 1 and failed.last_error and "JSONDecodeError" in failed.last_error
    assert f"event-{ids[2]}" in ScheduledJobRegistry(queue=runtime.queue).get_job_ids()

    # The operator repairs the cause; the retry job (run here directly) applies it once.
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == ids[2]).values(body=b'{"email": "u2@example.com"}'))
    assert process_event(ids[2]) == "processed"
    assert _event(runtime, ids[2]).attempts == 2
    assert process_event(ids[2]) == "processed"  # idempotent: already applied, nothing happens
    assert len([r for r in _changes(runtime) if r.event_id == ids[2]]) == 1


def test_retry_job_raises_so_rq_records_the_failure(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    event_id = identify(client, admin_key, email="a@example.com")["event_id"]
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == event_id).values(body=b"[]"))
    try:
        process_event(event_id)
    except Exception as exc:
        assert event_id in str(exc)
    else:
        raise AssertionError("process_event should raise for a failing event")
    assert _event(runtime, event_id).status == "failed"


def test_one_batch_many_customers_and_projects(client: FlaskClient, admin_key: str, runtime: Runtime) -> None:
    client.post("/v1/projects", json={"slug": "second"}, headers={"Authorization": f"Bearer {admin_key}"})
    for i in range(20):
        identify(client, admin_key, email=f"p{i % 4}@example.com", params={"n": i}, project="second")
        identify(client, admin_key, email=f"p{i % 4}@example.com", status="paid")
    while drain_batch(runtime):
        pass
    for i in range(4):
        record: dict[str, Any] = customer(client, admin_key, f"p{i}@example.com")
        assert record["projects"]["second"]["params"] == {"n": 16 + i}
        assert record["projects"]["default"]["status"] == "paid"
    assert len(_changes(runtime)) == 40


def test_a_new_customer_is_never_updated_before_it_was_created(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    identify(client, admin_key, email="new@example.com", name="New")
    drain_batch(runtime)
    record = customer(client, admin_key, "new@example.com")
    assert record["created_at"] == record["updated_at"]
    identify(client, admin_key, email="new@example.com", name="Newer")
    drain_batch(runtime)
    later = customer(client, admin_key, "new@example.com")
    assert later["created_at"] == record["created_at"] < later["updated_at"]


def test_an_event_from_before_1970_applies_beside_customers_who_changed_address(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    # Event times are kept as milliseconds since 1970; one at or before it must not take every customer
    # for an earlier holder of its address (a customer who never held an address is not one).
    identify(client, admin_key, email="old@example.com", name="Old", timestamp="2026-01-01T00:00:00Z")
    drain_batch(runtime)
    first = identify(
        client, admin_key, email="pioneer@example.com", name="P", timestamp="1969-07-20T20:17:00Z"
    )
    drain_batch(runtime)
    assert _event(runtime, first["event_id"]).status == "processed"
    assert customer(client, admin_key, "pioneer@example.com")["name"] == "P"
    assert customer(client, admin_key, "old@example.com")["name"] == "Old"
