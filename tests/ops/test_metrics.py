"""`/metrics` after known traffic: event counts come from the database, so any number of web
processes and workers add up exactly; request timings from every process meet in Redis."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests.helpers import auth, identify, make_key, outage_redis
from tributary.app import create_app
from tributary.models import Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(data: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return data.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> Any:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


IDENTIFY = {"route": "/v1/identify", "method": "POST", "status": "202"}


def test_counts_from_two_apps_and_two_worker_runs_add_up(
    app: Flask, runtime: Runtime, admin_key: str, drain: Callable[[], None]
) -> None:
    first, second = app.test_client(), create_app({"TESTING": True}, runtime=runtime).test_client()
    start = scrape(first)
    for index in range(7):
        identify(first, admin_key, email=f"a{index}@example.com")
    for index in range(5):
        identify(second, admin_key, email=f"b{index}@example.com")
    before = scrape(second)
    assert value(before, "tributary_pending_events") == 12
    assert value(before, "tributary_oldest_pending_age_seconds") >= 0
    drain()
    for index in range(4):
        identify(second, admin_key, email=f"c{index}@example.com")
    with runtime.db.session() as session, session.begin():  # a known latency for these four: 100 s
        session.execute(
            update(Event)
            .where(Event.status == "pending")
            .values(received_at=utcnow() - timedelta(seconds=100))
        )
    drain()
    data = scrape(first)
    count = "tributary_http_request_duration_seconds_count"
    assert value(data, count, **IDENTIFY) - value(start, count, **IDENTIFY) == 16
    assert value(data, "tributary_http_request_duration_seconds_bucket", le="+Inf", **IDENTIFY) == value(
        data, count, **IDENTIFY
    )
    assert value(data, "tributary_events", source="", connector="identify", status="processed") == 16
    assert value(data, "tributary_events_received_total", source="", connector="identify") == 16
    assert value(data, "tributary_pending_events") == 0
    assert value(data, "tributary_oldest_pending_age_seconds") == 0
    assert value(data, "tributary_processing_latency_seconds_count") == 16
    assert value(data, "tributary_processing_latency_seconds_bucket", le="+Inf") == 16
    assert value(data, "tributary_processing_latency_seconds_bucket", le="60.0") == 12
    assert value(data, "tributary_processing_latency_seconds_bucket", le="300.0") == 16
    assert value(data, "tributary_processing_latency_seconds_sum") >= 400
    assert value(data, "tributary_queue_depth", queue=runtime.settings.queue_name) == 0
    assert value(data, "tributary_failed_jobs") == 0
    # Labels are the URL rule, never the path, so a scan of random URLs adds no series. Counted from a
    # scrape just before: it flushes what this process still held of earlier tests' requests.
    rule = {"route": "/v1/events/<event_id>", "method": "GET", "status": "404"}
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    before = scrape(first)
    for index in range(3):
        first.get(f"/v1/events/evt_{index}", headers=auth(admin_key))
        first.get(f"/no/such/path/{index}")
    data = scrape(first)
    assert value(data, count, **rule) - value(before, count, **rule) == 3
    assert value(data, count, **unmatched) - value(before, count, **unmatched) == 3
    assert not any("evt_0" in dict(labels).get("route", "") for _, labels in data)
    # Scraping again changes nothing: nothing is counted by the process that answers.
    assert scrape(second) == scrape(first)


def test_rejections_and_the_token(client: FlaskClient, admin: dict[str, str], runtime: Runtime) -> None:
    from tests.connectors.stripe_helpers import create_source

    source_id = create_source(client, admin)
    for _ in range(3):
        client.post(f"/webhooks/{source_id}", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    data = scrape(client)
    assert (
        value(data, "tributary_webhook_rejections_total", source=source_id, reason="invalid_signature") == 3
    )

    token = "metrics-secret-123"
    protected = create_app({"TESTING": True}, runtime=_with(runtime, metrics_token=token)).test_client()
    assert protected.get("/metrics").status_code == 401
    assert protected.get("/metrics", headers=auth("wrong")).status_code == 401
    assert protected.get("/metrics", headers=admin).status_code == 401  # API keys are not the token
    assert protected.get("/metrics", headers=auth(token)).status_code == 200


def _with(runtime: Runtime, **settings: Any) -> Runtime:
    clone = Runtime(dataclasses.replace(runtime.settings, **settings), db=runtime.db, redis=runtime.redis)
    return clone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **(auth(key) if key else {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_two_gunicorn_workers_and_two_worker_processes_add_up_exactly(
    runtime: Runtime, subprocess_env: dict[str, str]
) -> None:
    key = make_key(runtime, ["admin"])
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "tributary.app.wsgi:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{base}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        for round_ in range(2):
            for index in range(15):
                status, body = _get(f"{base}/v1/identify", key, {"email": f"u{round_}-{index}@example.com"})
                assert status == 202, body
            worker = [sys.executable, "-m", "tributary.app.cli", "worker", "--burst"]
            subprocess.run(worker, env=subprocess_env, check=True, timeout=120, capture_output=True)
        # Each gunicorn worker adds its timings to Redis within a second; no process is asked.
        deadline = time.monotonic() + 15
        while True:
            data = samples(_get(f"{base}/metrics")[1].decode())
            if value(data, "tributary_http_request_duration_seconds_count", **IDENTIFY) >= 30:
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.3)
        assert value(data, "tributary_http_request_duration_seconds_count", **IDENTIFY) == 30
        assert value(data, "tributary_events", source="", connector="identify", status="processed") == 30
        assert value(data, "tributary_processing_latency_seconds_count") == 30
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


def test_request_timings_survive_a_redis_that_cannot_be_reached_or_started(runtime: Runtime) -> None:
    """Getting the client fails (an embedded Redis whose directory is gone raises RuntimeError), then
    the pipeline fails, then Redis is back: nothing raises out of `flush`, which the flushing thread
    calls (an exception there ended the thread and the process's timings with it), and every
    observation is added once Redis answers."""
    from redis import Redis

    from tributary.app.metrics import HTTP_KEY, SEP, RequestTimings

    def cannot_start() -> Redis:
        raise RuntimeError("embedded Redis could not start")

    unreachable = outage_redis(f"redis://127.0.0.1:{_free_port()}/0", socket_connect_timeout=0.5)
    clients: list[Callable[[], Redis]] = [
        cannot_start,
        lambda: unreachable,
        lambda: runtime.redis,
    ]
    current = [cannot_start]

    def client_now() -> Redis:
        return current[0]()

    timings = RequestTimings(client_now)
    route = "/test/timings-outage"
    prefix = SEP.join((route, "GET", "200"))
    for client in clients:
        current[0] = client
        timings.observe(route, "GET", 200, 0.003)
        timings.flush()
    assert runtime.redis.hget(HTTP_KEY, f"{prefix}{SEP}count") == b"3"
    assert runtime.redis.hget(HTTP_KEY, f"{prefix}{SEP}0") == b"3"  # all in the 5 ms bucket
    timings.flush()  # nothing pending: nothing added twice
    assert runtime.redis.hget(HTTP_KEY, f"{prefix}{SEP}count") == b"3"


def test_each_app_adds_its_timings_to_its_own_redis(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    """Timings were one per process, flushed to the Redis of the app made last: a test run's
    requests landed in another app's Redis (and once in the environment's db 0, after the harness
    had emptied its own). Each app's go to its own Redis, whichever app came after."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tributary.app.metrics import HTTP_KEY, SEP, flush_request_timings

    assert client.get("/v1/projects", headers=admin).status_code == 200
    # Refused at once, without retries: its timings stay pending, and every later flush tries again.
    elsewhere = Redis(host="127.0.0.1", port=_free_port(), retry=Retry(NoBackoff(), 0))
    other = create_app(
        {"TESTING": True}, runtime=Runtime(runtime.settings, db=runtime.db, redis=elsewhere)
    ).test_client()
    assert other.get("/healthz").status_code == 200
    flush_request_timings()
    fields = {field.decode() for field in runtime.redis.hkeys(HTTP_KEY)}
    assert SEP.join(("/v1/projects", "GET", "200", "count")) in fields
    assert not any(field.startswith("/healthz" + SEP) for field in fields)  # kept for its own Redis


@pytest.mark.timeout(60)
def test_a_process_forked_mid_flush_flushes_its_own_timings(runtime: Runtime) -> None:
    """The flushing round holds a lock while it waits on Redis; a fork taken then (a server forking
    its workers, a test forking a child) left it held in the child, where no thread would release
    it: the child's first flush waited forever. Nor may the child add the parent's pending timings
    a second time."""
    import threading

    from redis import Redis

    from tributary.app.metrics import HTTP_KEY, SEP, RequestTimings, flush_request_timings

    entered, release = threading.Event(), threading.Event()

    def slow_redis() -> Redis:
        entered.set()
        release.wait(30)
        return runtime.redis

    parent = RequestTimings(slow_redis)
    parent.observe("/test/parent", "GET", 200, 0.001)
    flushing = threading.Thread(target=flush_request_timings)
    flushing.start()
    assert entered.wait(10)  # the round is under way, its lock held
    parent.observe("/test/parent", "GET", 200, 0.001)  # pending in the parent at the fork
    pid = os.fork()
    if pid == 0:  # the child: flush its own timings, then report through the exit status
        code = 1
        try:
            child = RequestTimings(lambda: runtime.redis)
            child.observe("/test/child", "GET", 200, 0.001)
            flush_request_timings()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    release.set()
    flushing.join(10)
    flush_request_timings()
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the child's flush never returned"
    counts = {f.decode(): int(v) for f, v in runtime.redis.hgetall(HTTP_KEY).items() if f.endswith(b"count")}
    assert counts[SEP.join(("/test/child", "GET", "200", "count"))] == 1
    assert counts[SEP.join(("/test/parent", "GET", "200", "count"))] == 2  # each added once, by the parent
