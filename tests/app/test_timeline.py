"""GET /v1/customers/<id>/timeline: changes with their events, newest first, in signed pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    create_project,
    import_connector,
    import_customer,
    people,
)
from tests.helpers import auth, customer, make_key
from tributary.runtime.process import Runtime


def _timeline(client: FlaskClient, token: str, ref: str, query: str = "", status: int = 200) -> Any:
    response = client.get(f"/v1/customers/{ref}/timeline{query}", headers=auth(token))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _all(client: FlaskClient, token: str, ref: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = _timeline(client, token, ref, f"?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        entries += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return entries
        assert len(body["data"]) == limit


@pytest.fixture
def history(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    drain: Callable[[], None],
) -> dict[str, str]:
    """ada's life, delivered out of order; returns event ids by label."""
    create_project(client, admin_key, "app")
    ids: dict[str, str] = {}
    for label, payload in [
        ("signup", {"name": "Ada", "status": "trial", "timestamp": at(1)}),
        ("upgrade", {"status": "paid", "params": {"plan": "pro"}, "timestamp": at(3)}),
        ("app", {"project": "app", "status": "free", "timestamp": at(4)}),
        ("same-time-1", {"params": {"seats": 1}, "timestamp": at(5)}),
        ("same-time-2", {"params": {"seats": 2}, "timestamp": at(5)}),
    ]:
        ids[label] = client.post(
            "/v1/identify", json={"email": "ada@example.com", **payload}, headers=auth(admin_key)
        ).get_json()["event_id"]
        drain()
    # Arrives last but happened on day 2: its status is older than the upgrade's, so it is stale.
    ids["late"] = client.post(
        "/v1/identify",
        json={"email": "ada@example.com", "status": "past_due", "timestamp": at(2)},
        headers=auth(admin_key),
    ).get_json()["event_id"]
    ids["import"] = import_customer(
        runtime,
        "ada@example.com",
        occurred_at=datetime(2026, 1, 6, tzinfo=UTC),
        identity=["stripe-test", "cus_ada"],
    )
    people(client, admin_key, drain, [{"email": "bob@example.com", "timestamp": at(7)}])
    return ids


def test_entries_are_newest_first_with_their_events(
    client: FlaskClient, admin_key: str, history: dict[str, str]
) -> None:
    entries = _timeline(client, admin_key, "ada@example.com")["data"]
    labels = {v: k for k, v in history.items()}
    assert [labels[e["event"]["id"]] for e in entries] == [
        "import",
        "same-time-2",  # same event time: the later change first
        "same-time-1",
        "app",
        "upgrade",
        "late",
        "signup",
    ]
    ids = [e["id"] for e in entries]
    assert ids[1] > ids[2]
    signup = entries[-1]
    assert signup["kind"] == "identify" and signup["project"] == "default"
    assert signup["occurred_at"] == "2026-01-01T00:00:00.000000Z"
    assert signup["data"]["created"] is True and signup["data"]["changed"]["status"] == [None, "trial"]
    assert signup["event"] == {
        "id": history["signup"],
        "type": "identify",
        "channel": "identify",
        "source": None,
        "occurred_at": "2026-01-01T00:00:00.000000Z",
        "received_at": signup["event"]["received_at"],
    }
    assert entries[5]["data"]["stale"] == {"status": "past_due"}  # the late delivery
    assert entries[3]["project"] == "app" and entries[3]["data"]["joined_project"] is True
    imported = entries[0]
    assert imported["kind"] == "test.imported" and imported["event"]["channel"] == "test-import"
    assert imported["data"]["identity_linked"] == ["stripe-test", "cus_ada"]
    assert all("bob" not in str(e) for e in entries)


def test_timeline_by_id_equals_by_email(client: FlaskClient, admin_key: str, history: dict[str, str]) -> None:
    ada = customer(client, admin_key, "ada@example.com")
    assert _timeline(client, admin_key, ada["id"]) == _timeline(client, admin_key, "ADA@example.com")


@pytest.mark.parametrize("limit", [1, 2, 3, 6])
def test_pages_walk_the_whole_timeline(
    client: FlaskClient, admin_key: str, history: dict[str, str], limit: int
) -> None:
    whole = _timeline(client, admin_key, "ada@example.com", "?limit=200")
    assert whole["next_cursor"] is None and len(whole["data"]) == 7
    assert _all(client, admin_key, "ada@example.com", limit) == whole["data"]


def test_a_project_bound_key_sees_its_project_rows_only(
    client: FlaskClient, runtime: Runtime, history: dict[str, str]
) -> None:
    app_key = make_key(runtime, ["read"], project="app")
    entries = _timeline(client, app_key, "ada@example.com")["data"]
    assert [e["event"]["id"] for e in entries] == [history["app"]]
    assert _timeline(client, app_key, "bob@example.com", status=404)["error"]["code"] == "customer_not_found"
    default_key = make_key(runtime, ["read"], project="default")
    assert len(_all(client, default_key, "ada@example.com", 2)) == 6
    # A cursor from one key's view is not valid in another's.
    cursor = _timeline(client, default_key, "ada@example.com", "?limit=1")["next_cursor"]
    error = _timeline(client, app_key, "ada@example.com", f"?cursor={cursor}", status=400)["error"]
    assert error["code"] == "invalid_cursor"


def test_bad_requests(client: FlaskClient, admin_key: str, runtime: Runtime, history: dict[str, str]) -> None:
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=x",
        "?sort=created_at",
        "?status=paid",
        "?limit=1&limit=2",
    ]:
        error = _timeline(client, admin_key, "ada@example.com", query, status=400)["error"]
        assert error["code"] == "validation_error", query
    ada_cursor = _timeline(client, admin_key, "ada@example.com", "?limit=1")["next_cursor"]
    for bad in ["nope", ada_cursor[:-2], ada_cursor + "A"]:
        error = _timeline(client, admin_key, "ada@example.com", f"?cursor={bad}", status=400)["error"]
        assert error["code"] == "invalid_cursor"
    # A cursor belongs to one customer's timeline.
    error = _timeline(client, admin_key, "bob@example.com", f"?cursor={ada_cursor}", status=400)["error"]
    assert error["code"] == "invalid_cursor"
    list_cursor = client.get("/v1/customers?limit=1", headers=auth(admin_key)).get_json()["next_cursor"]
    error = _timeline(client, admin_key, "ada@example.com", f"?cursor={list_cursor}", status=400)["error"]
    assert error["code"] == "invalid_cursor"
    assert _timeline(client, admin_key, "cus_nope", status=404)["error"]["code"] == "customer_not_found"
    assert _timeline(client, admin_key, "not an email@", status=404)["error"]["code"] == "customer_not_found"
    for ref in ("%00", "x" * 5000, "%00@example.com"):
        assert _timeline(client, admin_key, ref, status=404)["error"]["code"] == "customer_not_found"
    assert _timeline(client, make_key(runtime, ["ingest"]), "ada@example.com", status=403)["error"]
    assert client.get("/v1/customers/ada@example.com/timeline").status_code == 401
