"""API keys: hashing, scopes, project binding, revocation and rate limits."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.helpers import auth, identify, make_key
from tributary.app import create_app
from tributary.app.auth import hash_key
from tributary.models import ApiKey
from tributary.runtime.config import Settings
from tributary.runtime.process import Runtime


def test_keys_are_stored_hashed_never_in_clear(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    created = client.post("/v1/keys", json={"scopes": ["ingest"]}, headers=admin).get_json()
    with runtime.db.session() as session:
        stored = session.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
    assert stored is not None and stored.secret_hash == hash_key(created["key"])
    assert created["key"] not in repr(vars(stored))
    listed = client.get("/v1/keys", headers=admin).get_json()["data"]
    assert all("key" not in k for k in listed) and created["id"] in {k["id"] for k in listed}


def test_missing_malformed_and_unknown_keys_are_401(client: FlaskClient, account_id: str) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, auth("trb_nope")):
        response = client.post("/v1/identify", json={"email": "a@example.com"}, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/keys").headers["WWW-Authenticate"].startswith("Bearer")


def test_ingest_key_cannot_read_and_read_key_cannot_ingest(
    client: FlaskClient, runtime: Runtime, account_id: str
) -> None:
    ingest, read = make_key(runtime, ["ingest"]), make_key(runtime, ["read"])
    identify(client, ingest, email="a@example.com")
    assert client.get("/v1/customers/a@example.com", headers=auth(ingest)).status_code == 403
    assert client.post("/v1/identify", json={"email": "a@example.com"}, headers=auth(read)).status_code == 403
    assert client.get("/v1/keys", headers=auth(read)).status_code == 403
    assert client.post("/v1/projects", json={"slug": "x"}, headers=auth(ingest)).status_code == 403


def test_project_bound_key_writes_only_its_project(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: object
) -> None:
    client.post("/v1/projects", json={"slug": "app-a"}, headers=admin)
    client.post("/v1/projects", json={"slug": "app-b"}, headers=admin)
    bound = make_key(runtime, ["ingest", "read"], project="app-a")
    identify(client, bound, email="a@example.com", status="paid")  # project implied
    identify(client, bound, email="a@example.com", project="app-a", params={"x": 1})
    response = client.post(
        "/v1/identify", json={"email": "a@example.com", "project": "app-b"}, headers=auth(bound)
    )
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "project_forbidden"
    admin_token = admin["Authorization"].split()[1]
    identify(client, admin_token, email="b@example.com", project="app-b")
    drain()  # type: ignore[operator]
    record = client.get("/v1/customers/a@example.com", headers=auth(bound)).get_json()
    assert record["projects"] == {"app-a": record["projects"]["app-a"]}
    assert record["projects"]["app-a"]["status"] == "paid" and record["projects"]["app-a"]["params"] == {
        "x": 1
    }
    # A customer outside the key's project does not exist as far as the key can tell.
    assert client.get("/v1/customers/b@example.com", headers=auth(bound)).status_code == 404


def test_revoked_key_stops_working(client: FlaskClient, admin: dict[str, str]) -> None:
    created = client.post("/v1/keys", json={"scopes": ["ingest"]}, headers=admin).get_json()
    identify(client, created["key"], email="a@example.com")
    revoked = client.delete(f"/v1/keys/{created['id']}", headers=admin).get_json()
    assert revoked["revoked_at"] is not None
    assert (
        client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(created["key"])).status_code
        == 401
    )
    assert client.delete("/v1/keys/key_missing", headers=admin).status_code == 404


def test_rate_limit_answers_429_with_headers(runtime: Runtime, account_id: str) -> None:
    settings = Settings.load({**_config(runtime), "TRIBUTARY_RATE_LIMIT": "3/minute"})
    limited = Runtime(settings, db=runtime.db, redis=runtime.redis)
    client = create_app({"TESTING": True}, runtime=limited).test_client()
    token, other = make_key(runtime, ["ingest"]), make_key(runtime, ["ingest"])
    codes = [
        client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(token)).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]
    response = client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(token))
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == "3" and response.headers["RateLimit-Remaining"] == "0"
    # Limits are per key.
    assert client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(other)).status_code == 202


def _config(runtime: Runtime) -> dict[str, object]:
    s = runtime.settings
    return {
        "TRIBUTARY_HOME": str(s.home),
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "TRIBUTARY_SECRET_KEY": s.secret_key,
        "TRIBUTARY_KEY_CACHE_SECONDS": 0,
    }
