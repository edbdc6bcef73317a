"""Faults with real processes: concurrent workers, a worker SIGKILLed mid-batch, Redis lost."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth, identify, outage_redis
from tributary.app import create_app
from tributary.models import Customer, Event, TimelineEntry
from tributary.runtime import doorbell
from tributary.runtime.process import Runtime
from tributary.workers.sweep import sweep

pytestmark = pytest.mark.slow

WORKER = [sys.executable, "-P", "-m", "tributary.app.cli", "worker"]


def _count(runtime: Runtime, model: type, *where: object) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def workers(subprocess_env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by a test; each in its own session so the cleanup also kills
    the RQ scheduler child that a worker forks (and that survives a SIGKILL of its parent)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*WORKER, *args], env=env, start_new_session=True)


def _exactly_once(runtime: Runtime, events: int) -> None:
    assert _count(runtime, Event, Event.status == "processed") == events
    assert _count(runtime, TimelineEntry) == events
    with runtime.db.session() as session:
        per_event = session.execute(
            select(TimelineEntry.event_id, func.count())
            .group_by(TimelineEntry.event_id)
            .having(func.count() > 1)
        ).all()
    assert per_event == []


def test_threads_identifying_one_email_with_two_workers_running_make_one_customer(
    app: Flask,
    admin_key: str,
    runtime: Runtime,
    subprocess_env: dict[str, str],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    for _ in range(2):
        workers.append(_start(subprocess_env))
    threads, per_thread = 8, 25
    errors: list[object] = []

    def hammer(n: int) -> None:
        client = app.test_client()
        for i in range(per_thread):
            response = client.post(
                "/v1/identify",
                json={"email": "Same@Example.com", "params": {f"t{n}": i}, "name": f"thread {n}"},
                headers=auth(admin_key),
            )
            if response.status_code != 202:
                errors.append(response.get_json())

    pool = [threading.Thread(target=hammer, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    total = threads * per_thread
    _wait_for(lambda: _count(runtime, Event, Event.status != "pending") == total)
    assert _count(runtime, Customer) == 1
    _exactly_once(runtime, total)
    record = app.test_client().get("/v1/customers/same@example.com", headers=auth(admin_key)).get_json()
    assert record["projects"]["default"]["params"] == {f"t{n}": per_thread - 1 for n in range(threads)}


def test_worker_killed_mid_batch_loses_nothing_and_applies_once(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    subprocess_env: dict[str, str],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    total = 120
    for i in range(total):
        identify(client, admin_key, email=f"k{i % 30}@example.com", params={"i": i})
    marker = tmp_path / "failpoint"
    doomed = _start(
        {
            **subprocess_env,
            "TRIBUTARY_FAILPOINT": "batch.before_commit",
            "TRIBUTARY_FAILPOINT_FILE": str(marker),
        }
    )
    workers.append(doomed)
    _wait_for(marker.exists, timeout=60)
    # The batch is applied inside its transaction and paused before COMMIT: kill it there.
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    assert _count(runtime, Event, Event.status == "pending") == total
    assert _count(runtime, Customer) == 0

    # The killed worker's drain job died with it. A new worker's periodic sweep finds the stranded
    # events (the doomed worker may hold this interval's sweep lock: the next interval runs it).
    workers.append(
        _start(
            {**subprocess_env, "TRIBUTARY_SWEEP_AFTER_SECONDS": "0", "TRIBUTARY_SWEEP_INTERVAL_SECONDS": "2"}
        )
    )
    _wait_for(lambda: _count(runtime, Event, Event.status == "processed") == total)
    assert _count(runtime, Customer) == 30
    _exactly_once(runtime, total)
    with runtime.db.session() as session:
        assert set(session.scalars(select(Event.attempts))) == {1}


def test_redis_flushed_after_ingest_the_sweeper_recovers_every_event(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: object
) -> None:
    total = 60
    for i in range(total):
        identify(client, admin_key, email=f"f{i}@example.com")
    doorbell.settle_all()  # the web process rang...
    runtime.redis.flushdb()  # ...then the drain job and the doorbell are gone
    drain()  # type: ignore[operator]  # nothing queued: nothing happens
    assert _count(runtime, Event, Event.status == "pending") == total
    assert sweep(runtime, older_than=timedelta(0)) == total
    drain()  # type: ignore[operator]
    assert _count(runtime, Event, Event.status == "processed") == total
    assert _count(runtime, Customer) == total


def test_redis_down_at_ingest_still_accepts_and_the_sweeper_catches_up(
    runtime: Runtime, admin_key: str, drain: object
) -> None:
    # Same database, but Redis unreachable (nothing listens on port 1).
    broken = Runtime(runtime.settings, db=runtime.db, redis=outage_redis(socket_connect_timeout=0.2))
    client = create_app({"TESTING": True}, runtime=broken).test_client()
    for i in range(5):
        response = client.post("/v1/identify", json={"email": f"d{i}@example.com"}, headers=auth(admin_key))
        assert response.status_code == 202, response.get_json()
    # No request waited on Redis (the doorbell rings from its own thread), and the ring's failure
    # opened the doorbell's breaker, so the rings owed meanwhile do not wait on it either.
    assert doorbell.coalescer(broken).settle()
    assert broken.doorbell_paused_until > time.monotonic()
    assert _count(runtime, Event, Event.status == "pending") == 5
    assert sweep(runtime, older_than=timedelta(0)) == 5
    drain()  # type: ignore[operator]
    assert _count(runtime, Customer) == 5


def test_database_down_is_a_503_so_the_sender_retries(runtime: Runtime, admin_key: str) -> None:
    from tributary.models import Database

    dead = Runtime(
        runtime.settings, db=Database("postgresql+psycopg://nobody@127.0.0.1:1/none"), redis=runtime.redis
    )
    client = create_app({"TESTING": True}, runtime=dead).test_client()
    response = client.post("/v1/identify", json={"email": "a@example.com"}, headers=auth(admin_key))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"]
