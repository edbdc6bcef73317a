"""Signing in to the dashboard through its real form, and the data the page tests look at."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from tests.helpers import auth

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client: FlaskClient, token: str, expect: int = 302) -> Any:
    page = client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in", data={"api_key": token, "csrf_token": csrf_from(page.get_data(as_text=True))}
    )
    assert response.status_code == expect, response.get_data(as_text=True)[:500]
    return response


def page_csrf(client: FlaskClient, path: str = "/dashboard/") -> str:
    response = client.get(path)
    assert response.status_code == 200
    return csrf_from(response.get_data(as_text=True))


def day(n: int) -> str:
    return f"2026-01-{n:02d}T00:00:00Z"


def seed(client: FlaskClient, admin_key: str, drain: Callable[[], None]) -> dict[str, str]:
    """Two projects; ada in both (paid pro in shop, a stale write on her plan), bob in shop only,
    cy in app only. Returns customer ids and the event that set ada's shop plan."""
    for slug in ("shop", "app"):
        response = client.post("/v1/projects", json={"slug": slug}, headers=auth(admin_key))
        assert response.status_code == 201
    shop = {"email": "ada@example.com", "project": "shop"}
    calls = [
        {**shop, "name": "Ada", "status": "trial", "timestamp": "2026-01-01T00:00:00Z"},
        {**shop, "status": "paid", "params": {"plan": "pro", "seats": 3}, "timestamp": day(3)},
        {**shop, "params": {"plan": "basic"}, "timestamp": "2026-01-02T00:00:00Z"},
        {"email": "ada@example.com", "project": "app", "status": "free", "timestamp": "2026-01-04T00:00:00Z"},
        {
            "email": "bob@example.com",
            "project": "shop",
            "status": "trial",
            "params": {"plan": "basic"},
            "timestamp": "2026-01-05T00:00:00Z",
        },
        {"email": "cy@example.com", "project": "app", "status": "active", "timestamp": day(6)},
    ]
    ids = []
    for body in calls:
        response = client.post("/v1/identify", json=body, headers=auth(admin_key))
        assert response.status_code == 202, response.get_json()
        ids.append(response.get_json()["event_id"])
        drain()
    out = {"plan_event": ids[1], "stale_event": ids[2]}
    for email in ("ada", "bob", "cy"):
        found = client.get(f"/v1/customers/{email}@example.com", headers=auth(admin_key)).get_json()
        out[email] = found["id"]
    return out
