"""The web process rings the doorbell at most once per window while its requests overlap, and
never leaves a committed event without a ring after it: a burst is applied by the worker's drain
job, not by the sweeper (which only looks at events older than `sweep_after_seconds`)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth, identify
from tributary.models import Event
from tributary.runtime import doorbell
from tributary.runtime.process import Runtime


def _count(runtime: Runtime, *where: Any) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event).where(*where)) or 0)


def test_one_request_at_a_time_rings_every_time(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    bell = doorbell.coalescer(runtime)
    before = bell.rings
    for i in range(5):
        identify(client, admin_key, email=f"s{i}@example.com")
        assert bell.rings == before + i + 1
    drain()
    assert _count(runtime, Event.status == "processed") == 5


def test_rings_are_held_back_while_a_store_is_in_flight_and_the_last_one_out_rings(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bell = doorbell.coalescer(runtime)
    monkeypatch.setattr(bell, "window", 3600.0)
    before = bell.rings
    with doorbell.stored(runtime):  # another request, still storing
        monkeypatch.setattr(bell, "_last", time.monotonic())  # and a ring just happened
        for i in range(20):
            identify(client, admin_key, email=f"h{i}@example.com")
        assert bell.rings == before
        assert len(runtime.queue) == 0
    assert bell.rings == before + 1  # owed by the 20 commits, paid when the store in flight ended
    assert len(runtime.queue) == 1
    drain()
    assert _count(runtime, Event.status == "processed") == 20


def test_a_duplicate_or_a_failed_store_owes_no_ring(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    bell = doorbell.coalescer(runtime)
    identify(client, admin_key, email="d@example.com", message_id="m1")
    before = bell.rings
    identify(client, admin_key, email="d@example.com", message_id="m1")  # a duplicate
    with pytest.raises(RuntimeError), doorbell.stored(runtime):
        raise RuntimeError("the INSERT failed")
    assert bell.rings == before


def test_a_concurrent_burst_is_applied_by_the_drain_job_not_the_sweeper(
    app: Flask, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    bell = doorbell.coalescer(runtime)
    before = bell.rings
    threads, per_thread = 8, 25
    errors: list[str] = []

    def send(n: int) -> None:
        client = app.test_client()
        for i in range(per_thread):
            response = client.post(
                "/v1/identify", json={"email": f"b{n}-{i}@example.com"}, headers=auth(admin_key)
            )
            if response.status_code != 202:
                errors.append(response.get_data(as_text=True))

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert 1 <= bell.rings - before <= threads * per_thread
    drain()
    assert _count(runtime) == threads * per_thread
    assert _count(runtime, Event.status == "processed") == threads * per_thread


def test_a_ring_whose_enqueue_fails_gives_the_doorbell_back(runtime: Runtime) -> None:
    """Redis refuses the job (here: its queue key holds the wrong type) after the doorbell was set:
    the key is removed, so the next ring after the breaker queues a job instead of waiting out the
    key's TTL with only the sweeper working."""
    queue_key = runtime.queue.key
    runtime.redis.set(queue_key, "not a list")
    assert doorbell.ring(runtime) is False
    assert runtime.redis.exists(doorbell.DOORBELL_KEY) == 0
    runtime.redis.delete(queue_key)
    runtime.doorbell_paused_until = 0.0  # the breaker's pause, over
    assert doorbell.ring(runtime) is True
    assert len(runtime.queue) == 1
