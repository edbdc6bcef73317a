"""When PostgreSQL drops every connection (a restart, a failover, an operator's
`pg_terminate_backend`), the pool holds dead connections; the next request must still be
answered, without a ping round trip on every checkout, and its event stored once."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from tests.helpers import auth, make_key
from tributary.app import create_app
from tributary.models import Event
from tributary.runtime.process import Runtime


def _terminate_other_backends(url: str) -> None:
    """What a restart does to the app's connections, without restarting a shared server."""
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
            assert pids, "the app held no connection to drop"
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids})
            # Terminating is asynchronous: wait until the backends are gone (so their sockets are closed;
            # each statement its own transaction, or pg_stat_activity stays one snapshot).
            deadline = time.monotonic() + 10
            while conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": pids}
            ):
                assert time.monotonic() < deadline, "backends still alive after pg_terminate_backend"
                time.sleep(0.05)
    finally:
        admin.dispose()


def test_identify_answers_and_stores_once_after_the_database_dropped_its_connections(
    runtime: Runtime, account_id: str
) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("SQLite has no server to drop connections")
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = make_key(runtime, ["ingest"])
    assert (
        client.post("/v1/identify", json={"email": "before@example.com"}, headers=auth(token)).status_code
        == 202
    )
    # Several idle connections in the pool, as a busy process has.
    held = [runtime.db.engine.connect() for _ in range(3)]
    for conn in held:
        conn.exec_driver_sql("SELECT 1")
        conn.close()

    _terminate_other_backends(runtime.db.url)

    response = client.post(
        "/v1/identify", json={"email": "after@example.com", "message_id": "m-after"}, headers=auth(token)
    )
    assert response.status_code == 202
    # And the next ones too: every dead pooled connection is replaced as it comes out, and group
    # commit's own connection (app/event_store.py) was replaced too: the shared writes go on.
    store = client.application.extensions["tributary"].events
    shared_writes = store.batches
    for i in range(5):
        answer = client.post("/v1/identify", json={"email": f"then{i}@example.com"}, headers=auth(token))
        assert answer.status_code == 202
    assert store.batches == shared_writes + 5
    with runtime.db.session() as session:
        stored = session.scalar(
            select(func.count()).select_from(Event).where(Event.provider_event_id == "m-after")
        )
        total = session.scalar(select(func.count()).select_from(Event))
    assert stored == 1
    assert total == 7
