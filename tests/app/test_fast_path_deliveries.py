"""app/fast_path.py: plain webhook deliveries and `/v1/batch` requests are answered without
Flask's request machinery, and every answer (and every refused delivery's record) is the one the
Flask route gives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.app.fast_path_support import Builder, answer_of, both_ways, fast_path_of, req, stored_events
from tests.connectors.stripe_helpers import OTHER_SECRET, SECRET, create_source
from tests.connectors.stripe_helpers import event as stripe_event
from tests.helpers import auth, make_key
from tests.ops.test_metrics import scrape, value
from tributary.app import create_app
from tributary.connectors.testkit import stripe_headers
from tributary.runtime.process import Runtime


def _signed(raw: bytes) -> dict[str, str]:
    return stripe_headers(raw, SECRET)


def _delivery(event_id: str, secret: str = SECRET, age: int = 0) -> dict[str, Any]:
    """A `customer.created` delivery signed with `secret`, `age` seconds ago."""
    raw = json.dumps(stripe_event("customer.created", event_id=event_id)).encode()
    signed = stripe_headers(raw, secret, timestamp=int(time.time()) - age)
    return {"data": raw, "headers": {"Content-Type": "application/json", **signed}}


def test_webhook_deliveries_are_answered_by_the_fast_path_as_by_flask(
    client: FlaskClient, app: Flask, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    path = f"/webhooks/{source_id}"
    fast = fast_path_of(app)
    first = client.post(path, **_delivery("evt_fast_1"))
    assert first.status_code == 200 and fast.served == 1
    assert first.get_json() == {"received": 1, "duplicates": 0} and first.mimetype == "application/json"
    slow = client.post(f"{path}?via=flask", **_delivery("evt_flask_1"))
    assert fast.served == 1 and answer_of(first) == answer_of(slow)
    again = client.post(path, **_delivery("evt_fast_1"))
    assert answer_of(again) == answer_of(client.post(f"{path}?via=flask", **_delivery("evt_flask_1")))
    assert again.get_json() == {"received": 0, "duplicates": 1} and fast.served == 2
    assert stored_events(runtime) == 2


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("forged", lambda source: (f"/webhooks/{source}", _delivery("evt_x", OTHER_SECRET))),
        (
            "stale",
            lambda source: (f"/webhooks/{source}", _delivery("evt_x", age=400)),
        ),
        ("unsigned", lambda source: (f"/webhooks/{source}", {"data": b"{}"})),
        ("not an event", lambda source: (f"/webhooks/{source}", {"data": b"[]", "headers": _signed(b"[]")})),
        ("no such source", lambda source: ("/webhooks/src_nosuchsource000000000000", _delivery("evt_x"))),
    ],
)
def test_refused_deliveries_are_answered_and_recorded_alike(
    client: FlaskClient,
    app: Flask,
    admin: dict[str, str],
    runtime: Runtime,
    name: str,
    build: Callable[[str], tuple[str, dict[str, Any]]],
) -> None:
    source_id = create_source(client, admin)
    path, request = build(source_id)
    quick, slow = both_ways(client, app, path, **request)
    assert quick == slow and quick[0] in (400, 404)
    recorded = client.get(f"/v1/sources/{source_id}/rejections", headers=admin).get_json()
    if quick[0] == 404:
        assert recorded["counts"] == {}
    else:
        assert list(recorded["counts"].values()) == [2]  # once each way, under the same reason
        assert recorded["recent"][0] == {**recorded["recent"][1], "at": recorded["recent"][0]["at"]}
    assert stored_events(runtime) == 0
    assert fast_path_of(app).served == 0


def test_webhook_deliveries_are_timed_under_the_rule(client: FlaskClient, admin: dict[str, str]) -> None:
    source_id = create_source(client, admin)
    count = "tributary_http_request_duration_seconds_count"
    labels = {"route": "/webhooks/<source_id>", "method": "POST"}
    before = scrape(client)
    client.post(f"/webhooks/{source_id}", **_delivery("evt_timed"))
    client.post(f"/webhooks/{source_id}", **_delivery("evt_forged", OTHER_SECRET))
    after = scrape(client)
    assert value(after, count, **labels, status="200") - value(before, count, **labels, status="200") == 1
    assert value(after, count, **labels, status="400") - value(before, count, **labels, status="400") == 1


def _batch(*messages: Any) -> dict[str, Any]:
    return {"batch": list(messages)}


_GOOD = {"type": "identify", "email": "b@example.com", "name": "B"}
_BATCHES: list[tuple[str, Builder]] = [
    ("accepted", req(json=_batch(_GOOD, {"type": "ping", "email": "b@example.com"}))),
    ("one refused", req(json=_batch(_GOOD, {"type": "identify", "email": "nope"}, {"type": "x"}, 7))),
    ("none valid", req(json=_batch({"type": "identify", "email": "nope"}))),
    ("not json", req(data=b"{nope")),
    ("empty", req(json=_batch())),
    ("not a batch", req(json={"messages": []})),
    ("too many", req(json=_batch(*[_GOOD] * 501))),
    ("NaN", req(data=b'{"batch":[{"type":"identify","email":"n@example.com","params":{"x":NaN}}]}')),
    ("no key", req(None, json=_batch(_GOOD))),
    ("read key", req("read", json=_batch(_GOOD))),
]


@pytest.mark.parametrize(("name", "build"), _BATCHES, ids=[case[0] for case in _BATCHES])
def test_each_batch_answer_is_the_flask_routes(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime, name: str, build: Builder
) -> None:
    keys = {"admin": admin_key, "read": make_key(runtime, ["read"])}
    fast = fast_path_of(app)
    quick, slow = both_ways(client, app, "/v1/batch", **build(keys))
    assert quick == slow
    assert fast.served == (1 if quick[0] == 202 else 0)


def test_batch_duplicates_and_conflicts_are_answered_alike(
    client: FlaskClient, app: Flask, admin_key: str
) -> None:
    again = _batch(
        {**_GOOD, "message_id": "d-1"}, {**_GOOD, "message_id": "d-1"}, {**_GOOD, "message_id": "d-2"}
    )
    first = client.post("/v1/batch", json=again, headers=auth(admin_key)).get_json()
    assert [r["duplicate"] for r in first["results"]] == [False, True, False]
    quick, slow = both_ways(client, app, "/v1/batch", json=again, headers=auth(admin_key))
    assert quick == slow and quick[1]["duplicates"] == 3
    changed = _batch({**_GOOD, "message_id": "d-1", "name": "other"})
    quick, slow = both_ways(client, app, "/v1/batch", json=changed, headers=auth(admin_key))
    assert quick == slow and quick[1]["results"][0]["status"] == 409


def test_a_batch_over_its_own_limit_goes_to_flask(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    roomy = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 4 * 1024 * 1024}, runtime=runtime)
    name = "x" * 5_000
    big = _batch(*({"type": "identify", "email": f"big{i}@example.com", "name": name} for i in range(300)))
    response = roomy.test_client().post("/v1/batch", json=big, headers=auth(admin_key))
    assert response.status_code == 413 and "a batch is at most" in response.get_json()["error"]["message"]
    assert fast_path_of(roomy).served == 0 and stored_events(runtime) == 0
