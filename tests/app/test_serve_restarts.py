"""`tributary serve` restarts a worker that dies (real processes, the embedded default)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tributary.app.cli.run import Restarting

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _workers_of(pid: int) -> list[int]:
    """The `tributary.app.cli worker` children of process `pid`."""
    found = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, children):
        with contextlib.suppress(FileNotFoundError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"tributary.app.cli" in argv and b"worker" in argv:
                found.append(child)
    return found


def test_serve_restarts_a_worker_that_dies(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TRIBUTARY_HOME"] = str(tmp_path / "home")
    errors = tmp_path / "serve.err"
    with errors.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "tributary.app.cli",
                "serve",
                "--port",
                str(port),
                "--web-workers",
                "1",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        # The banner comes once the server answers; other output may come before it.
        line = ""
        while not line.startswith("Admin API key"):
            line = process.stdout.readline()
            assert line, "serve exited before printing its admin key"
        key = line.rsplit(" ", 1)[-1].strip()
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _call("GET", f"{base}/readyz", key)[0] == 200)
        _wait_for(lambda: len(_workers_of(process.pid)) == 1)
        (first,) = _workers_of(process.pid)

        for round_ in range(2):  # a second death too: the pause doubles, the restart still comes
            os.kill(_workers_of(process.pid)[0], signal.SIGKILL)
            _wait_for(lambda n=round_: f"(restart {n + 1})" in errors.read_text(), timeout=30)
            _wait_for(lambda: len(_workers_of(process.pid)) == 1)
        assert first not in _workers_of(process.pid)
        text = errors.read_text()
        assert "the worker exited with status -9; restarting it in 1 s" in text
        assert "restarting it in 2 s" in text

        # The restarted worker applies what arrives now.
        status, _ = _call("POST", f"{base}/v1/identify", key, {"email": "back@example.com", "name": "Back"})
        assert status == 202
        _wait_for(lambda: _call("GET", f"{base}/v1/customers/back@example.com", key)[0] == 200, timeout=30)
        assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_restarting_backs_off_while_a_child_keeps_dying(capsys: pytest.CaptureFixture[str]) -> None:
    class Quick(Restarting):
        FIRST_DELAY_S = 0.05

    child = Quick("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    child.start()
    deadline = time.monotonic() + 10
    while child.restarts < 4 and time.monotonic() < deadline:
        child.check()
        time.sleep(0.01)
    assert child.process is not None
    child.process.wait(timeout=5)
    lines = [line for line in capsys.readouterr().err.splitlines() if "exited" in line]
    assert lines[0] == "the crasher exited with status 3; restarting it in 0.05 s"
    assert child._delay == pytest.approx(0.05 * 2 ** len(lines))  # doubled at every death
