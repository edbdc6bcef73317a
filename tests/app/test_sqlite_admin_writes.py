"""On SQLite, the API's and the CLI's changes wait for the write lock up front (BEGIN IMMEDIATE): a
deferred transaction that had read before another process committed could not wait for the lock
and failed at once with "database is locked" (a key revocation while `tributary serve`'s worker
drained, 3 times in 12)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient

import tributary.app.cli.ops  # noqa: F401 - registers the command groups, as main() does
from tests.helpers import auth, identify, make_key
from tributary.app.cli import cli
from tributary.runtime.process import Runtime

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _sqlite_only(runtime: Runtime) -> None:
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's transactions wait for row locks, whatever they read first")


def _while_another_process_commits(runtime: Runtime, change: Callable[[], T]) -> T:
    """Run `change` while another connection holds the write lock with a change it has not
    committed yet, and commit that change while `change` waits."""
    other = sqlite3.connect(
        runtime.db.engine.url.database or "", isolation_level=None, check_same_thread=False
    )
    outcome: list[T] = []
    thread = threading.Thread(target=lambda: outcome.append(change()))
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE accounts SET name = name")
        thread.start()
        thread.join(0.3)  # the change is waiting meanwhile (it read nothing before the lock)
        other.execute("COMMIT")
        thread.join(10)
    finally:
        other.close()
    assert outcome, "the change did not finish"
    return outcome[0]


def test_a_revocation_waits_for_another_process_that_commits_meanwhile(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    token = make_key(runtime, ["ingest"])
    listed = client.get("/v1/keys", headers=auth(admin_key)).get_json()["data"]
    key_id = next(key["id"] for key in listed if token.startswith(key["prefix"]))
    response = _while_another_process_commits(
        runtime, lambda: client.delete(f"/v1/keys/{key_id}", headers=auth(admin_key))
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["revoked_at"] is not None
    refused = client.post("/v1/identify", json={"email": "late@example.com"}, headers=auth(token))
    assert refused.status_code == 401


def test_a_cli_cancellation_waits_for_another_process_that_commits_meanwhile(
    app: Flask, client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    identify(client, admin_key, email="replayed@example.com", status="trial")
    drain()
    runner = app.test_cli_runner()
    queued = runner.invoke(cli, ["events", "replay", "--connector", "identify", "--background", "--json"])
    assert queued.exit_code == 0, queued.output
    replay_id = json.loads(queued.output)["id"]
    result = _while_another_process_commits(
        runtime, lambda: runner.invoke(cli, ["replays", "cancel", replay_id])
    )
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.output
    shown = runner.invoke(cli, ["replays", "show", replay_id, "--json"])
    assert json.loads(shown.output)["state"] == "cancelled"
