"""Revocation reaches every web process at once: two app instances (two gunicorn workers, say) share
the database and Redis, each with its own key cache."""

from __future__ import annotations

import dataclasses
import importlib

from flask import Flask
from redis import Redis
from sqlalchemy import func, select, update

from tests.helpers import auth, make_key, outage_redis
from tributary.app import create_app
from tributary.app.auth import hash_key
from tributary.app.cli import cli
from tributary.models import ApiKey, Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime

PING = {"email": "a@example.com"}


def _instance(runtime: Runtime, redis: Redis | None = None) -> Flask:
    settings = dataclasses.replace(runtime.settings, key_cache_seconds=60.0)
    shared = Runtime(settings, db=runtime.db, redis=redis or runtime.redis)
    return create_app({"TESTING": True}, runtime=shared)


def test_a_key_revoked_in_one_process_stops_working_in_the_other_at_once(
    runtime: Runtime, account_id: str
) -> None:
    first, second = _instance(runtime).test_client(), _instance(runtime).test_client()
    root = make_key(runtime, ["admin"])
    created = second.post("/v1/keys", json={"scopes": ["ingest"]}, headers=auth(root)).get_json()
    other = second.post("/v1/keys", json={"scopes": ["ingest"]}, headers=auth(root)).get_json()
    for key in (created["key"], other["key"]):
        assert first.post("/v1/ping", json=PING, headers=auth(key)).status_code == 202  # now cached
    assert second.delete(f"/v1/keys/{created['id']}", headers=auth(root)).status_code == 200
    assert first.post("/v1/ping", json=PING, headers=auth(created["key"])).status_code == 401
    # The other keys keep working (re-read once from the database).
    assert first.post("/v1/ping", json=PING, headers=auth(other["key"])).status_code == 202


def test_a_key_revoked_with_the_cli_stops_working_in_a_running_process(
    app: Flask, runtime: Runtime, account_id: str
) -> None:
    web = _instance(runtime).test_client()
    root = make_key(runtime, ["admin"])
    created = web.post("/v1/keys", json={"scopes": ["ingest"]}, headers=auth(root)).get_json()
    assert web.post("/v1/ping", json=PING, headers=auth(created["key"])).status_code == 202
    importlib.import_module("tributary.app.cli.admin")
    result = app.test_cli_runner().invoke(cli, ["keys", "revoke", created["id"]])
    assert result.exit_code == 0, result.output
    assert web.post("/v1/ping", json=PING, headers=auth(created["key"])).status_code == 401


def test_with_redis_unreachable_keys_are_checked_in_the_database(runtime: Runtime, account_id: str) -> None:
    down = outage_redis(socket_connect_timeout=0.2)
    first, second = _instance(runtime, down).test_client(), _instance(runtime, down).test_client()
    root = make_key(runtime, ["admin"])
    created = second.post("/v1/keys", json={"scopes": ["read"]}, headers=auth(root)).get_json()
    assert first.get("/v1/keys", headers=auth(root)).status_code == 200
    assert first.get("/v1/customers", headers=auth(created["key"])).status_code == 200
    assert second.delete(f"/v1/keys/{created['id']}", headers=auth(root)).status_code == 200
    assert first.get("/v1/customers", headers=auth(created["key"])).status_code == 401


def test_an_ingest_key_revoked_without_any_announcement_stores_nothing_more(
    runtime: Runtime, account_id: str
) -> None:
    """Identify trusts its cached key without reading the stamp: its INSERT checks the key, so even
    a revocation nobody announced in Redis applies to the next request, duplicates included."""
    web = _instance(runtime).test_client()
    token = make_key(runtime, ["ingest"])
    assert web.post("/v1/ping", json={**PING, "message_id": "m1"}, headers=auth(token)).status_code == 202
    with runtime.db.session() as session, session.begin():
        session.execute(update(ApiKey).values(revoked_at=utcnow()))  # the stamp is left alone
    for body in (PING, {**PING, "message_id": "m1"}, {**PING, "message_id": "m2"}):
        response = web.post("/v1/ping", json=body, headers=auth(token))
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert web.post("/v1/identify", json=PING, headers=auth(token)).status_code == 401
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


def test_a_batch_of_a_key_revoked_without_any_announcement_stores_nothing(
    runtime: Runtime, account_id: str
) -> None:
    """`/v1/batch` trusts its cached key as identify does: its INSERT checks the key, so a key
    revoked behind the cache's back stores nothing more, whether the messages are new or
    duplicates, and the answer is the unknown key's 401."""
    web = _instance(runtime).test_client()
    token, other = make_key(runtime, ["ingest"]), make_key(runtime, ["ingest"])
    first = [{"type": "ping", **PING, "message_id": "m1"}]
    for key in (token, other):
        assert web.post("/v1/batch", json={"batch": first}, headers=auth(key)).status_code == 202
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.secret_hash == hash_key(token)).values(revoked_at=utcnow())
        )
    again = [*first, {"type": "ping", **PING, "message_id": "m2"}, {"type": "identify", **PING}]
    for batch in (first, again):
        response = web.post("/v1/batch", json={"batch": batch}, headers=auth(token))
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"]["code"] == "unauthorized"
    # The other key of the account, cached too, still stores (m1 answered as the duplicate it is).
    results = web.post("/v1/batch", json={"batch": again}, headers=auth(other)).get_json()["results"]
    assert [r.get("duplicate") for r in results] == [True, False, False]
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3
