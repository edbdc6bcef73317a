"""`POST /v1/imports` and `GET /v1/imports/<id>`: background imports run by a real RQ worker."""

from __future__ import annotations

from collections.abc import Callable

import responses
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth, customer, make_key
from tests.imports.test_stripe_import import _source, _world
from tributary.models import Event
from tributary.runtime.process import Runtime
from tributary.workers.imports import RECONCILE_KEY, reconcile_if_due


def test_an_import_started_through_the_api_runs_to_completion_in_a_worker(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], stripe_api: None
) -> None:
    source_id = _source(client, admin)
    response = client.post("/v1/imports", json={"kind": "stripe", "source": source_id}, headers=admin)
    assert response.status_code == 202, response.get_json()
    started = response.get_json()
    assert started["state"] == "queued" and started["source"] == source_id
    fake = _world(7)
    with responses.RequestsMock() as api:
        fake.register(api)
        drain()
    progress = client.get(f"/v1/imports/{started['id']}", headers=admin).get_json()
    assert progress["state"] == "completed", progress
    assert progress["counts"]["created"] == 7 and progress["counts"]["pending"] == 0
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "person5@example.com")["projects"]["default"]["status"] == "paid"


def test_a_csv_upload_is_checked_before_anything_is_queued(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    bad = "email,status\nok@example.com,paid\nnope,paid\n"
    response = client.post("/v1/imports", json={"kind": "csv", "csv": bad}, headers=admin)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_csv" and error["details"][0]["row"] == 3
    assert len(runtime.queue) == 0
    good = "email,name,params.seats\nada@example.com,Ada,3\n"
    response = client.post(
        "/v1/imports", json={"kind": "csv", "csv": good, "filename": "a.csv"}, headers=admin
    )
    assert response.status_code == 202
    drain()
    progress = client.get(f"/v1/imports/{response.get_json()['id']}", headers=admin).get_json()
    assert progress["state"] == "completed" and progress["counts"]["created"] == 1
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "ada@example.com")["projects"]["default"]["params"] == {"seats": 3}


def test_imports_need_admin_and_project_bound_keys_stay_in_their_project(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = _source(client, admin)  # in project default
    client.post("/v1/projects", json={"slug": "other"}, headers=admin)
    other = auth(make_key(runtime, ["admin"], project="other"))
    reader = auth(make_key(runtime, ["read"]))
    assert (
        client.post("/v1/imports", json={"kind": "stripe", "source": source_id}, headers=reader).status_code
        == 403
    )
    assert (
        client.post("/v1/imports", json={"kind": "stripe", "source": source_id}, headers=other).status_code
        == 404
    )
    response = client.post(
        "/v1/imports", json={"kind": "csv", "csv": "email\na@example.com\n"}, headers=admin
    )
    import_id = response.get_json()["id"]
    assert client.get(f"/v1/imports/{import_id}", headers=other).status_code == 404
    assert client.get(f"/v1/imports/{import_id}", headers=reader).status_code == 403
    assert client.get("/v1/imports/imp_nope", headers=admin).status_code == 404
    response = client.post(
        "/v1/imports",
        json={"kind": "csv", "csv": "email\na@example.com\n", "project": "default"},
        headers=other,
    )
    assert response.status_code == 403
    for body in ({"kind": "stripe"}, {"kind": "ftp"}, {"kind": "clerk", "source": source_id}, []):
        response = client.post("/v1/imports", json=body, headers=admin)
        assert response.status_code == 400, body
        assert response.get_json()["error"]["code"]
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_imports_are_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "post" in paths["/v1/imports"] and "get" in paths["/v1/imports/{import_id}"]


def test_the_periodic_reconcile_is_off_by_default_and_scheduled_once_per_interval(runtime: Runtime) -> None:
    assert runtime.settings.reconcile_interval_seconds == 0
    assert reconcile_if_due(runtime) is False
    object.__setattr__(runtime.settings, "reconcile_interval_seconds", 60)
    try:
        assert reconcile_if_due(runtime) is True
        assert reconcile_if_due(runtime) is False  # another worker, or the next maintenance pass
        assert runtime.redis.ttl(RECONCILE_KEY) > 0
        assert [job.func_name for job in runtime.queue.jobs] == ["tributary.workers.imports.reconcile_all"]
    finally:
        object.__setattr__(runtime.settings, "reconcile_interval_seconds", 0)
