"""The web process rings the doorbell from a thread of its own, at most once per window, and never
leaves a committed event without a ring after it: a burst is applied by the worker's drain job, not
by the sweeper (which only looks at events older than `sweep_after_seconds`)."""

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


def test_a_lone_commit_is_followed_by_a_ring(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    bell = doorbell.coalescer(runtime)
    for i in range(3):
        before = bell.rings
        identify(client, admin_key, email=f"s{i}@example.com")
        assert bell.settle()
        assert bell.rings == before + 1
        assert len(runtime.queue) == 1
        drain()
        assert _count(runtime, Event.status == "processed") == i + 1


def test_commits_within_a_window_share_one_ring_made_when_it_ends(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bell = doorbell.coalescer(runtime)
    identify(client, admin_key, email="first@example.com")
    assert bell.settle()
    drain()  # its job takes the doorbell down
    before = bell.rings
    monkeypatch.setattr(bell, "window", 4.0)  # the ring just made holds the next ones back
    for i in range(20):
        identify(client, admin_key, email=f"h{i}@example.com")
    assert not bell.settle(timeout=0.2)  # owed, waiting for the window to end
    assert bell.rings == before
    assert len(runtime.queue) == 0
    assert bell.settle()  # the window ends
    assert bell.rings == before + 1  # one ring for the 20 commits
    assert len(runtime.queue) == 1
    drain()
    assert _count(runtime, Event.status == "processed") == 21


def test_no_request_waits_for_redis(
    client: FlaskClient, admin_key: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ring is the thread's: a Redis that hangs does not hold up the request that owed it."""
    bell = doorbell.coalescer(runtime)
    assert bell.settle()
    release, rang = threading.Event(), threading.Event()
    real_ring = doorbell.ring

    def hanging_ring(rt: Runtime) -> bool:
        release.wait(10)
        rang.set()
        return real_ring(rt)

    monkeypatch.setattr(doorbell, "ring", hanging_ring)
    started = time.monotonic()
    identify(client, admin_key, email="quick@example.com")
    assert time.monotonic() - started < 5  # answered while the ring hangs
    assert not rang.is_set()
    release.set()
    assert bell.settle() and rang.is_set()
    assert len(runtime.queue) == 1


def test_a_duplicate_or_a_failed_store_owes_no_ring(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    bell = doorbell.coalescer(runtime)
    identify(client, admin_key, email="d@example.com", message_id="m1")
    assert bell.settle()
    before = bell.rings
    identify(client, admin_key, email="d@example.com", message_id="m1")  # a duplicate
    with pytest.raises(RuntimeError), doorbell.stored(runtime):
        raise RuntimeError("the INSERT failed")
    assert bell.settle()
    assert bell.rings == before


def test_the_ringer_ends_when_idle_and_the_next_commit_starts_another(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doorbell, "RINGER_IDLE_SECONDS", 0.05)
    bell = doorbell.coalescer(runtime)
    identify(client, admin_key, email="a@example.com")
    assert bell.settle()
    deadline = time.monotonic() + 5
    while bell._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bell._thread is None
    before = bell.rings
    identify(client, admin_key, email="b@example.com")
    assert bell.settle() and bell.rings == before + 1
    drain()
    assert _count(runtime, Event.status == "processed") == 2


def test_what_is_owed_is_rung_at_exit(
    client: FlaskClient, admin_key: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    bell = doorbell.coalescer(runtime)
    identify(client, admin_key, email="a@example.com")
    assert bell.settle()
    runtime.redis.delete(runtime.queue.key, doorbell.DOORBELL_KEY)  # the worker took the job
    monkeypatch.setattr(bell, "window", 3600.0)
    identify(client, admin_key, email="b@example.com")
    assert len(runtime.queue) == 0  # owed, held back by the window
    before = bell.rings
    doorbell.flush_all()  # registered with atexit
    assert len(runtime.queue) == 1
    assert bell.rings == before + 1


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
    assert bell.settle()
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
