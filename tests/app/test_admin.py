"""Projects and keys through the admin API."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.helpers import auth, make_key
from tributary.runtime.process import Runtime


def test_projects_create_list_and_conflict(client: FlaskClient, admin: dict[str, str]) -> None:
    created = client.post("/v1/projects", json={"slug": "acme-app", "name": "Acme"}, headers=admin)
    assert created.status_code == 201
    assert created.get_json()["slug"] == "acme-app" and created.get_json()["id"].startswith("prj_")
    again = client.post("/v1/projects", json={"slug": "acme-app"}, headers=admin)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "project_exists"
    slugs = [p["slug"] for p in client.get("/v1/projects", headers=admin).get_json()["data"]]
    assert slugs == ["acme-app", "default"]
    for bad in ({"slug": "Acme"}, {"slug": ""}, {"slug": "a" * 65}, {}, {"slug": "x", "extra": 1}):
        assert client.post("/v1/projects", json=bad, headers=admin).status_code == 400


def test_keys_api(client: FlaskClient, admin: dict[str, str]) -> None:
    client.post("/v1/projects", json={"slug": "app"}, headers=admin)
    created = client.post(
        "/v1/keys", json={"scopes": ["read", "ingest"], "project": "app", "name": "ci"}, headers=admin
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["key"].startswith("trb_") and body["prefix"] == body["key"][:12]
    assert body["scopes"] == ["ingest", "read"] and body["project"] == "app"
    assert client.post("/v1/keys", json={"scopes": ["root"]}, headers=admin).status_code == 400
    assert client.post("/v1/keys", json={"scopes": []}, headers=admin).status_code == 400
    assert (
        client.post("/v1/keys", json={"scopes": ["read"], "project": "nope"}, headers=admin).status_code
        == 404
    )


def test_project_bound_admin_cannot_escape_its_project(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    client.post("/v1/projects", json={"slug": "app"}, headers=admin)
    bound = auth(make_key(runtime, ["admin"], project="app"))
    assert client.post("/v1/projects", json={"slug": "other"}, headers=bound).status_code == 403
    assert client.post("/v1/keys", json={"scopes": ["admin"]}, headers=bound).status_code == 403
    assert (
        client.post("/v1/keys", json={"scopes": ["read"], "project": "app"}, headers=bound).status_code == 201
    )
