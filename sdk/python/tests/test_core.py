"""The pure parts: messages, encoding, retry timing, query strings, error mapping."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tributary_sdk import AuthenticationError, RateLimited, ServerError, ValidationError
from tributary_sdk._core import RetryPolicy, encode, identify_message, list_query, ping_message
from tributary_sdk.errors import error_for, is_retryable, parse_retry_after


def test_every_message_gets_its_own_id_and_the_call_time() -> None:
    before = datetime.now(timezone.utc)
    one, two = ping_message("a@example.com"), ping_message("a@example.com")
    assert one["message_id"] != two["message_id"]
    assert before <= datetime.fromisoformat(one["timestamp"]) <= datetime.now(timezone.utc)
    naive = ping_message("a@example.com", timestamp=datetime(2026, 1, 1, 12), message_id="m")
    assert naive["timestamp"] == "2026-01-01T12:00:00+00:00" and naive["message_id"] == "m"
    assert "project" not in one and ping_message("a@example.com", project="web")["project"] == "web"


def test_identify_copies_what_the_caller_may_change_later() -> None:
    params = {"plan": "pro"}
    message = identify_message("a@example.com", params=params, params_unset=("old",), status="paid")
    params["plan"] = "changed"
    assert message["params"] == {"plan": "pro"} and message["params_unset"] == ["old"]
    assert message["type"] == "identify" and message["status"] == "paid"
    assert "name" not in message and "params_once" not in message


def test_encoding_is_strict_json() -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert json.loads(encode({"at": when})) == {"at": "2026-01-01T00:00:00+00:00"}
    for bad in (float("nan"), float("inf"), object()):
        with pytest.raises(ValidationError):
            encode({"x": bad})


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    server = ServerError("x", status=503)
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0)):
        delays = {policy.delay(attempt, server) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(0, RateLimited("x", retry_after=30.0)) == 30.0
    assert policy.delay(0, RateLimited("x", retry_after=10_000.0)) == policy.max_retry_after


def test_errors_map_from_status_and_body() -> None:
    body = {"error": {"code": "unauthorized", "message": "bad key", "details": None}}
    error = error_for(401, body, {})
    assert isinstance(error, AuthenticationError) and error.message == "bad key" and error.status == 401
    limited = error_for(429, None, {"retry-after": "3"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0 and is_retryable(limited)
    assert isinstance(error_for(409, {}, {}), ValidationError) and not is_retryable(error_for(409, {}, {}))
    assert isinstance(error_for(502, "not json", {}), ServerError)
    http_date = (datetime.now(timezone.utc) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    parsed = parse_retry_after({"retry-after": http_date})
    assert parsed is not None and 55 <= parsed <= 60
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_list_filters_encode_param_values_as_json() -> None:
    query = list_query(project="web", params={"plan": "pro", "seats": 5, "trial": True}, limit=10)
    assert ("project", "web") in query and ("limit", "10") in query
    assert ("params.plan", '"pro"') in query and ("params.seats", "5") in query
    assert ("params.trial", "true") in query
