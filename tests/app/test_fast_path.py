"""app/fast_path.py: plain identify and ping requests are answered without Flask's request
machinery, every answer is the one the Flask route gives, and anything else goes to Flask."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.app.fast_path_support import (
    Builder,
    both_ways,
    fast_path_of,
    message,
    req,
    stored_events,
)
from tests.helpers import auth, make_key
from tests.ops.test_metrics import scrape, value
from tributary.app import extensions
from tributary.app.auth import hash_key
from tributary.app.ratelimit import RateLimiter
from tributary.models import ApiKey, Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime


def test_a_plain_identify_is_answered_by_the_fast_path_and_stored(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime
) -> None:
    fast = fast_path_of(app)
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


# (name, path, how to build the request from the keys): the same answer both ways.
_CASES: list[tuple[str, str, Builder]] = [
    ("accepted", "/v1/identify", req(json=message(name="Ada"))),
    ("ping", "/v1/ping", req(json=message())),
    ("no key", "/v1/identify", req(None, json=message())),
    ("not bearer", "/v1/identify", req(None, headers={"Authorization": "Basic x"}, json=message())),
    ("unknown key", "/v1/identify", req(None, headers=auth("trb_nobody"), json=message())),
    ("read key", "/v1/identify", req("read", json=message())),
    ("not json", "/v1/identify", req(data=b"{nope")),
    ("empty body", "/v1/identify", req(data=b"")),
    ("not an object", "/v1/identify", req(json=[1])),
    ("bad email", "/v1/identify", req(json={"email": "nope"})),
    ("NaN", "/v1/identify", req(data=b'{"email":"a@example.com","params":{"x":NaN}}')),
    ("unknown project", "/v1/identify", req(json=message(project="nope"))),
    ("bound key", "/v1/identify", req("shop", json=message(project="default"))),
    ("future", "/v1/identify", req(json=message(timestamp="2999-01-01T00:00:00Z"))),
    ("long id", "/v1/identify", req(headers={"Idempotency-Key": "x" * 256}, json=message())),
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
    quick, slow = both_ways(client, app, path, **build(keys))
    assert quick == slow
    assert quick[0] == 202 or quick[1]["error"]["code"]


def test_duplicates_and_conflicts_are_answered_alike(
    client: FlaskClient, app: Flask, admin_key: str, runtime: Runtime
) -> None:
    first = client.post("/v1/identify", json=message(message_id="m-1"), headers=auth(admin_key))
    assert first.status_code == 202
    quick, slow = both_ways(
        client, app, "/v1/identify", json=message(message_id="m-1"), headers=auth(admin_key)
    )
    assert quick == slow == (202, {"event_id": "<id>", "duplicate": True}, quick[2])
    assert client.post(
        "/v1/identify", json=message(message_id="m-1"), headers=auth(admin_key)
    ).get_json() == {
        "event_id": first.get_json()["event_id"],
        "duplicate": True,
    }
    quick, slow = both_ways(
        client, app, "/v1/identify", json=message(message_id="m-1", name="other"), headers=auth(admin_key)
    )
    assert quick == slow and quick[0] == 409 and quick[1]["error"]["code"] == "idempotency_conflict"
    assert stored_events(runtime) == 1


def test_a_key_revoked_behind_the_cache_is_refused_alike(
    client: FlaskClient, app: Flask, runtime: Runtime
) -> None:
    token = make_key(runtime, ["ingest"])
    assert client.post("/v1/identify", json=message(), headers=auth(token)).status_code == 202
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.secret_hash == hash_key(token)).values(revoked_at=utcnow())
        )
    stored = stored_events(runtime)
    quick, slow = both_ways(client, app, "/v1/identify", json=message(name="x"), headers=auth(token))
    assert quick == slow and quick[0] == 401
    assert stored_events(runtime) == stored


def test_a_refusal_over_the_rate_limit_is_answered_alike(
    client: FlaskClient, app: Flask, runtime: Runtime
) -> None:
    extensions(app).rate_limiter = RateLimiter(lambda: runtime.redis, "1/minute")
    token = make_key(runtime, ["ingest"])
    assert client.post("/v1/identify", json=message(), headers=auth(token)).status_code == 202
    quick, slow = both_ways(client, app, "/v1/identify", json=message(), headers=auth(token))
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
    fast = fast_path_of(app)
    request = {"method": "POST", "path": "/v1/identify", "json": message(), **change}
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
    body = json.dumps(message()).encode()
    environ["wsgi.input"] = io.BytesIO(body[:10])  # the client hung up mid-body
    environ["CONTENT_LENGTH"] = str(len(body))
    answer, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("400") and json.loads(b"".join(answer))["error"]["code"] == "bad_request"
    assert stored_events(runtime) == 0


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(
    client: FlaskClient, admin_key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr("tributary.app.fast_path.accept", broken)
    with caplog.at_level(logging.ERROR):
        response = client.post("/v1/identify", json=message(), headers=auth(admin_key))
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


@pytest.mark.parametrize("length", ["\u00b2", "-1", " 12", "1e3", "12" * 8])
def test_a_content_length_that_is_not_plain_digits_goes_to_flask(
    app: Flask, admin_key: str, length: str
) -> None:
    environ = EnvironBuilder(path="/v1/identify", method="POST", headers=auth(admin_key)).get_environ()
    environ["wsgi.input"] = io.BytesIO(json.dumps(message()).encode())
    environ["CONTENT_LENGTH"] = length
    answer, status, _ = run_wsgi_app(app, environ)
    assert not status.startswith("5"), b"".join(answer)
    assert fast_path_of(app).served == 0
