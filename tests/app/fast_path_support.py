"""What the fast path's tests share: each case sent through app/fast_path.py and through Flask.

A query string sends a request to Flask (the fast path takes only plain requests, and the views
ignore the query), so each case is sent both ways and the answers compared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth
from tributary.app.fast_path import FastPath
from tributary.models import Event
from tributary.runtime.process import Runtime

# Headers a refusal may carry; compared between the two paths.
HEADERS = ("Content-Type", "WWW-Authenticate", "Retry-After", "RateLimit-Limit", "RateLimit-Reset")


def fast_path_of(app: Flask) -> FastPath:
    """The app's fast path, whose `served` counts what it answered."""
    assert isinstance(app.wsgi_app, FastPath)
    return app.wsgi_app


def stored_events(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def ids_hidden(body: Any) -> Any:
    """`body` with every stored event's id replaced: each path stores its own events."""
    if isinstance(body, dict):
        return {
            k: "<id>" if k == "event_id" and isinstance(v, str) else ids_hidden(v) for k, v in body.items()
        }
    if isinstance(body, list):
        return [ids_hidden(v) for v in body]
    return body


def answer_of(response: Any) -> tuple[int, Any, dict[str, str]]:
    body = ids_hidden(response.get_json())
    return response.status_code, body, {name: response.headers.get(name) for name in HEADERS}


def both_ways(
    client: FlaskClient, app: Flask, path: str, **request: Any
) -> tuple[tuple[int, Any, dict[str, str]], tuple[int, Any, dict[str, str]]]:
    """The answer through the fast path, then through Flask (checking which took each)."""
    fast = fast_path_of(app)
    before = fast.served
    quick = client.post(path, **request)
    taken = fast.served - before
    slow = client.post(f"{path}?via=flask", **request)
    assert fast.served - before == taken, "a request with a query string went the fast way"
    return answer_of(quick), answer_of(slow)


def message(**extra: Any) -> dict[str, Any]:
    return {"email": "case@example.com", **extra}


def req(key: str | None = "admin", *, headers: dict[str, str] | None = None, **body: Any) -> Builder:
    """A request sent with the key named `key` (none: no key) and `headers`."""

    def build(keys: dict[str, str]) -> dict[str, Any]:
        return {**body, "headers": {**(auth(keys[key]) if key else {}), **(headers or {})}}

    return build


# How a case's request is made from the test's keys (by name).
Builder = Callable[[dict[str, str]], dict[str, Any]]
