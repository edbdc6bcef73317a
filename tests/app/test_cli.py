"""The `tributary` CLI against the real database."""

from __future__ import annotations

import importlib
import json

from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import auth, identify
from tributary.app.cli import cli


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    for module in ("admin", "db", "run"):  # registers the commands, as main() does
        importlib.import_module(f"app.cli.{module}")
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_keys_create_json_shows_the_secret_once_and_it_works(
    app: Flask, client: FlaskClient, account_id: str
) -> None:
    code, out = _invoke(app, "keys", "create", "--scope", "ingest,read", "--json")
    assert code == 0, out
    created = json.loads(out)
    assert created["scopes"] == ["ingest", "read"]
    identify(client, created["key"], email="a@example.com")
    code, out = _invoke(app, "keys", "list", "--json")
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    code, out = _invoke(app, "keys", "revoke", created["id"])
    assert code == 0
    assert (
        client.post("/v1/ping", json={"email": "a@example.com"}, headers=auth(created["key"])).status_code
        == 401
    )


def test_keys_create_rejects_unknown_scopes_and_projects(app: Flask, account_id: str) -> None:
    assert _invoke(app, "keys", "create", "--scope", "root")[0] != 0
    code, out = _invoke(app, "keys", "create", "--scope", "read", "--project", "nope")
    assert code != 0 and "nope" in out


def test_projects_create_and_list(app: Flask, account_id: str) -> None:
    code, out = _invoke(app, "projects", "create", "shop", "--name", "The Shop", "--json")
    assert code == 0 and json.loads(out)["slug"] == "shop"
    assert _invoke(app, "projects", "create", "shop")[0] != 0
    assert _invoke(app, "projects", "create", "Bad Slug")[0] != 0
    code, out = _invoke(app, "projects", "list", "--json")
    assert sorted(p["slug"] for p in json.loads(out)) == ["default", "shop"]


def test_db_upgrade_is_idempotent(app: Flask) -> None:
    code, out = _invoke(app, "db", "upgrade")
    assert code == 0 and out.startswith("database is up to date (")
    assert _invoke(app, "db", "upgrade")[0] == 0


def test_sweep_command(app: Flask, client: FlaskClient, admin_key: str) -> None:
    identify(client, admin_key, email="a@example.com")
    code, out = _invoke(app, "sweep", "--older-than", "0")
    assert code == 0 and out.startswith("1 pending")
