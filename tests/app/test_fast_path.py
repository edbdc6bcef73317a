"""app/fast_path.py: plain identify, ping and webhook requests are answered without Flask's
request machinery, and every answer is the one the Flask route gives.

A query string sends a request to Flask (the fast path takes only plain requests, and the views
ignore the query), so each case below is sent both ways and the answers compared."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.connectors.stripe_helpers import OTHER_SECRET, SECRET, create_source
from tests.connectors.stripe_helpers import event as stripe_event
from tests.helpers import auth, make_key
from tests.ops.test_metrics import scrape, value
from tributary.app import create_app, extensions
from tributary.app.auth import hash_key
from tributary.app.fast_path import FastPath
from tributary.app.ratelimit import RateLimiter
from tributary.connectors.testkit import stripe_headers
from tributary.models import ApiKey, Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime

# Headers a refusal may carry; compared between the two paths.
_HEADERS = ("Content-Type", "WWW-Authenticate", "Retry-After", "RateLimit-Limit", "RateLimit-Reset")


def _fast(app: Flask) -> FastPath:
    assert isinstance(app.wsgi_app, FastPath)
    return app.wsgi_app


def _events(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def _ids_hidden(body: Any) -> Any:
    """`body` with every stored event's id replaced: each path stores its own events."""
    if isinstance(body, dict):
        return {
            k: "<id>" if k == "event_id" and isinstance(v, str) else _ids_hidden(v) for k, v in body.items()
        }
    if isinstance(body, list):
        return [_ids_hidden(v) for v in body]
    return body


def _answer(response: Any) -> tuple[int, Any, dict[str, str]]:
    body = _ids_hidden(response.get_json())
    return response.status_code, body, {name: response.headers.get(name) for name in _HEADERS}


def _both_ways(
    client: FlaskClient, app: Flask, path: str, **request: Any
) -> tuple[tuple[int, Any, dict[str, str]], tuple[int, Any, dict[str, str]]]:
    """The answer through the fast path, then through Flask (checking which took each)."""
    fast = _fast(app)
    before = fast.served
    quick = client.post(path, **request)
    taken = fast.served - before
    slow = client.post(f"{path}?via=flask", **request)
    assert fast.served - before == taken, "a request with a query string went the fast way"
    return _answer(quick), _answer(slow)


def test_a_plain_identify_is_answered_by_the_fast_path_and_stored(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime
) -> None:
    fast = _fast(app)
    response = client.post("/v1/identify", json={"email": "a@example.com"}, headers=auth(admin_key))
    assert fast.served == 1
    assert response.status_code == 202 and response.status == "202 ACCEPTED"
    assert response.mimetype == "application/json"
    assert response.headers["Content-Length"] == str(len(response.data))
    body = response.get_json()
    assert body == {"event_id": body["event_id"], "duplicate": False}
    with runtime.db.session() as session:
        event = session.get(Event, body["event_id"])
        assert event is not None and event.status == "pending" and event.channel == "identify"
    ping = client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(admin_key))
    assert ping.status_code == 202 and fast.served == 2


def _message(**extra: Any) -> dict[str, Any]:
    return {"email": "case@example.com", **extra}


def _req(key: str | None = "admin", *, headers: dict[str, str] | None = None, **body: Any) -> Builder:
    """A request sent with the key named `key` (none: no key) and `headers`."""

    def build(keys: dict[str, str]) -> dict[str, Any]:
        return {**body, "headers": {**(auth(keys[key]) if key else {}), **(headers or {})}}

    return build


Builder = Callable[[dict[str, str]], dict[str, Any]]
# (name, path, how to build the request from the keys): the same answer both ways.
_CASES: list[tuple[str, str, Builder]] = [
    ("accepted", "/v1/identify", _req(json=_message(name="Ada"))),
    ("ping", "/v1/ping", _req(json=_message())),
    ("no key", "/v1/identify", _req(None, json=_message())),
    ("not bearer", "/v1/identify", _req(None, headers={"Authorization": "Basic x"}, json=_message())),
    ("unknown key", "/v1/identify", _req(None, headers=auth("trb_nobody"), json=_message())),
    ("read key", "/v1/identify", _req("read", json=_message())),
    ("not json", "/v1/identify", _req(data=b"{nope")),
    ("empty body", "/v1/identify", _req(data=b"")),
    ("not an object", "/v1/identify", _req(json=[1])),
    ("bad email", "/v1/identify", _req(json={"email": "nope"})),
    ("NaN", "/v1/identify", _req(data=b'{"email":"a@example.com","params":{"x":NaN}}')),
    ("unknown project", "/v1/identify", _req(json=_message(project="nope"))),
    ("bound key", "/v1/identify", _req("shop", json=_message(project="default"))),
    ("future", "/v1/identify", _req(json=_message(timestamp="2999-01-01T00:00:00Z"))),
    ("long id", "/v1/identify", _req(headers={"Idempotency-Key": "x" * 256}, json=_message())),
]


@pytest.mark.parametrize(("name", "path", "build"), _CASES, ids=[case[0] for case in _CASES])
def test_each_answer_is_the_flask_routes(
    client: FlaskClient,
    app: Flask,
    admin_key: str,
    runtime: Runtime,
    name: str,
    path: str,
    build: Builder,
) -> None:
    client.post("/v1/projects", json={"slug": "shop"}, headers=auth(admin_key))
    keys = {
        "admin": admin_key,
        "read": make_key(runtime, ["read"]),
        "shop": make_key(runtime, ["ingest"], project="shop"),
    }
    quick, slow = _both_ways(client, app, path, **build(keys))
    assert quick == slow
    assert quick[0] == 202 or quick[1]["error"]["code"]


def test_duplicates_and_conflicts_are_answered_alike(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime
) -> None:
    first = client.post("/v1/identify", json=_message(message_id="m-1"), headers=auth(admin_key))
    assert first.status_code == 202
    quick, slow = _both_ways(
        client, app, "/v1/identify", json=_message(message_id="m-1"), headers=auth(admin_key)
    )
    assert quick == slow == (202, {"event_id": "<id>", "duplicate": True}, quick[2])
    assert client.post(
        "/v1/identify", json=_message(message_id="m-1"), headers=auth(admin_key)
    ).get_json() == {
        "event_id": first.get_json()["event_id"],
        "duplicate": True,
    }
    quick, slow = _both_ways(
        client, app, "/v1/identify", json=_message(message_id="m-1", name="other"), headers=auth(admin_key)
    )
    assert quick == slow and quick[0] == 409 and quick[1]["error"]["code"] == "idempotency_conflict"
    assert _events(runtime) == 1


def test_a_key_revoked_behind_the_cache_is_refused_alike(
    client: FlaskClient, app: Flask, runtime: Runtime
) -> None:
    token = make_key(runtime, ["ingest"])
    assert client.post("/v1/identify", json=_message(), headers=auth(token)).status_code == 202
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.secret_hash == hash_key(token)).values(revoked_at=utcnow())
        )
    stored = _events(runtime)
    quick, slow = _both_ways(client, app, "/v1/identify", json=_message(name="x"), headers=auth(token))
    assert quick == slow and quick[0] == 401
    assert _events(runtime) == stored


def test_a_refusal_over_the_rate_limit_is_answered_alike(
    client: FlaskClient, app: Flask, runtime: Runtime
) -> None:
    extensions(app).rate_limiter = RateLimiter(lambda: runtime.redis, "1/minute")
    token = make_key(runtime, ["ingest"])
    assert client.post("/v1/identify", json=_message(), headers=auth(token)).status_code == 202
    quick, slow = _both_ways(client, app, "/v1/identify", json=_message(), headers=auth(token))
    assert quick[0] == slow[0] == 429 and quick[1] == slow[1]
    assert quick[2]["Retry-After"] is not None and quick[2]["RateLimit-Limit"] == slow[2]["RateLimit-Limit"]


@pytest.mark.parametrize(
    ("how", "change"),
    [
        ("query string", {"path": "/v1/identify?x=1"}),
        ("trailing slash", {"path": "/v1/identify/"}),
        ("other door", {"path": "/v1/batch"}),
        ("chunked", {"headers": {"Transfer-Encoding": "chunked"}}),
        ("too large", {"data": b"x" * 2_000_000}),
        ("GET", {"method": "GET"}),
        ("HEAD", {"method": "HEAD"}),
    ],
)
def test_anything_but_a_plain_request_goes_to_flask(
    client: FlaskClient, app: Flask, admin_key: str, how: str, change: dict[str, Any]
) -> None:
    fast = _fast(app)
    request = {"method": "POST", "path": "/v1/identify", "json": _message(), **change}
    if "data" in request:
        request.pop("json")
    headers = {**auth(admin_key), **request.pop("headers", {})}
    response = client.open(request.pop("path"), headers=headers, **request)
    assert fast.served == 0
    if how == "too large":
        assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"


def test_a_body_cut_short_is_a_400_and_stores_nothing(app: Flask, admin_key: str, runtime: Runtime) -> None:
    builder = EnvironBuilder(path="/v1/identify", method="POST", headers=auth(admin_key))
    environ = builder.get_environ()
    body = json.dumps(_message()).encode()
    environ["wsgi.input"] = io.BytesIO(body[:10])  # the client hung up mid-body
    environ["CONTENT_LENGTH"] = str(len(body))
    answer, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("400") and json.loads(b"".join(answer))["error"]["code"] == "bad_request"
    assert _events(runtime) == 0


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(
    client: FlaskClient, admin_key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr("tributary.app.fast_path.accept", broken)
    with caplog.at_level(logging.ERROR):
        response = client.post("/v1/identify", json=_message(), headers=auth(admin_key))
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "an internal error occurred"}
    }
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


def test_answers_of_both_kinds_are_timed_under_the_route(client: FlaskClient, admin_key: str) -> None:
    count = "tributary_http_request_duration_seconds_count"
    labels = {"route": "/v1/identify", "method": "POST"}
    before = scrape(client)
    for index in range(3):
        client.post("/v1/identify", json={"email": f"t{index}@example.com"}, headers=auth(admin_key))
    client.post("/v1/identify", json={"email": "nope"}, headers=auth(admin_key))
    client.post("/v1/ping", json={"email": "t0@example.com"}, headers=auth(admin_key))
    after = scrape(client)
    assert value(after, count, **labels, status="202") - value(before, count, **labels, status="202") == 3
    assert value(after, count, **labels, status="400") - value(before, count, **labels, status="400") == 1
    ping = {"route": "/v1/ping", "method": "POST", "status": "202"}
    assert value(after, count, **ping) - value(before, count, **ping) == 1


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
    fast = _fast(app)
    first = client.post(path, **_delivery("evt_fast_1"))
    assert first.status_code == 200 and fast.served == 1
    assert first.get_json() == {"received": 1, "duplicates": 0} and first.mimetype == "application/json"
    slow = client.post(f"{path}?via=flask", **_delivery("evt_flask_1"))
    assert fast.served == 1 and _answer(first) == _answer(slow)
    again = client.post(path, **_delivery("evt_fast_1"))
    assert _answer(again) == _answer(client.post(f"{path}?via=flask", **_delivery("evt_flask_1")))
    assert again.get_json() == {"received": 0, "duplicates": 1} and fast.served == 2
    assert _events(runtime) == 2


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
    quick, slow = _both_ways(client, app, path, **request)
    assert quick == slow and quick[0] in (400, 404)
    recorded = client.get(f"/v1/sources/{source_id}/rejections", headers=admin).get_json()
    if quick[0] == 404:
        assert recorded["counts"] == {}
    else:
        assert list(recorded["counts"].values()) == [2]  # once each way, under the same reason
        assert recorded["recent"][0] == {**recorded["recent"][1], "at": recorded["recent"][0]["at"]}
    assert _events(runtime) == 0
    assert _fast(app).served == 0


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
    ("accepted", _req(json=_batch(_GOOD, {"type": "ping", "email": "b@example.com"}))),
    ("one refused", _req(json=_batch(_GOOD, {"type": "identify", "email": "nope"}, {"type": "x"}, 7))),
    ("none valid", _req(json=_batch({"type": "identify", "email": "nope"}))),
    ("not json", _req(data=b"{nope")),
    ("empty", _req(json=_batch())),
    ("not a batch", _req(json={"messages": []})),
    ("too many", _req(json=_batch(*[_GOOD] * 501))),
    ("NaN", _req(data=b'{"batch":[{"type":"identify","email":"n@example.com","params":{"x":NaN}}]}')),
    ("no key", _req(None, json=_batch(_GOOD))),
    ("read key", _req("read", json=_batch(_GOOD))),
]


@pytest.mark.parametrize(("name", "build"), _BATCHES, ids=[case[0] for case in _BATCHES])
def test_each_batch_answer_is_the_flask_routes(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime, name: str, build: Builder
) -> None:
    keys = {"admin": admin_key, "read": make_key(runtime, ["read"])}
    fast = _fast(app)
    quick, slow = _both_ways(client, app, "/v1/batch", **build(keys))
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
    quick, slow = _both_ways(client, app, "/v1/batch", json=again, headers=auth(admin_key))
    assert quick == slow and quick[1]["duplicates"] == 3
    changed = _batch({**_GOOD, "message_id": "d-1", "name": "other"})
    quick, slow = _both_ways(client, app, "/v1/batch", json=changed, headers=auth(admin_key))
    assert quick == slow and quick[1]["results"][0]["status"] == 409


def test_a_batch_over_its_own_limit_goes_to_flask(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    roomy = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 4 * 1024 * 1024}, runtime=runtime)
    name = "x" * 5_000
    big = _batch(*({"type": "identify", "email": f"big{i}@example.com", "name": name} for i in range(300)))
    response = roomy.test_client().post("/v1/batch", json=big, headers=auth(admin_key))
    assert response.status_code == 413 and "a batch is at most" in response.get_json()["error"]["message"]
    assert _fast(roomy).served == 0 and _events(runtime) == 0


@pytest.mark.parametrize("length", ["\u00b2", "-1", " 12", "1e3", "12" * 8])
def test_a_content_length_that_is_not_plain_digits_goes_to_flask(
    app: Flask, admin_key: str, length: str
) -> None:
    environ = EnvironBuilder(path="/v1/identify", method="POST", headers=auth(admin_key)).get_environ()
    environ["wsgi.input"] = io.BytesIO(json.dumps(_message()).encode())
    environ["CONTENT_LENGTH"] = length
    answer, status, _ = run_wsgi_app(app, environ)
    assert not status.startswith("5"), b"".join(answer)
    assert _fast(app).served == 0
