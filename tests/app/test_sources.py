"""Sources through the admin API and the CLI: creation, masking, rotation, deletion, tenancy."""

from __future__ import annotations

import importlib
import json
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import auth, make_key
from tributary.app.cli import cli
from tributary.app.sources import mask_secret
from tributary.connectors.testkit import stripe_headers
from tributary.runtime.process import Runtime

SECRET = "whsec_rotation_old_0123456789abcdef"
NEW_SECRET = "whsec_rotation_new_fedcba9876543210"
API_KEY = "sk_test_51SRZwvLkdIwHu7ixTestKey000000"


def _delivery(client: FlaskClient, source_id: str, secret: str, event_id: str) -> int:
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"id": "cus_A1", "object": "customer", "email": "a@example.com"}},
        }
    ).encode()
    return client.post(f"/webhooks/{source_id}", data=body, headers=stripe_headers(body, secret)).status_code


def _create(client: FlaskClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/sources", json={"connector": "stripe", **body}, headers=headers)


def test_mask_secret_shows_at_most_a_scheme_prefix_and_four_characters() -> None:
    assert mask_secret("whsec_abcdefghijklmnop1234") == "whsec_…1234"
    assert mask_secret("sk_test_51SRZwvLkdIwHu7ix") == "sk_…u7ix"
    assert mask_secret("plainsecretvalue") == "…alue"
    assert mask_secret("short") == "…"


def test_create_returns_id_and_url_and_never_echoes_secrets(
    client: FlaskClient, admin: dict[str, str]
) -> None:
    response = _create(
        client, admin, secrets=[SECRET], name="billing", options={"api_key": API_KEY, "livemode": "false"}
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert re.fullmatch(r"src_[0-9A-Za-z]{24}", created["id"])
    assert created["url"] == f"http://127.0.0.1:8000/webhooks/{created['id']}"
    assert (
        created["connector"] == "stripe" and created["project"] == "default" and created["name"] == "billing"
    )
    assert [s["hint"] for s in created["secrets"]] == ["whsec_…cdef"]
    assert created["options"] == {"api_key": "sk_…0000", "livemode": False}
    listed = client.get("/v1/sources", headers=admin)
    assert listed.get_json()["data"] == [created]
    for text in (response.get_data(as_text=True), listed.get_data(as_text=True)):
        assert SECRET not in text and API_KEY not in text
    assert client.get(f"/v1/sources/{created['id']}", headers=admin).get_json() == created


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"connector": "nope"}, 400, "unknown_connector"),
        ({"connector": "Bad Name"}, 400, "validation_error"),
        ({"connector": "stripe", "secrets": ["a", "b", "c"]}, 400, "validation_error"),
        ({"connector": "stripe", "secrets": ["same", "same"]}, 400, "invalid_secret"),
        # The schema states it (/openapi.json): a secret has a non-blank character and no NUL.
        ({"connector": "stripe", "secrets": ["  "]}, 400, "validation_error"),
        ({"connector": "stripe", "secrets": ["whsec_a\u0000b"]}, 400, "validation_error"),
        ({"connector": "stripe", "name": "a\u0000b"}, 400, "validation_error"),
        ({"connector": "standard", "options": {"x": "\u0000"}}, 400, "validation_error"),
        ({"connector": "stripe", "options": {"colour": "red"}}, 400, "invalid_options"),
        ({"connector": "stripe", "project": "nope"}, 404, "project_not_found"),
        ({"connector": "stripe", "extra": 1}, 400, "validation_error"),
    ],
)
def test_create_refuses_bad_input(
    client: FlaskClient, admin: dict[str, str], body: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/v1/sources", json=body, headers=admin)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert client.get("/v1/sources", headers=admin).get_json() == {"data": []}


def test_sources_need_an_admin_key(client: FlaskClient, runtime: Runtime, account_id: str) -> None:
    assert client.get("/v1/sources").status_code == 401
    read = auth(make_key(runtime, ["read", "ingest"]))
    assert client.get("/v1/sources", headers=read).status_code == 403
    assert _create(client, read).status_code == 403


def test_rotation_add_new_secret_then_remove_the_old_one(client: FlaskClient, admin: dict[str, str]) -> None:
    source = _create(client, admin, secrets=[SECRET]).get_json()
    sid = source["id"]
    assert _delivery(client, sid, NEW_SECRET, "evt_1") == 400
    added = client.post(f"/v1/sources/{sid}/secrets", json={"secret": NEW_SECRET}, headers=admin)
    assert added.status_code == 201 and len(added.get_json()["secrets"]) == 2
    assert NEW_SECRET not in added.get_data(as_text=True)
    # Both verify while the provider switches over.
    assert _delivery(client, sid, SECRET, "evt_2") == 200
    assert _delivery(client, sid, NEW_SECRET, "evt_3") == 200
    third = client.post(
        f"/v1/sources/{sid}/secrets", json={"secret": "whsec_third_000000000000"}, headers=admin
    )
    assert third.status_code == 409 and third.get_json()["error"]["code"] == "too_many_secrets"
    again = client.post(f"/v1/sources/{sid}/secrets", json={"secret": NEW_SECRET}, headers=admin)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "secret_exists"
    old_id = source["secrets"][0]["id"]
    removed = client.delete(f"/v1/sources/{sid}/secrets/{old_id}", headers=admin)
    assert removed.status_code == 200 and [s["hint"] for s in removed.get_json()["secrets"]] == [
        "whsec_…3210"
    ]
    assert _delivery(client, sid, SECRET, "evt_4") == 400
    assert _delivery(client, sid, NEW_SECRET, "evt_5") == 200
    assert client.delete(f"/v1/sources/{sid}/secrets/{old_id}", headers=admin).status_code == 404


def test_a_source_created_without_secret_gets_one_later(client: FlaskClient, admin: dict[str, str]) -> None:
    source = _create(client, admin).get_json()
    assert source["secrets"] == []
    assert _delivery(client, source["id"], SECRET, "evt_1") == 400
    client.post(f"/v1/sources/{source['id']}/secrets", json={"secret": SECRET}, headers=admin)
    assert _delivery(client, source["id"], SECRET, "evt_1") == 200


def test_delete_makes_the_url_404_and_hides_the_source(client: FlaskClient, admin: dict[str, str]) -> None:
    sid = _create(client, admin, secrets=[SECRET]).get_json()["id"]
    deleted = client.delete(f"/v1/sources/{sid}", headers=admin)
    assert deleted.status_code == 200 and deleted.get_json()["deleted_at"] is not None
    assert deleted.get_json()["secrets"] == []
    assert _delivery(client, sid, SECRET, "evt_1") == 404
    assert client.get("/v1/sources", headers=admin).get_json() == {"data": []}
    assert client.delete(f"/v1/sources/{sid}", headers=admin).status_code == 404
    assert client.get(f"/v1/sources/{sid}", headers=admin).status_code == 404


def test_project_bound_admin_keys_only_see_their_project(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    assert client.post("/v1/projects", json={"slug": "shop"}, headers=admin).status_code == 201
    default_source = _create(client, admin, secrets=[SECRET]).get_json()
    shop_admin = auth(make_key(runtime, ["admin"], project="shop"))
    implied = _create(client, shop_admin, secrets=[SECRET])
    assert implied.status_code == 201 and implied.get_json()["project"] == "shop"
    assert _create(client, shop_admin, project="default").status_code == 403
    assert [s["id"] for s in client.get("/v1/sources", headers=shop_admin).get_json()["data"]] == [
        implied.get_json()["id"]
    ]
    assert client.get("/v1/sources?project=default", headers=shop_admin).status_code == 403
    for method, path in [
        ("get", f"/v1/sources/{default_source['id']}"),
        ("delete", f"/v1/sources/{default_source['id']}"),
        ("post", f"/v1/sources/{default_source['id']}/secrets"),
        ("delete", f"/v1/sources/{default_source['id']}/secrets/{default_source['secrets'][0]['id']}"),
    ]:
        response = getattr(client, method)(path, json={"secret": NEW_SECRET}, headers=shop_admin)
        assert response.status_code == 404, (method, path)
    assert len(client.get("/v1/sources", headers=admin).get_json()["data"]) == 2
    assert len(client.get("/v1/sources?project=shop", headers=admin).get_json()["data"]) == 1


def test_public_url_setting_builds_the_url(runtime: Runtime, account_id: str) -> None:
    import dataclasses

    from tributary.app import create_app

    settings = dataclasses.replace(runtime.settings, public_url="https://crm.example.com")
    app = create_app({"TESTING": True}, runtime=Runtime(settings, db=runtime.db, redis=runtime.redis))
    token = make_key(runtime, ["admin"])
    created = (
        app.test_client().post("/v1/sources", json={"connector": "stripe"}, headers=auth(token)).get_json()
    )
    assert created["url"] == f"https://crm.example.com/webhooks/{created['id']}"


# -- the CLI -----------------------------------------------------------------------------------------


def _invoke(app: Flask, *args: str, input: str | None = None) -> tuple[int, str]:
    importlib.import_module("tributary.app.cli.sources")
    result = app.test_cli_runner().invoke(cli, list(args), input=input)
    return result.exit_code, result.output


def test_cli_create_list_rotate_delete(app: Flask, client: FlaskClient, account_id: str) -> None:
    code, out = _invoke(
        app,
        "sources",
        "create",
        "--connector",
        "stripe",
        "--secret",
        SECRET,
        "--option",
        "livemode=false",
        "--json",
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["options"] == {"livemode": False} and SECRET not in out
    sid = created["id"]
    assert _delivery(client, sid, SECRET, "evt_1") == 200

    code, out = _invoke(app, "sources", "list")
    assert code == 0 and sid in out and created["url"] in out and "whsec_…cdef" in out and SECRET not in out

    code, out = _invoke(app, "sources", "secret", "add", sid, input=f"{NEW_SECRET}\n")
    assert code == 0 and "2 active" in out and NEW_SECRET not in out
    code, out = _invoke(app, "sources", "secret", "remove", sid, created["secrets"][0]["id"], "--json")
    assert code == 0 and [s["hint"] for s in json.loads(out)["secrets"]] == ["whsec_…3210"]
    assert _delivery(client, sid, SECRET, "evt_2") == 400
    assert _delivery(client, sid, NEW_SECRET, "evt_3") == 200

    code, out = _invoke(app, "sources", "show", sid, "--json")
    assert code == 0 and json.loads(out)["id"] == sid
    assert _invoke(app, "sources", "delete", sid) == (0, f"deleted {sid}\n")
    assert _invoke(app, "sources", "list", "--json") == (0, "[]\n")
    assert _delivery(client, sid, NEW_SECRET, "evt_4") == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connector", "nope"], "no connector named 'nope'"),
        (["--connector", "stripe", "--project", "nope"], "no project with slug 'nope'"),
        (["--connector", "stripe", "--option", "livemode"], "options are written key=value"),
        (["--connector", "stripe", "--option", "livemode=perhaps"], "livemode must be true or false"),
        (["--connector", "stripe", "--secret", "a", "--secret", "b", "--secret", "c"], "at most 2 secrets"),
    ],
)
def test_cli_create_reports_bad_input(app: Flask, account_id: str, args: list[str], message: str) -> None:
    code, out = _invoke(app, "sources", "create", *args)
    assert code != 0 and message in out, out
    assert _invoke(app, "sources", "list", "--json") == (0, "[]\n")


def test_cli_text_output_of_create_says_what_to_do_next(app: Flask, account_id: str) -> None:
    code, out = _invoke(app, "sources", "create", "--connector", "stripe", "--project", "default")
    assert code == 0, out
    sid = re.search(r"created source (src_\w+)", out)
    assert sid is not None and f"webhook URL: http://127.0.0.1:8000/webhooks/{sid.group(1)}" in out
    assert f"tributary sources secret add {sid.group(1)}" in out
