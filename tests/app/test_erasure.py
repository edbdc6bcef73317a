"""DELETE /v1/customers/<id>: the person is removed, their stored events redacted, nothing else touched."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    create_project,
    import_connector,
    import_customer,
    people,
)
from tests.helpers import auth, customer, identify, make_key, sqlite_walks, statements_sent
from tributary.models import (
    Customer,
    CustomerMerge,
    CustomerProject,
    Event,
    Identity,
    IdentityTombstone,
    TimelineEntry,
)
from tributary.runtime.process import Runtime
from tributary.workers.batch.apply import apply_events, claim_pending

REDACTED = b'{"redacted": true}'


def _rows(session: Session, model: Any, **where: Any) -> list[dict[str, Any]]:
    stmt = select(model).filter_by(**where) if where else select(model)
    columns = [c.key for c in model.__table__.columns]
    return sorted(
        ({c: getattr(row, c) for c in columns} for row in session.scalars(stmt)), key=lambda r: str(r["id"])
    )


TABLES = (Customer, CustomerProject, Identity, IdentityTombstone, CustomerMerge, TimelineEntry, Event)


def _snapshot(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    with runtime.db.session() as session:
        return {model.__tablename__: _rows(session, model) for model in TABLES}


def _owner(table: str, row: dict[str, Any]) -> Any:
    return {"customers": row["id"], "customer_merges": row.get("survivor_id")}.get(
        table, row.get("customer_id")
    )


def _day(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=UTC)


@pytest.fixture
def world(client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]) -> dict[str, Any]:
    """ada, whose life left rows in every table, and bob, a bystander with the same kinds of rows.

    ada signed up as ada.old@ (provider user cus_ada); her work address ada@ was a customer of its
    own until the provider reported cus_ada's address is now ada@, which merged the two (ada.old@
    becomes a past email, customer_merges records it). She is in two projects and had a second
    provider user, deleted since (an identity tombstone).
    """
    create_project(client, admin_key, "app")
    people(
        client,
        admin_key,
        drain,
        [
            {
                "email": "ada.old@example.com",
                "name": "Ada",
                "status": "paid",
                "timestamp": at(1),
                "message_id": "m-ada",
            },
            {"email": "ada@example.com", "project": "app", "params": {"plan": "pro"}, "timestamp": at(2)},
            {"email": "bob@example.com", "name": "Bob", "status": "trial", "timestamp": at(3)},
            {"email": "bob@example.com", "project": "app", "timestamp": at(4)},
        ],
    )
    for email, user in [
        ("ada.old", "cus_ada"),
        ("ada.old", "cus_ada_gone"),
        ("bob", "cus_bob"),
        ("bob", "cus_bob_gone"),
    ]:
        import_customer(
            runtime,
            f"{email}@example.com",
            identity=["stripe-test", user],
            headers={"x-sig": user},
            occurred_at=_day(1),
        )
    drain()
    import_customer(
        runtime,
        "ada@example.com",
        identity=["stripe-test", "cus_ada"],
        email_change=True,
        occurred_at=_day(5),
    )
    for user in ("cus_ada_gone", "cus_bob_gone"):
        import_customer(runtime, None, identity=["stripe-test", user], forget=True, occurred_at=_day(6))
    drain()

    ada = customer(client, admin_key, "ada@example.com")
    assert ada["past_emails"] == ["ada.old@example.com"] and set(ada["projects"]) == {"default", "app"}
    assert ada["identities"] == [{"source": "stripe-test", "external_id": "cus_ada"}]
    with runtime.db.session() as session:
        assert len(_rows(session, CustomerMerge, survivor_id=ada["id"])) == 1
        assert len(_rows(session, IdentityTombstone, customer_id=ada["id"])) == 1
        applied = set(
            session.scalars(select(TimelineEntry.event_id).where(TimelineEntry.customer_id == ada["id"]))
        )
    # Not applied yet when the erasure comes: one under the old address, one under the current one.
    pending = [
        identify(client, admin_key, email="ada.old@example.com", name="Old Ada")["event_id"],
        identify(client, admin_key, email="ada@example.com", name="Ada again")["event_id"],
    ]
    return {
        "ada": ada,
        "bob": customer(client, admin_key, "bob@example.com"),
        "applied": applied,
        "pending": pending,
    }


def test_erasure_removes_the_person_and_redacts_their_events_only(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None], world: dict[str, Any]
) -> None:
    ada_id = world["ada"]["id"]
    ada_events = world["applied"] | set(world["pending"])
    # Two identifies, two links, the email change and the deletion, one of them via the merge.
    assert len(world["applied"]) == 6
    before = _snapshot(runtime)

    with statements_sent(runtime) as sent:
        response = client.delete(f"/v1/customers/{ada_id}", headers=auth(admin_key))
    assert response.status_code == 204 and response.data == b""
    # The person's events are found through their own links and addresses: an OR beside the
    # account's condition made SQLite read every event of the account.
    assert sqlite_walks(runtime, sent, "events") == []

    after = _snapshot(runtime)
    # The person and everything keyed by them is gone; everyone else's rows are byte-for-byte the same.
    for table in ("customers", "customer_projects", "identities", "identity_tombstones", "customer_changes"):
        kept = [r for r in before[table] if _owner(table, r) != ada_id]
        assert after[table] == kept, table
        assert len(kept) < len(before[table]) and kept, table
    assert after["customer_merges"] == []
    # Events are kept (for counts and deduplication), redacted when they are about ada.
    assert [e["id"] for e in after["events"]] == [e["id"] for e in before["events"]]
    old = {e["id"]: e for e in before["events"]}
    for event in after["events"]:
        was = old[event["id"]]
        if event["id"] not in ada_events:
            assert event == was
            continue
        assert event["body"] == REDACTED
        assert event["headers"] == {} and event["email"] is None
        assert event["payload"] is None and event["changes"] is None
        for kept_field in ("type", "channel", "occurred_at", "received_at", "dedup_key", "provider_event_id"):
            assert event[kept_field] == was[kept_field]
        expected_status = "ignored" if was["status"] == "pending" else was["status"]
        assert event["status"] == expected_status
    redacted = [e for e in after["events"] if e["id"] in ada_events]
    assert len(redacted) == 8
    assert all(b"ada" not in e["body"] for e in redacted)

    assert client.get(f"/v1/customers/{ada_id}", headers=auth(admin_key)).status_code == 404
    assert client.get("/v1/customers/ada@example.com/timeline", headers=auth(admin_key)).status_code == 404
    # Nothing left pending resurrects the person.
    drain()
    assert client.get("/v1/customers/ada@example.com", headers=auth(admin_key)).status_code == 404
    assert client.get("/v1/customers/ada.old@example.com", headers=auth(admin_key)).status_code == 404
    assert customer(client, admin_key, "bob@example.com") == world["bob"]


def test_redelivery_after_erasure_stays_a_duplicate(
    client: FlaskClient, admin_key: str, drain: Callable[[], None], world: dict[str, Any]
) -> None:
    assert client.delete(f"/v1/customers/{world['ada']['id']}", headers=auth(admin_key)).status_code == 204
    again = identify(client, admin_key, email="ada@example.com", name="Ada", message_id="m-ada")
    assert again["duplicate"] is True
    drain()
    assert client.get("/v1/customers/ada@example.com", headers=auth(admin_key)).status_code == 404
    # New data about the same address makes a new person.
    identify(client, admin_key, email="ada@example.com", name="Ada Returns")
    drain()
    fresh = customer(client, admin_key, "ada@example.com")
    assert fresh["id"] != world["ada"]["id"] and fresh["name"] == "Ada Returns"
    assert fresh["identities"] == [] and list(fresh["projects"]) == ["default"]


def test_erasure_by_email_and_twice(client: FlaskClient, admin_key: str, world: dict[str, Any]) -> None:
    assert client.delete("/v1/customers/ADA@example.com", headers=auth(admin_key)).status_code == 204
    again = client.delete(f"/v1/customers/{world['ada']['id']}", headers=auth(admin_key))
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "customer_not_found"


def test_erasure_needs_the_admin_scope(client: FlaskClient, runtime: Runtime, world: dict[str, Any]) -> None:
    ada = world["ada"]["id"]
    before = _snapshot(runtime)
    assert client.delete(f"/v1/customers/{ada}").status_code == 401
    for scopes in (["read"], ["ingest"], ["read", "ingest"]):
        response = client.delete(f"/v1/customers/{ada}", headers=auth(make_key(runtime, scopes)))
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert _snapshot(runtime) == before


def test_a_project_bound_admin_key_erases_only_customers_in_its_project(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None], world: dict[str, Any]
) -> None:
    create_project(client, admin_key, "web")
    people(client, admin_key, drain, [{"email": "cy@example.com", "project": "web", "timestamp": at(5)}])
    before = _snapshot(runtime)
    app_admin = make_key(runtime, ["admin"], project="app")
    cy = customer(client, admin_key, "cy@example.com")["id"]
    for ref in (cy, "cy@example.com", "cus_does_not_exist"):
        response = client.delete(f"/v1/customers/{ref}", headers=auth(app_admin))
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "customer_not_found"
    # ada is in `app` and in `default`: erasing her would take `default`'s data too.
    refused = client.delete(f"/v1/customers/{world['ada']['id']}", headers=auth(app_admin))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "account_key_required"
    assert _snapshot(runtime) == before
    people(client, admin_key, drain, [{"email": "dee@example.com", "project": "app", "timestamp": at(6)}])
    assert client.delete("/v1/customers/dee@example.com", headers=auth(app_admin)).status_code == 204
    assert client.get("/v1/customers/dee@example.com", headers=auth(admin_key)).status_code == 404
    assert customer(client, admin_key, "cy@example.com")["id"] == cy


def test_unknown_customer_is_404(
    client: FlaskClient, admin_key: str, runtime: Runtime, world: dict[str, Any]
) -> None:
    before = _snapshot(runtime)
    for ref in ("cus_nope", "nobody@example.com", "not an email@", "%00", "x" * 5000):
        response = client.delete(f"/v1/customers/{ref}", headers=auth(admin_key))
        assert response.status_code == 404 and response.is_json
    assert _snapshot(runtime) == before


def test_erasure_waits_for_a_batch_in_flight(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    """A worker batch holding ada's event when the erasure arrives finishes first, then is erased too."""
    people(client, admin_key, drain, [{"email": "ada@example.com", "name": "Ada", "timestamp": at(1)}])
    ada = customer(client, admin_key, "ada@example.com")["id"]
    in_flight = identify(client, admin_key, email="ada@example.com", name="In flight")["event_id"]
    claimed, release = threading.Event(), threading.Event()

    def batch() -> None:
        # drain_batch's transaction, held open after applying.
        with runtime.db.write_session() as session, session.begin():
            apply_events(session, claim_pending(session, 10))
            claimed.set()
            release.wait(30)

    statuses: list[int] = []
    worker = threading.Thread(target=batch)
    worker.start()
    assert claimed.wait(30)
    eraser = threading.Thread(
        target=lambda: statuses.append(
            client.delete(f"/v1/customers/{ada}", headers=auth(admin_key)).status_code
        )
    )
    eraser.start()
    eraser.join(0.5)
    assert eraser.is_alive()  # waiting for the batch's locks
    release.set()
    worker.join(30)
    eraser.join(30)
    assert statuses == [204]
    with runtime.db.session() as session:
        event = session.get(Event, in_flight)
        assert event is not None and event.status == "processed" and event.body == REDACTED
        assert session.scalar(select(Customer).where(Customer.email == "ada@example.com")) is None
        assert not session.scalars(select(TimelineEntry).where(TimelineEntry.customer_id == ada)).all()
    drain()
    assert client.get("/v1/customers/ada@example.com", headers=auth(admin_key)).status_code == 404
