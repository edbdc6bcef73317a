"""Faults between the SDK and a real Tributary: a small proxy answers 429/503, closes connections
before or after forwarding (the client cannot know whether the batch was stored), or is down."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Server, eventually, free_port

from tributary_sdk import QueueFull, Tributary, TributaryError


class FaultProxy(ThreadingHTTPServer):
    """Forwards to `upstream`, except that the n-th POST /v1/batch follows `script[n]`:
    `429`, `503`, `close` (hang up before forwarding) or `lost` (forward, then hang up)."""

    daemon_threads = True

    def __init__(self, upstream: str, script: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.script = list(script)
        self.lock = threading.Lock()
        self.log: list[tuple[float, str]] = []
        self.answers: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            action = self.server.script.pop(0) if self.server.script else "forward"
            self.server.log.append((time.monotonic(), action))
        if action == "close":
            self.close_connection = True
            return
        if action in {"429", "503"}:
            payload = b'{"error": {"code": "busy", "message": "try later"}}'
            self.send_response(int(action))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if action == "429":
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(payload)
            return
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=body,
            method="POST",
            headers={"Authorization": self.headers["Authorization"], "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        with self.server.lock:
            self.server.answers.append(json.loads(answer))
        if action == "lost":
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _proxy(upstream: str, script: list[str]) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, script)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture
def proxy(server: Server, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    yield from _proxy(server.url, request.param)


@pytest.mark.parametrize("proxy", [["429", "503", "close", "lost", "503", "lost", "close"]], indirect=True)
def test_nothing_lost_nothing_duplicated_through_faults(
    server: Server, proxy: FaultProxy, unique: str
) -> None:
    errors: list[Any] = []
    client = Tributary(
        server.admin_key,
        base_url=proxy.url,
        batch_size=40,
        retry_base_delay=0.05,
        on_error=lambda e, m: errors.append(e),
    )
    emails = [f"{unique}-{n}@example.com" for n in range(200)]
    for email in emails:
        client.identify(email, params={"t": unique})
    assert client.flush(timeout=30)
    assert not errors and client.dropped == 0
    # Every message id got exactly one event id, stored once, even when an answer was lost.
    stored: dict[str, set[str]] = {}
    fresh: dict[str, int] = {}
    for answer in proxy.answers:
        for result in answer["results"]:
            stored.setdefault(result["event_id"], set())
            fresh[result["event_id"]] = fresh.get(result["event_id"], 0) + (not result["duplicate"])
    assert len(stored) == 200 and set(fresh.values()) == {1}
    assert any(r["duplicate"] for a in proxy.answers for r in a["results"])  # a lost answer was retried
    # The 429's Retry-After (1 s) was honoured before the next attempt.
    times = [t for t, _ in proxy.log]
    actions = [a for _, a in proxy.log]
    assert times[actions.index("429") + 1] - times[actions.index("429")] >= 0.95
    reader = Tributary(server.admin_key, base_url=server.url, sync=True)

    def applied() -> bool:
        return len(list(reader.customers.list(params={"t": unique}))) == 200

    eventually(applied, timeout=30)
    client.shutdown()
    reader.shutdown()


def test_memory_is_bounded_and_the_caller_never_sees_an_error_when_the_server_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[TributaryError] = []
    client = Tributary(
        "trb_anything",
        base_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        batch_size=10,
        max_queue_size=50,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        on_error=lambda e, m: errors.extend([e] * len(m)),
    )
    with caplog.at_level(logging.WARNING, logger="tributary_sdk"):
        for n in range(1000):
            client.identify(f"user-{n}@example.com")
            assert client.queued <= 60
    assert client.dropped >= 1000 - 60
    assert sum(isinstance(e, QueueFull) for e in errors) == client.dropped
    assert any("queue full" in r.getMessage() for r in caplog.records)
    # Logged at 1, 2, 4, 8… drops, not once per message.
    assert sum("queue full" in r.getMessage() for r in caplog.records) < 15
    started = time.monotonic()
    assert client.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 8
    # Whatever was still queued is reported, not silently forgotten.
    assert len(errors) == 1000 and client.queued == 0
