"""The shipped gunicorn configuration (`app/gunicorn_conf.py`) on a real gunicorn process: slow
clients do not starve it, gunicorn's own refusals are JSON in the API's error shape, and each
request is a line of the access log on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 8
ATTACK_SECONDS = 6.0
PROBE_EVERY = 0.25
PROBE_TIMEOUT = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = PROBE_TIMEOUT) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`gunicorn -c python:tributary.app.gunicorn_conf tributary.app.wsgi:app`, the Procfile's line,
    on a free port, with the same 2 processes `tributary serve` starts: its address and the file
    its stdout goes to."""
    port = _free_port()
    stdout = tmp_path_factory.mktemp("log") / "stdout.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBUTARY_", "DATABASE_", "REDIS_"))}
    env.update(TRIBUTARY_HOME=str(tmp_path_factory.mktemp("home")), PORT=str(port), WEB_CONCURRENCY="2")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:tributary.app.gunicorn_conf",
                "tributary.app.wsgi:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"{base}/healthz") == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield base, stdout
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(served: tuple[str, Path]) -> str:
    return served[0]


def test_each_request_is_a_line_of_the_access_log(served: tuple[str, Path]) -> None:
    base, stdout = served
    path = f"/healthz?probe={uuid.uuid4().hex}"
    assert _get(f"{base}{path}") == 200
    # gunicorn's combined format (`AccessLogger` writes it, app/access_log.py).
    expected = re.compile(
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        + re.escape(f'"GET {path} HTTP/1.1" 200 ')
        + r'\d+ "-" "Python-urllib/[\d.]+"'
    )
    deadline = time.monotonic() + 10
    while not any(expected.fullmatch(line) for line in stdout.read_text().splitlines()):
        assert time.monotonic() < deadline, f"no access line for {path} in:\n{stdout.read_text()[-2000:]}"
        time.sleep(0.1)


def _slow_client(port: int, stop: threading.Event) -> None:
    """Slowloris: a request that never ends, one byte at a time."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
        for byte in request:
            if stop.is_set():
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # the server hung up on us: fine
            stop.wait(0.5)


def test_slow_clients_do_not_starve_healthz(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    stop = threading.Event()
    attackers = [threading.Thread(target=_slow_client, args=(port, stop)) for _ in range(SLOW_CLIENTS)]
    for thread in attackers:
        thread.start()
    answered, probes, worst = 0, 0, 0.0
    try:
        time.sleep(1.0)  # every attacker is connected and trickling
        end = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < end:
            probes += 1
            started = time.monotonic()
            with contextlib.suppress(OSError):
                answered += _get(f"{server}/healthz") == 200
            worst = max(worst, time.monotonic() - started)
            time.sleep(PROBE_EVERY)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=10)
    print(
        f"{SLOW_CLIENTS} slow clients, {ATTACK_SECONDS:.0f} s: {answered}/{probes} probes, worst {worst:.3f}s"
    )
    assert answered == probes, f"{answered} of {probes} /healthz probes answered under the attack"


def _raw(port: int, request: bytes) -> tuple[int, str, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /healthz?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431, "headers_too_large"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line", "header-count", "header-size", "bad-version"],
)
def test_gunicorn_refusals_are_json(server: str, request_bytes: bytes, status: int, code: str) -> None:
    got, content_type, body = _raw(int(server.rsplit(":", 1)[1]), request_bytes)
    assert (got, content_type) == (status, "application/json")
    assert isinstance(body["error"], dict) and body["error"]["code"] == code and body["error"]["message"]
