"""identify/ping: validation, durability, dedup, and the path through the worker."""

from __future__ import annotations

import json

from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth, customer, identify
from tributary.models import Event, TimelineEntry
from tributary.runtime.process import Runtime


def _events(runtime: Runtime) -> list[Event]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def test_identify_is_stored_before_202_and_applied_by_the_worker(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: object
) -> None:
    body = identify(
        client, admin_key, email=" Ada@Example.COM ", name="Ada", status="trial", params={"plan": "pro"}
    )
    [event] = _events(runtime)
    assert event.id == body["event_id"] and event.status == "pending" and event.email == "ada@example.com"
    assert json.loads(event.body)["email"] == " Ada@Example.COM "  # stored raw
    drain()  # type: ignore[operator]
    record = customer(client, admin_key, "ada@example.com")
    assert record["name"] == "Ada"
    assert record["projects"]["default"]["status"] == "trial"
    assert record["projects"]["default"]["params"] == {"plan": "pro"}
    assert _events(runtime)[0].status == "processed"
    assert customer(client, admin_key, record["id"]) == record


def test_ping_moves_activity_only(client: FlaskClient, admin_key: str, drain: object) -> None:
    identify(client, admin_key, email="a@example.com", status="paid", timestamp="2026-01-01T00:00:00Z")
    response = client.post(
        "/v1/ping",
        json={"email": "a@example.com", "timestamp": "2026-02-01T00:00:00Z"},
        headers=auth(admin_key),
    )
    assert response.status_code == 202
    drain()  # type: ignore[operator]
    record = customer(client, admin_key, "a@example.com")
    assert record["last_activity_at"] == "2026-02-01T00:00:00.000000Z"
    assert record["projects"]["default"]["status"] == "paid"


def test_message_id_and_idempotency_key_deduplicate(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: object
) -> None:
    first = identify(client, admin_key, email="a@example.com", message_id="m-1")
    again = identify(client, admin_key, email="A@example.com", message_id="m-1")
    assert again == {"event_id": first["event_id"], "duplicate": True}
    conflict = client.post(
        "/v1/identify",
        json={"email": "a@example.com", "message_id": "m-1", "name": "x"},
        headers=auth(admin_key),
    )
    assert conflict.status_code == 409 and conflict.get_json()["error"]["code"] == "idempotency_conflict"
    headers = {**auth(admin_key), "Idempotency-Key": "k-1"}
    one = client.post("/v1/ping", json={"email": "a@example.com"}, headers=headers).get_json()
    two = client.post("/v1/ping", json={"email": "a@example.com"}, headers=headers).get_json()
    assert one["event_id"] == two["event_id"] and two["duplicate"] is True
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 2
    drain()  # type: ignore[operator]
    # One effect: the conflicting name never landed, and each stored event was applied once.
    assert customer(client, admin_key, "a@example.com")["name"] is None
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 2
