"""A real Tributary for the session: `tributary serve` on a free port with its own TRIBUTARY_HOME
(embedded SQLite + Redis, one web process and one worker), and its printed admin key."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    url: str
    admin_key: str

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {key or self.admin_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def key(self, scopes: list[str], project: str | None = None) -> str:
        status, created = self.call("POST", "/v1/keys", {"scopes": scopes, "project": project})
        assert status == 201, created
        return str(created["key"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(check: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll until `check` returns something truthy: the worker applies events asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if importlib.util.find_spec("tributary.app.cli") is None:
        pytest.skip("the Tributary server is not installed (pip install -e . at the repository root)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TRIBUTARY_HOME"] = str(tmp_path_factory.mktemp("tributary-home"))
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "tributary.app.cli", "serve", "--port", str(port), "--web-workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        # The banner comes once the server answers; the worker's log lines may come before it.
        lines: list[str] = []
        while not (match := re.search(r"Admin API key.*?(trb_[A-Za-z0-9]+)", lines[-1] if lines else "")):
            lines.append(process.stdout.readline())
            assert lines[-1] and len(lines) < 200, lines
        running = Server(f"http://127.0.0.1:{port}", match.group(1))

        def ready() -> bool:
            try:
                return running.call("GET", "/readyz")[0] == 200
            except OSError:
                return False

        eventually(ready, timeout=30)
        yield running
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A per-test tag for emails and params, so tests share one server without seeing each other."""
    return re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-30:] + str(time.monotonic_ns())[-6:]


def pytest_configure(config: pytest.Config) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
