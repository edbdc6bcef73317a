"""`tributary import csv`: every row checked first; bad rows named and nothing written."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import customer, identify
from tributary.app.cli import cli
from tributary.models import Customer, Event
from tributary.runtime.process import Runtime

GOOD = """email,name,status,params.plan,params.seats,params.flags,created_at
Ada@Example.com,Ada Lovelace,paid,pro,3,"{""beta"": true}",2026-01-02T03:04:05Z
grace@example.com,Grace Hopper,trial,"""
GOOD += """"free",,,
linus@example.com,,,,,,
"""


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    importlib.import_module("tributary.app.cli.imports")
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def _count(runtime: Runtime, model: type) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_csv_import_types_params_and_is_idempotent(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(GOOD)
    code, out = _invoke(app, "import", "csv", str(path), "--project", "default", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["counts"]["created"] == 3 and summary["state"] == "completed"
    token = admin["Authorization"].split()[1]
    ada = customer(client, token, "ada@example.com")
    assert ada["name"] == "Ada Lovelace"
    assert ada["projects"]["default"]["status"] == "paid"
    assert ada["projects"]["default"]["params"] == {"plan": "pro", "seats": 3, "flags": {"beta": True}}
    assert ada["projects"]["default"]["first_seen_at"] == "2026-01-02T03:04:05.000000Z"
    grace = customer(client, token, "grace@example.com")["projects"]["default"]
    assert grace["status"] == "trial" and grace["params"] == {"plan": "free"}
    timeline = client.get(f"/v1/customers/{ada['id']}/timeline", headers=admin).get_json()
    assert [e["event"]["channel"] for e in timeline["data"]] == ["import"]

    code, out = _invoke(app, "import", "csv", str(path), "--json")
    assert code == 0, out
    again = json.loads(out)["counts"]
    assert again["stored"] == 0 and again["unchanged"] == 3


def test_csv_with_bad_rows_writes_nothing_and_names_them(
    app: Flask, runtime: Runtime, account_id: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "email,name,status,params.score,created_at\n"
        "ok@example.com,Ok,paid,1,\n"
        "not-an-email,X,paid,1,\n"
        "b@example.com,B,Paid Plan,1,\n"
        "c@example.com,C,paid,NaN,\n"  # not JSON: the text NaN
        "d@example.com,D,paid,null,\n"
        "e@example.com,E,paid,1,yesterday\n"
        "f@example.com,F,paid\n"
    )
    code, out = _invoke(app, "import", "csv", str(path))
    assert code == 1
    assert "5 bad row(s); nothing was imported" in out
    for row in (
        "row 3: email 'not-an-email'",
        "row 4: status 'Paid Plan'",
        "row 6: params.score is null",
        "row 7: created_at 'yesterday'",
        "row 8: has 3 cells",
    ):
        assert row in out, row
    assert "Traceback" not in out
    assert _count(runtime, Event) == 0 and _count(runtime, Customer) == 0


def test_csv_header_errors_and_dry_run(app: Flask, runtime: Runtime, account_id: str, tmp_path: Path) -> None:
    path = tmp_path / "typo.csv"
    path.write_text("email,nmae\na@example.com,A\n")
    code, out = _invoke(app, "import", "csv", str(path))
    assert code == 1 and "unknown column(s) 'nmae'" in out
    path.write_text("email,name\na@example.com,A\nb@example.com,B\n")
    code, out = _invoke(app, "import", "csv", str(path), "--dry-run", "--json")
    assert code == 0, out
    assert json.loads(out)["counts"]["stored"] == 2
    assert _count(runtime, Event) == 0


def test_a_csv_row_does_not_overwrite_newer_api_state(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    token = admin["Authorization"].split()[1]
    identify(client, token, email="ada@example.com", status="churned", timestamp="2026-06-01T00:00:00Z")
    path = tmp_path / "old.csv"
    path.write_text("email,status,created_at\nada@example.com,paid,2026-01-01T00:00:00Z\n")
    code, out = _invoke(app, "import", "csv", str(path))
    assert code == 0, out
    assert customer(client, token, "ada@example.com")["projects"]["default"]["status"] == "churned"
