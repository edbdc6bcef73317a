"""Every bad input to identify/ping is a clear 4xx JSON error and stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tributary.models import Event
from tributary.runtime.process import Runtime

BAD_IDENTIFY: list[tuple[Any, str]] = [
    ({}, "validation_error"),
    ({"email": ""}, "validation_error"),
    ({"email": "no-at-sign"}, "validation_error"),
    ({"email": "a@b"}, "validation_error"),
    ({"email": "two@@example.com"}, "validation_error"),
    ({"email": "a" * 320 + "@example.com"}, "validation_error"),
    ({"email": 42}, "validation_error"),
    ({"email": "a@example.com", "params": {"plan": None}}, "validation_error"),
    ({"email": "a@example.com", "params_once": {"plan": None}}, "validation_error"),
    ({"email": "a@example.com", "params": []}, "validation_error"),
    ({"email": "a@example.com", "params": {'bad"key': 1}}, "validation_error"),
    ({"email": "a@example.com", "params": {"": 1}}, "validation_error"),
    ({"email": "a@example.com", "params": {"k": 1}, "params_unset": ["k"]}, "validation_error"),
    ({"email": "a@example.com", "params": {"k": 1}, "params_once": {"k": 2}}, "validation_error"),
    ({"email": "a@example.com", "params_unset": "k"}, "validation_error"),
    ({"email": "a@example.com", "status": "Not A Slug"}, "validation_error"),
    ({"email": "a@example.com", "name": "x" * 401}, "validation_error"),
    ({"email": "a@example.com", "timestamp": "yesterday"}, "validation_error"),
    ({"email": "a@example.com", "timestamp": 1700000000}, "validation_error"),
    ({"email": "a@example.com", "project": "Bad Slug"}, "validation_error"),
    ({"email": "a@example.com", "message_id": ""}, "validation_error"),
    ({"email": "a@example.com", "paramz": {}}, "validation_error"),
    ({"email": "a@example.com", "project": "missing"}, "project_not_found"),
    ([{"email": "a@example.com"}], "malformed_body"),
    ("just a string", "malformed_body"),
]


def _stored(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.mark.parametrize(("payload", "code"), BAD_IDENTIFY)
def test_bad_identify_bodies(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, payload: Any, code: str
) -> None:
    response = client.post("/v1/identify", json=payload, headers=admin)
    assert 400 <= response.status_code < 500
    body = response.get_json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert _stored(runtime) == 0


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"email": "a@example.com",}', b"\xff\xfe", b"null", b'{"email": "a@example.com"} x']
)
def test_malformed_json(client: FlaskClient, admin: dict[str, str], runtime: Runtime, raw: bytes) -> None:
    response = client.post("/v1/identify", data=raw, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in {"malformed_json", "malformed_body"}
    assert _stored(runtime) == 0


def test_ping_rejects_identify_fields(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/ping", json={"email": "a@example.com", "status": "paid"}, headers=admin)
    assert response.status_code == 400


def test_body_over_the_limit_is_413(client: FlaskClient, admin: dict[str, str], runtime: Runtime) -> None:
    big = b'{"email": "a@example.com", "name": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/v1/identify", data=big, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert _stored(runtime) == 0


def test_timestamps_far_in_the_future_are_rejected(client: FlaskClient, admin: dict[str, str]) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = client.post(
        "/v1/identify", json={"email": "a@example.com", "timestamp": future}, headers=admin
    )
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "timestamp_in_future"
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (
        client.post(
            "/v1/identify", json={"email": "a@example.com", "timestamp": soon}, headers=admin
        ).status_code
        == 202
    )


def test_idempotency_key_too_long(client: FlaskClient, admin: dict[str, str]) -> None:
    headers = {**admin, "Idempotency-Key": "k" * 256}
    assert client.post("/v1/ping", json={"email": "a@example.com"}, headers=headers).status_code == 400


def test_unknown_routes_and_methods_are_json(client: FlaskClient, admin: dict[str, str]) -> None:
    missing = client.get("/v1/nope", headers=admin)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/identify", headers=admin)
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
