"""`tributary customers list|show`: the API's queries and shapes, on the database directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

import tributary.app.cli.customers  # noqa: F401 - registers the command group, as main() does
from tests.app.customer_data import at, create_project, listing, people
from tests.helpers import auth, customer
from tributary.app.cli import cli


def _run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(cli, ["customers", *args])


def _json(app: Flask, *args: str) -> Any:
    result = _run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def crowd(client: FlaskClient, admin_key: str, drain: Callable[[], None]) -> None:
    create_project(client, admin_key, "app")
    people(
        client,
        admin_key,
        drain,
        [
            {
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "project": "app",
                "status": "paid",
                "params": {"seats": 5, "plan": "pro"},
                "timestamp": at(3),
            },
            {
                "email": "bob@example.com",
                "name": "Bob",
                "status": "trial",
                "params": {"seats": "5"},
                "timestamp": at(2),
            },
            {"email": "cy@example.com", "project": "app", "status": "trial", "timestamp": at(1)},
        ],
    )


def test_list_json_is_the_api_envelope(app: Flask, client: FlaskClient, admin_key: str, crowd: None) -> None:
    assert _json(app, "list") == listing(client, admin_key)
    assert [c["email"] for c in _json(app, "list")["data"]] == [
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
    ]


@pytest.mark.parametrize(
    ("args", "query"),
    [
        (["--project", "app"], "?project=app"),
        (["--status", "trial"], "?status=trial"),
        (["--project", "app", "--status", "trial"], "?project=app&status=trial"),
        (["--param", "seats=5"], "?params.seats=5"),
        (["--param", 'seats="5"'], "?params.seats=%225%22"),
        (["--param", "seats=5", "--param", "plan=pro"], "?params.seats=5&params.plan=pro"),
        (["--q", "LOVE"], "?q=LOVE"),
        (["--email", "Bob@Example.com"], "?email=Bob@Example.com"),
        (["--active-since", at(2)], f"?active_since={at(2)}"),
        (["--created-since", "2000-01-01"], "?created_since=2000-01-01"),
        (["--sort", "last_activity_at"], "?sort=last_activity_at"),
        (["--sort", "created_at", "--limit", "1"], "?sort=created_at&limit=1"),
    ],
)
@pytest.mark.usefixtures("crowd")
def test_list_filters_match_the_api(
    app: Flask, client: FlaskClient, admin_key: str, args: list[str], query: str
) -> None:
    from_api = listing(client, admin_key, query)
    from_cli = _json(app, "list", *args)
    assert from_cli["data"] == from_api["data"]
    assert (from_cli["next_cursor"] is None) == (from_api["next_cursor"] is None)


def test_list_pages_with_cursor(app: Flask, crowd: None) -> None:
    first = _json(app, "list", "--limit", "2")
    rest = _json(app, "list", "--limit", "2", "--cursor", first["next_cursor"])
    assert [c["email"] for c in first["data"] + rest["data"]] == [
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
    ]
    assert rest["next_cursor"] is None
    human = _run(app, "list", "--limit", "2")
    assert human.exit_code == 0 and f"--cursor {first['next_cursor']}" in human.output


def test_list_human_output(app: Flask, crowd: None) -> None:
    result = _run(app, "list", "--project", "app")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    ada = lines[0].split("\t")
    assert ada[1:] == ["ada@example.com", "Ada Lovelace", "app:paid", "2026-01-03T00:00:00.000000Z"]
    assert ada[0].startswith("cus_")
    assert _run(app, "list", "--status", "churned").output.strip() == "no customers"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "--limit: an integer from 1 to 200"),
        (["--limit", "500"], "--limit"),
        (["--status", "Not A Slug"], "--status"),
        (["--active-since", "someday"], "--active-since: expected an ISO 8601 timestamp"),
        (["--email", "nope"], "--email"),
        (["--param", "seats=1e999"], "--param seats: the number is out of range"),
        (["--project", "nope"], "no project"),
        (["--cursor", "forged"], "cursor"),
    ],
)
def test_list_bad_input_fails_cleanly(app: Flask, crowd: None, args: list[str], message: str) -> None:
    result = _run(app, "list", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_list_usage_errors(app: Flask, crowd: None) -> None:
    for args in (["--param", "seats"], ["--sort", "name"], ["--limit", "x"]):
        result = _run(app, "list", *args)
        assert result.exit_code == 2, result.output


def test_show_json_equals_the_api(app: Flask, client: FlaskClient, admin_key: str, crowd: None) -> None:
    ada = customer(client, admin_key, "ada@example.com")
    assert _json(app, "show", "ADA@example.com") == ada
    assert _json(app, "show", ada["id"]) == ada


def test_show_human_output(app: Flask, crowd: None) -> None:
    result = _run(app, "show", "ada@example.com")
    assert result.exit_code == 0, result.output
    assert "ada@example.com  (cus_" in result.output
    assert "name:           Ada Lovelace" in result.output
    assert "project app: status paid" in result.output
    assert "seats = 5" in result.output and "plan = 'pro'" in result.output


def test_show_unknown_customer(app: Flask, crowd: None) -> None:
    for ref in ("cus_nope", "nobody@example.com", "bad@"):
        result = _run(app, "show", ref)
        assert result.exit_code == 1 and "no such customer" in result.output


def test_main_registers_the_group(client: FlaskClient, admin_key: str) -> None:
    assert "customers" in cli.commands
    assert set(cli.commands["customers"].commands) == {"list", "show"}  # type: ignore[attr-defined]
    assert client.get("/v1/customers", headers=auth(admin_key)).get_json() == {
        "data": [],
        "next_cursor": None,
    }
