"""The web processes' gunicorn worker (app/web_worker.py) on real gunicorn processes: keep-alive and
pipelined requests, connections that hold no thread while they send nothing, the idle timeout, the
cap on connections, and a stop that finishes what is in progress. (tests/app/test_web_server.py
runs the shipped configuration's other promises on it: slow clients, JSON refusals, access log.)"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(home: Path, *options: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The shipped configuration with one process and `options`; its port and process."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBUTARY_", "DATABASE_", "REDIS_"))}
    env.update(TRIBUTARY_HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    args = ["-c", "python:tributary.app.gunicorn_conf", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, *options, "tributary.app.wsgi:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=2) as probe,
            ):
                probe.sendall(HEALTHZ)
                if read_response(probe)[0] == 200:
                    break
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield port, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.stderr is not None
        log = process.stderr.read().decode(errors="replace")
        assert "SharedEpollWorker" in log, "the shipped configuration did not run the worker under test"
        assert "unexpected error" not in log, log


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response from a connection: (status, headers in lower case, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    assert len(body) == length, "more than one response arrived: a request was answered twice"
    return int(lines[0].split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_keep_alive_and_pipelined_requests_are_each_answered_once(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, "--threads", "2") as (port, _),
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        for _ in range(5):
            sock.sendall(HEALTHZ)
            status, headers, _body = read_response(sock)
            assert status == 200 and headers.get("connection", "").lower() != "close"
        # Three requests in one write: the second and third are read ahead with the first and
        # never make the socket readable again.
        sock.sendall(HEALTHZ * 3)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, "closed before the pipelined requests were answered"
            data += chunk
        assert data.count(b"HTTP/1.1 ") == 3


def test_connections_that_send_nothing_hold_no_thread(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "--threads", "2") as (port, _):
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        try:
            time.sleep(0.3)  # accepted, each waiting for a request that does not come
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(HEALTHZ)
                assert read_response(sock)[0] == 200
            # gthread held a thread up to 5 s for each new connection before it gave up on it.
            assert time.monotonic() - started < 1.0
        finally:
            for sock in silent:
                sock.close()


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, "--keep-alive", "1") as (port, _),
        socket.create_connection(("127.0.0.1", port), timeout=5) as used,
        socket.create_connection(("127.0.0.1", port), timeout=5) as unused,
    ):
        used.sendall(HEALTHZ)
        assert read_response(used)[0] == 200
        assert not closed_within(used, 0.5)
        assert closed_within(used, 3.0)
        assert closed_within(unused, 1.0)


def test_with_keep_alive_off_a_new_connection_still_has_time_to_send_its_request(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, "--keep-alive", "0") as (port, _),
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        time.sleep(1.5)  # past the next sweep of idle connections
        sock.sendall(HEALTHZ)
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection", "").lower() == "close"


def test_no_more_than_worker_connections_are_served_at_once(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "--worker-connections", "3", "--keep-alive", "30") as (port, _):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
                late.sendall(HEALTHZ)
                late.settimeout(0.7)
                with pytest.raises(TimeoutError):
                    late.recv(1)  # in the kernel's backlog: the process is full
                held.pop().close()
                late.settimeout(5)
                assert read_response(late)[0] == 200
        finally:
            for sock in held:
                sock.close()


def test_a_stop_finishes_the_request_in_progress_and_closes_idle_connections(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "--keep-alive", "30") as (port, process):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as idle,
            socket.create_connection(("127.0.0.1", port), timeout=5) as busy,
        ):
            idle.sendall(HEALTHZ)
            assert read_response(idle)[0] == 200
            # Half its head: a thread is reading it when the stop comes, the app has not seen it.
            busy.sendall(HEALTHZ[:20])
            time.sleep(0.3)
            os.killpg(process.pid, signal.SIGTERM)
            time.sleep(0.5)
            busy.sendall(HEALTHZ[20:])
            status, headers, _ = read_response(busy)
            assert status == 200  # answered in full, and told it is the last
            assert headers.get("connection", "").lower() == "close"
            assert closed_within(busy, 2.0)
            assert closed_within(idle, 5.0)
        assert process.wait(timeout=15) == 0


def test_without_epoll_the_configuration_runs_gthread(monkeypatch: pytest.MonkeyPatch) -> None:
    from tributary.app import gunicorn_conf

    assert gunicorn_conf.worker_class == "tributary.app.web_worker.SharedEpollWorker"
    monkeypatch.delattr(select, "epoll")
    try:
        assert importlib.reload(gunicorn_conf).worker_class == "gthread"
    finally:
        monkeypatch.undo()
        importlib.reload(gunicorn_conf)
