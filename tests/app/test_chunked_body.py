"""A chunked request body (no Content-Length) over the limit is a 413 under the real server, as a
sized one is: werkzeug's stream used to stop quietly at the limit, so the view parsed a truncated
body and answered 400."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.helpers import make_key
from tributary.runtime.process import Runtime

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(subprocess_env: dict[str, str], runtime: Runtime) -> Iterator[int]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "tributary.app.wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        command, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _chunked_post(port: int, key: str, body: bytes) -> tuple[int, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        connection.request("POST", "/v1/identify", body=chunks, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_chunked_bodies_under_gunicorn(server: int, runtime: Runtime) -> None:
    key = make_key(runtime, ["ingest"])
    small = json.dumps({"email": "a@example.com", "name": "A"}).encode()
    status, answer = _chunked_post(server, key, small)
    assert status == 202, answer
    big = json.dumps({"email": "a@example.com", "name": "x" * (LIMIT + 1000)}).encode()
    status, answer = _chunked_post(server, key, big)
    assert status == 413, answer
    assert answer == {
        "error": {"code": "payload_too_large", "message": f"the request body is larger than {LIMIT} bytes"}
    }
