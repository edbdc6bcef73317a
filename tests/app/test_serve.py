"""`tributary serve`, the README's first command: a real process, real HTTP, the embedded default."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _until(stream: IO[str], text: str) -> list[str]:
    """Lines up to the one containing `text` (the worker's log lines may come first)."""
    lines: list[str] = []
    while not lines or text not in lines[-1]:
        line = stream.readline()
        assert line, f"{text!r} never printed: {lines}"
        lines.append(line)
    return lines


def test_serve_runs_web_and_worker_on_the_embedded_default(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TRIBUTARY_HOME"] = str(tmp_path / "home")
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
        lines = _until(process.stdout, "Admin API key")
        assert f"running at http://127.0.0.1:{port}" in lines[-2]
        match = re.search(r"(trb_[A-Za-z0-9]+)", lines[-1])
        assert match, lines
        key, base = match.group(1), f"http://127.0.0.1:{port}"
        # The URL is printed only once the server answers: no retry needed.
        assert _call("GET", f"{base}/healthz", key) == (200, {"status": "ok"})
        deadline = time.monotonic() + 30
        while True:
            try:
                if _call("GET", f"{base}/readyz", key)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        status, accepted = _call(
            "POST", f"{base}/v1/identify", key, {"email": "ada@example.com", "status": "trial"}
        )
        assert status == 202 and accepted["event_id"].startswith("evt_")
        deadline = time.monotonic() + 30
        while (found := _call("GET", f"{base}/v1/customers/ada@example.com", key))[0] != 200:
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        assert found[1]["projects"]["default"]["status"] == "trial"
        # One rule for webhook URLs: the CLI, run beside `serve`, prints the port the API prints.
        status, api_source = _call("POST", f"{base}/v1/sources", key, {"connector": "stripe"})
        assert status == 201 and api_source["url"].startswith(f"{base}/webhooks/src_")
        cli = subprocess.run(
            [
                sys.executable,
                "-P",
                "-m",
                "tributary.app.cli",
                "sources",
                "create",
                "--connector",
                "stripe",
                "--json",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(cli.stdout)["url"].startswith(f"{base}/webhooks/src_")
        assert (tmp_path / "home" / "tributary.db").exists() and (tmp_path / "home" / "redis.sock").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    # Everything it started is gone, the embedded Redis included.
    assert not (tmp_path / "home" / "redis.sock").exists()


def test_second_start_keeps_data_and_prints_no_new_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TRIBUTARY_HOME"] = str(tmp_path / "home")
    outputs = []
    for _ in range(2):
        process = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "tributary.app.cli",
                "serve",
                "--port",
                str(_free_port()),
                "--web-workers",
                "1",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        first = "".join(_until(process.stdout, "running at"))
        os.killpg(process.pid, signal.SIGTERM)
        rest = process.stdout.read()
        process.wait(timeout=30)
        outputs.append(first + rest)
    assert "Admin API key" in outputs[0]
    assert "Admin API key" not in outputs[1]


def test_serve_on_a_taken_port_fails_clearly_and_prints_no_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TRIBUTARY_HOME"] = str(tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-P", "-m", "tributary.app.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
            check=False,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "running at" not in result.stdout and "Traceback" not in result.stderr
