"""Every ops endpoint: admin scope only; project-bound keys see only their project's events, jobs
and replays (others' ids are 404); every bad filter is a 400."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from tests.helpers import auth, identify, make_key, sqlite_walks, statements_sent
from tributary.app.accounts import create_project, ensure_account, get_project
from tributary.models import Event, Project
from tributary.models.base import sortable_id, utcnow
from tributary.runtime.doorbell import ring
from tributary.runtime.process import Runtime
from tributary.workers.worker import TributaryWorker


def _broken_event(runtime: Runtime, project_slug: str) -> str:
    """An event of a connector this install does not have: it fails, and so does its retry."""
    with runtime.db.session() as session, session.begin():
        project = session.scalar(select(Project).where(Project.slug == project_slug))
        assert project is not None
        event_id = sortable_id("evt")
        session.execute(
            insert(Event).values(
                id=event_id,
                account_id=project.account_id,
                project_id=project.id,
                channel="uninstalled",
                type="user.created",
                occurred_at=utcnow(),
                received_at=utcnow(),
                body=b"{}",
                headers={"x-signature": "secret-sig", "content-type": "application/json"},
                payload={},
                status="pending",
                attempts=0,
            )
        )
    return event_id


@pytest.fixture
def world(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        get_project(session, account.id, "default")
        create_project(session, account.id, "other", "Other")
    token = admin["Authorization"].split()[1]
    ok = identify(client, token, email="ada@example.com", project="default")["event_id"]
    other = identify(client, token, email="bob@example.com", project="other")["event_id"]
    broken = _broken_event(runtime, "default")
    _work(runtime)
    jobs = client.get("/v1/jobs/failed", headers=admin).get_json()["data"]
    assert [j["event_id"] for j in jobs] == [broken]
    default_admin = make_key(runtime, ["admin"], "default")
    replay = client.post("/v1/events/replay", json={"connector": "identify"}, headers=auth(default_admin))
    assert replay.status_code == 202
    account_replay = client.post("/v1/events/replay", json={"connector": "ping"}, headers=admin).get_json()
    return {
        "ok": ok,
        "other": other,
        "broken": broken,
        "job": jobs[0]["id"],
        "replay": replay.get_json()["id"],
        "account_replay": account_replay["id"],
        "keys": {
            "none": None,
            "read": make_key(runtime, ["read"]),
            "ingest": make_key(runtime, ["ingest"]),
            "read_default": make_key(runtime, ["read"], "default"),
            "admin_default": default_admin,
            "admin_other": make_key(runtime, ["admin"], "other"),
            "admin": token,
        },
    }


def _routes(w: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/v1/events", None),
        ("GET", f"/v1/events/{w['ok']}", None),
        ("POST", f"/v1/events/{w['ok']}/replay?dry_run=true", None),
        ("POST", "/v1/events/replay", {"connector": "identify", "dry_run": True}),
        ("GET", f"/v1/replays/{w['replay']}", None),
        ("DELETE", f"/v1/replays/{w['replay']}", None),
        ("GET", "/v1/jobs/failed", None),
        ("GET", f"/v1/jobs/failed/{w['job']}", None),
        ("POST", f"/v1/jobs/failed/{w['job']}/retry", None),
        ("POST", "/v1/jobs/failed/retry", None),
        ("DELETE", f"/v1/jobs/failed/{w['job']}", None),
    ]


def test_scopes(client: FlaskClient, world: dict[str, Any]) -> None:
    for method, path, body in _routes(world):
        for name, expected in (("none", 401), ("read", 403), ("ingest", 403), ("read_default", 403)):
            key = world["keys"][name]
            answer = client.open(path, method=method, json=body, headers=auth(key) if key else {})
            assert answer.status_code == expected, (method, path, name, answer.get_json())
            assert answer.get_json()["error"]["code"] in ("unauthorized", "forbidden")


def _work(runtime: Runtime) -> None:
    ring(runtime)  # events inserted here rang no doorbell
    for _ in range(2):
        TributaryWorker(runtime).work(burst=True, with_scheduler=True, logging_level="WARNING")


def test_project_bound_admin_keys_see_only_their_project(
    client: FlaskClient, world: dict[str, Any], runtime: Runtime
) -> None:
    other = auth(world["keys"]["admin_other"])
    mine = auth(world["keys"]["admin_default"])
    # Another project's ids are 404, exactly like ids that do not exist.
    for method, path, body in _routes(world):
        if path in ("/v1/events", "/v1/jobs/failed", "/v1/events/replay", "/v1/jobs/failed/retry"):
            continue  # lists: checked below (they answer only the key's own project)
        answer = client.open(path, method=method, json=body, headers=other)
        assert answer.status_code == 404, (method, path)
    assert [e["id"] for e in client.get("/v1/events", headers=other).get_json()["data"]] == [world["other"]]
    assert client.get("/v1/jobs/failed", headers=other).get_json()["data"] == []
    assert client.post("/v1/jobs/failed/retry", headers=other).get_json()["requeued"] == 0
    assert client.get(f"/v1/replays/{world['account_replay']}", headers=mine).status_code == 404
    assert client.get("/v1/events?project=default", headers=other).status_code == 403
    plan = client.post("/v1/events/replay", json={"connector": "identify", "dry_run": True}, headers=other)
    assert plan.get_json()["count"] == 1

    mine_events = {e["id"] for e in client.get("/v1/events", headers=mine).get_json()["data"]}
    assert mine_events == {world["ok"], world["broken"]}
    detail = client.get(f"/v1/events/{world['broken']}", headers=mine).get_json()
    assert detail["headers"] == {"x-signature": "[masked]", "content-type": "application/json"}
    assert detail["attempt_history"][0]["outcome"] == "failed"
    assert "uninstalled" in detail["attempt_history"][0]["error"]
    for method, path, body in _routes(world):
        if "/v1/jobs/failed/" in path and method != "GET":
            continue  # below, in an order that keeps the job failed between them
        answer = client.open(path, method=method, json=body, headers=mine)
        assert answer.status_code in (200, 202), (method, path, answer.get_json())
    job = world["job"]
    assert client.post(f"/v1/jobs/failed/{job}/retry", headers=mine).status_code == 202
    _work(runtime)
    assert client.post("/v1/jobs/failed/retry", headers=mine).get_json()["requeued"] == 1
    _work(runtime)
    assert client.delete(f"/v1/jobs/failed/{job}", headers=mine).status_code == 204
    # The account-wide key sees everything.
    everything = client.get("/v1/events", headers=auth(world["keys"]["admin"])).get_json()["data"]
    assert {e["id"] for e in everything} == {world["ok"], world["other"], world["broken"]}


BAD_FILTERS = [
    "status=weird",
    "status=",
    "status=failed&status=pending",
    "source=not-a-source",
    "connector=Bad!",
    "type=" + "x" * 201,
    "email=not-an-email",
    "project=Bad_Slug",
    "since=yesterday",
    "until=2026-13-01",
    "since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
    "limit=0",
    "limit=201",
    "limit=ten",
    "cursor=garbage",
    "unknown=1",
    "email=%00@example.com",
]


@pytest.mark.parametrize("query", BAD_FILTERS)
def test_every_bad_filter_is_a_400(client: FlaskClient, admin: dict[str, str], query: str) -> None:
    answer = client.get(f"/v1/events?{query}", headers=admin)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"]["code"] in ("validation_error", "invalid_cursor")


def test_unknown_project_is_a_404(client: FlaskClient, admin: dict[str, str]) -> None:
    assert client.get("/v1/events?project=nope", headers=admin).status_code == 404


def test_filters_and_pages_newest_first(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    ids = [identify(client, token, email=f"p{i}@example.com")["event_id"] for i in range(5)]
    ping = client.post("/v1/ping", json={"email": "p0@example.com"}, headers=admin).get_json()["event_id"]
    drain()
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/events?{query}", headers=admin).get_json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ping, *reversed(ids)]
    # A cursor is bound to its filters.
    first = client.get("/v1/events?limit=2", headers=admin).get_json()["next_cursor"]
    assert client.get(f"/v1/events?limit=2&status=failed&cursor={first}", headers=admin).status_code == 400

    def listed(query: str) -> list[str]:
        answer = client.get(f"/v1/events?{query}", headers=admin)
        assert answer.status_code == 200, answer.get_json()
        return [e["id"] for e in answer.get_json()["data"]]

    assert listed("connector=ping") == [ping]
    assert listed("type=identify") == list(reversed(ids))
    with statements_sent(runtime) as sent:
        assert listed("email=P0@Example.com") == [ping, ids[0]]
    # A person's events are found through the address and the customer's timeline: SQLite served
    # the account's own condition from an account index and walked every event of the account.
    assert sqlite_walks(runtime, sent, "events") == []
    assert listed("status=processed&connector=identify") == list(reversed(ids))
    assert listed("status=failed") == []
    assert listed("since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z") == []
    assert len(listed("since=2000-01-01T00:00:00Z")) == 6
    item = client.get("/v1/events?connector=ping", headers=admin).get_json()["data"][0]
    assert set(item) >= {
        "id", "source", "connector", "provider_event_id", "type", "status", "attempts", "last_error",
        "occurred_at", "received_at", "processed_at",
    }  # fmt: skip
    detail = client.get(f"/v1/events/{ids[0]}", headers=admin).get_json()
    assert (
        detail["body"] == json.loads(json.dumps(detail["body"]))
        and detail["body"]["email"] == "p0@example.com"
    )
    assert detail["changes"][0]["customer"]["email"] == "p0@example.com"
    assert client.get("/v1/events/evt_00000000000000000000000000", headers=admin).status_code == 404
    assert client.get("/v1/events/../etc", headers=admin).status_code == 404


def test_erasure_redacts_the_attempt_history(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    identify(client, admin["Authorization"].split()[1], email="ada@example.com")
    drain()
    broken = _broken_event(runtime, "default")
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == broken).values(email="ada@example.com"))
    _work(runtime)
    before = client.get(f"/v1/events/{broken}", headers=admin).get_json()["attempt_history"]
    assert before and "uninstalled" in before[0]["error"]
    assert client.delete("/v1/customers/ada@example.com", headers=admin).status_code == 204
    after = client.get(f"/v1/events/{broken}", headers=admin).get_json()["attempt_history"]
    assert {a["error"] for a in after} == {"redacted: the customer was erased"}
