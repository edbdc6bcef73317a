"""Revocation reaches every web process at once: two app instances (two gunicorn workers, say) share
the database and Redis, each with its own key cache."""

from __future__ import annotations

import dataclasses
import importlib

from flask import Flask
from redis import Redis

from tests.helpers import auth, make_key
from tributary.app import create_app
from tributary.app.cli import cli
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
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    first, second = _instance(runtime, down).test_client(), _instance(runtime, down).test_client()
    root = make_key(runtime, ["admin"])
    created = second.post("/v1/keys", json={"scopes": ["read"]}, headers=auth(root)).get_json()
    assert first.get("/v1/keys", headers=auth(root)).status_code == 200
    assert first.get("/v1/customers", headers=auth(created["key"])).status_code == 200
    assert second.delete(f"/v1/keys/{created['id']}", headers=auth(root)).status_code == 200
    assert first.get("/v1/customers", headers=auth(created["key"])).status_code == 401
