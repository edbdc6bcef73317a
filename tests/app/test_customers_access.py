"""GET /v1/customers: bad input is a 400 in the error shape, and keys see only what they may."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.app.customer_data import at, create_project, emails, listing, people
from tests.helpers import auth, make_key
from tributary.app import create_app
from tributary.runtime.process import Runtime


@pytest.fixture
def two_projects(client: FlaskClient, admin_key: str, drain: Callable[[], None]) -> None:
    create_project(client, admin_key, "app")
    create_project(client, admin_key, "web")
    people(
        client,
        admin_key,
        drain,
        [
            {
                "email": "ada@example.com",
                "project": "app",
                "status": "paid",
                "params": {"seats": 5},
                "timestamp": at(2),
            },
            {
                "email": "ada@example.com",
                "project": "web",
                "status": "churned",
                "params": {"secret": "web-only"},
                "timestamp": at(1),
            },
            {"email": "bob@example.com", "project": "web", "status": "paid", "timestamp": at(3)},
            {"email": "cy@example.com", "project": "app", "status": "trial", "timestamp": at(4)},
        ],
    )


def _error(client: FlaskClient, token: str, query: str, status: int = 400) -> dict[str, Any]:
    response = client.get(f"/v1/customers{query}", headers=auth(token))
    assert response.status_code == status, response.get_json()
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return dict(body["error"])


BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=201", "limit"),
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("limit=99999999999999999999", "limit"),
    ("limit=5&limit=6", "limit"),
    ("sort=name", "sort"),
    ("sort=created_at,id", "sort"),
    ("sort=", "sort"),
    ("active_since=yesterday", "active_since"),
    ("active_since=2026-13-01", "active_since"),
    ("created_since=2026-01-01T25:00:00Z", "created_since"),
    ("created_since=0001-01-01T00:00:00%2B01:00", "created_since"),
    ("unknown=1", "unknown"),
    ("Status=paid", "Status"),
    ("params=5", "params"),
    ("status=Paid", "status"),
    ("status=paid%20now", "status"),
    ("status=paid&status=trial", "status"),
    ("project=Bad_Slug", "project"),
    ("project=", "project"),
    ("email=not-an-email", "email"),
    ("email=" + "a" * 2000 + "@example.com", "email"),
    ("q=" + "x" * 201, "q"),
    ("q=", "q"),
    ("params.=x", "params."),
    ("params." + quote('a"b') + "=1", 'params.a"b'),
    ("params.seats=1&params.seats=2", "params.seats"),
    ("params.n=1e999", "params.n"),
    ("params.n=-1e999", "params.n"),
    ("params.n=99999999999999999999", "params.n"),
    ("params.n=" + "x" * 1001, "params.n"),
    # Text no database can store: a clear 400, never a driver error.
    ("q=%00", "q"),
    ("email=a%00b@example.com", "email"),
    ("params.x=%00", "params.x"),
    ("params.x=" + quote('"\\u0000"'), "params.x"),
    ("params.x=" + quote('"\\ud800"'), "params.x"),
    ("cursor=%00", "cursor"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
def test_bad_queries_are_400s_naming_the_parameter(
    client: FlaskClient, admin_key: str, query: str, field: str
) -> None:
    error = _error(client, admin_key, "?" + query)
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]


def test_every_problem_is_reported_at_once(client: FlaskClient, admin_key: str) -> None:
    error = _error(client, admin_key, "?limit=0&sort=x&nope=1&params.n=NaN")
    assert {d["field"] for d in error["details"]} == {"limit", "sort", "nope"}
    assert not listing(client, admin_key, "?params.n=NaN")["data"]  # NaN is not JSON: plain text


def test_unknown_project_is_404(client: FlaskClient, admin_key: str) -> None:
    assert _error(client, admin_key, "?project=nope", 404)["code"] == "project_not_found"


@pytest.fixture
def cursor(client: FlaskClient, admin_key: str, two_projects: None) -> str:
    body = listing(client, admin_key, "?limit=1&status=paid")
    assert body["next_cursor"]
    return str(body["next_cursor"])


def test_a_cursor_continues_its_own_query(client: FlaskClient, admin_key: str, cursor: str) -> None:
    assert emails(listing(client, admin_key, f"?limit=1&status=paid&cursor={cursor}")) == ["ada@example.com"]


@pytest.mark.parametrize(
    "query",
    [
        "status=trial",
        "status=paid&sort=last_activity_at",
        "status=paid&sort=-created_at",
        "status=paid&project=web",
        "status=paid&q=a",
        "status=paid&params.seats=5",
        "",
    ],
)
def test_a_cursor_from_another_query_is_400(
    client: FlaskClient, admin_key: str, cursor: str, query: str
) -> None:
    error = _error(client, admin_key, f"?{query}&cursor={cursor}")
    assert error["code"] == "invalid_cursor"
    assert "different query" in error["message"]


def test_tampered_and_foreign_cursors_are_400(
    client: FlaskClient, admin_key: str, runtime: Runtime, cursor: str
) -> None:
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    payload, _, signature = cursor.rpartition(".")
    for bad in [
        "garbage",
        flipped,
        payload + "." + signature[::-1],
        "x" * 5000,
        quote("🙂.🙂"),
        cursor + "x",
    ]:
        assert _error(client, admin_key, f"?status=paid&cursor={bad}")["code"] == "invalid_cursor", bad
    other_install = create_app(
        {"TESTING": True, "SECRET_KEY": "another-secret"}, runtime=runtime
    ).test_client()
    response = other_install.get(f"/v1/customers?status=paid&cursor={cursor}", headers=auth(admin_key))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_cursor"


def test_a_timeline_cursor_is_not_a_list_cursor(
    client: FlaskClient, admin_key: str, drain: Callable[[], None], two_projects: None
) -> None:
    people(client, admin_key, drain, [{"email": "ada@example.com", "timestamp": at(1, h)} for h in range(3)])
    timeline = client.get(
        "/v1/customers/ada@example.com/timeline?limit=1", headers=auth(admin_key)
    ).get_json()
    assert timeline["next_cursor"]
    assert _error(client, admin_key, f"?cursor={timeline['next_cursor']}")["code"] == "invalid_cursor"


def test_keys_need_the_read_scope(client: FlaskClient, runtime: Runtime, two_projects: None) -> None:
    assert client.get("/v1/customers").status_code == 401
    assert client.get("/v1/customers", headers=auth("trb_not-a-key")).status_code == 401
    ingest = make_key(runtime, ["ingest"])
    assert _error(client, ingest, "", 403)["code"] == "forbidden"
    assert emails(listing(client, make_key(runtime, ["read"]))) == [
        "cy@example.com",
        "bob@example.com",
        "ada@example.com",
    ]


def test_a_project_bound_key_sees_only_its_project(
    client: FlaskClient, runtime: Runtime, two_projects: None
) -> None:
    key = make_key(runtime, ["read"], project="app")
    body = listing(client, key)
    assert emails(body) == ["cy@example.com", "ada@example.com"]
    ada = body["data"][1]
    assert list(ada["projects"]) == ["app"]  # nothing about `web`
    assert "web-only" not in str(body)
    assert emails(listing(client, key, "?project=app&status=paid")) == ["ada@example.com"]
    # Filters apply to the key's project only: ada is churned and has `secret` only in `web`.
    assert emails(listing(client, key, "?status=churned")) == []
    assert emails(listing(client, key, "?params.secret=web-only")) == []
    assert emails(listing(client, key, "?email=bob@example.com")) == []
    assert emails(listing(client, key, "?q=bob")) == []


def test_a_bound_key_naming_another_project_learns_nothing(
    client: FlaskClient, runtime: Runtime, two_projects: None
) -> None:
    key = make_key(runtime, ["read"], project="app")
    existing = _error(client, key, "?project=web", 403)
    missing = _error(client, key, "?project=nope", 403)
    assert existing == missing
    assert existing["code"] == "project_forbidden"


def test_cursors_do_not_cross_keys_of_different_projects(
    client: FlaskClient, admin_key: str, runtime: Runtime, two_projects: None
) -> None:
    bound = make_key(runtime, ["read"], project="app")
    mine = listing(client, bound, "?limit=1")["next_cursor"]
    assert listing(client, bound, f"?limit=1&cursor={mine}")["data"]
    unbound = listing(client, admin_key, "?limit=1")["next_cursor"]
    assert _error(client, bound, f"?limit=1&cursor={unbound}")["code"] == "invalid_cursor"
    assert _error(client, admin_key, f"?limit=1&cursor={mine}")["code"] == "invalid_cursor"


def test_openapi_documents_the_customer_routes(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    paths = document["paths"]
    listed = paths["/v1/customers"]["get"]
    names = {p["name"] for p in listed["parameters"]}
    assert names == {
        "project",
        "status",
        "email",
        "q",
        "params.<key>",
        "active_since",
        "created_since",
        "sort",
        "limit",
        "cursor",
    }
    limit = next(p for p in listed["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CustomerList"
    )
    assert "400" in listed["responses"]
    timeline = paths["/v1/customers/{ref}/timeline"]["get"]
    assert {p["name"] for p in timeline["parameters"]} == {"ref", "limit", "cursor"}
    assert timeline["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Timeline")
    assert "204" in paths["/v1/customers/{ref}"]["delete"]["responses"]
    assert "admin" in paths["/v1/customers/{ref}"]["delete"]["description"]
    assert {"TimelineEntry", "TimelineEvent", "CustomerOut"} <= set(document["components"]["schemas"])
