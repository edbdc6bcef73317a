"""Web servers under the shipped gunicorn configuration, readiness, and storing events through the API."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.constants import GUNICORN_CONF
from bench.harness import REPO, Processes, free_port
from bench.procstat import process_tree, vm_hwm_kib


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    payload: Any = None,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    try:
        body = None if payload is None else json.dumps(payload)
        conn.request(method, path, body, all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post_identify(port: int, token: str, payload: Mapping[str, Any], timeout: float = 30.0) -> int:
    return request(port, "POST", "/v1/identify", token, payload, timeout)[0]


@dataclass
class Server:
    name: str
    label: str
    port: int
    proc: subprocess.Popen[bytes]
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def record_peak_rss(self) -> None:
        master = self.proc.pid
        for pid in self.pids():
            hwm = vm_hwm_kib(pid)
            if hwm is not None:
                self.peak_rss_kib["master" if pid == master else f"worker {len(self.peak_rss_kib)}"] = hwm


def gunicorn_args(app: str, port: int, workers: int | None) -> list[str]:
    """The shipped server configuration (the Procfile's `web` line, `gunicorn -c
    python:tributary.app.gunicorn_conf`),
    for Tributary and the bare app alike; only the address (and, when asked, the process count) is
    given on the command line, which gunicorn lets win over the file."""
    args = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, app, "--bind", f"127.0.0.1:{port}"]
    if workers is not None:
        args += ["--workers", str(workers)]
    return [*args, "--chdir", str(REPO)]


def start_server(
    procs: Processes,
    name: str,
    label: str,
    app: str,
    env: Mapping[str, str],
    workers: int | None,
    token: str,
) -> Server:
    port = free_port()
    proc = procs.start(name, gunicorn_args(app, port, workers), env)
    wait_ready(proc, name, port, token)
    return Server(name, label, port, proc)


def wait_ready(proc: subprocess.Popen[bytes], name: str, port: int, token: str) -> None:
    """Until a valid identify is accepted; then one request per worker process and then some, so each
    has imported the app before anything is measured."""
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start (see its log)")
        with contextlib.suppress(OSError):
            status = post_identify(port, token, {"email": "ready@example.com"}, timeout=5.0)
            if status == 202:
                break
            if status != 503:
                raise RuntimeError(f"{name} answered {status} to a valid identify")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer within 90 s")
        time.sleep(0.2)
    for _ in range(8 * max(1, len(process_tree(proc.pid)))):
        post_identify(port, token, {"email": "ready@example.com"})


def seed_batches(
    port: int, token: str, count: int, prefix: str, per_request: int = 100, threads: int = 4
) -> float:
    """Store `count` identify events through `POST /v1/batch`, `per_request` at a time, each with a
    message_id (a retried request stores nothing twice). Much faster than one request per event, so
    the drain phases spend their time draining. Returns seconds taken; callers count what was stored."""
    starts = iter(range(0, count, per_request))
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while not errors:
            with lock:
                start = next(starts, None)
            if start is None:
                return
            batch = [
                {
                    "type": "identify",
                    "email": f"{prefix}-{i}@example.com",
                    "name": "Drain Bench",
                    "status": "trial",
                    "params": {"plan": "pro", "seats": i % 50},
                    "message_id": f"{prefix}-{i}",
                }
                for i in range(start, min(count, start + per_request))
            ]
            for attempt in range(8):
                try:
                    status, _ = request(port, "POST", "/v1/batch", token, {"batch": batch})
                except OSError as exc:
                    status, reason = 0, str(exc)
                else:
                    reason = f"HTTP {status}"
                if status == 202:
                    break
                time.sleep(0.1 * (attempt + 1))  # 429 from the limiter, or a hiccup: try again
            else:
                errors.append(f"batch at {start}: {reason}")

    started = time.monotonic()
    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=600)
    if errors or any(t.is_alive() for t in pool):
        raise RuntimeError(f"seeding failed: {errors[:3] or 'timed out'}")
    return time.monotonic() - started
