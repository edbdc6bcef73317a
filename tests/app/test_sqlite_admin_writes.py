"""On SQLite, the API's changes wait for the write lock up front (BEGIN IMMEDIATE): a deferred
transaction that had read before another process committed could not wait for the lock and
failed at once with "database is locked" (a key revocation while `tributary serve`'s worker
drained, 3 times in 12)."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.helpers import auth, make_key
from tributary.runtime.process import Runtime


@pytest.fixture(autouse=True)
def _sqlite_only(runtime: Runtime) -> None:
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL's transactions wait for row locks, whatever they read first")


def test_a_revocation_waits_for_another_process_that_commits_meanwhile(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    token = make_key(runtime, ["ingest"])
    listed = client.get("/v1/keys", headers=auth(admin_key)).get_json()["data"]
    key_id = next(key["id"] for key in listed if token.startswith(key["prefix"]))
    other = sqlite3.connect(
        runtime.db.engine.url.database or "", isolation_level=None, check_same_thread=False
    )
    answer: dict[str, Any] = {}

    def revoke() -> None:
        answer["response"] = client.delete(f"/v1/keys/{key_id}", headers=auth(admin_key))

    try:
        # Another process holds the write lock with a change it has not committed yet.
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE accounts SET name = name")
        thread = threading.Thread(target=revoke)
        thread.start()
        thread.join(0.3)  # the revocation is waiting meanwhile (it read nothing before the lock)
        other.execute("COMMIT")
        thread.join(10)
    finally:
        other.close()
    response = answer["response"]
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["revoked_at"] is not None
    refused = client.post("/v1/identify", json={"email": "late@example.com"}, headers=auth(token))
    assert refused.status_code == 401
