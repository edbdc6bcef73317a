"""A worker rides out a Redis outage: real worker process, a private redis-server killed and
started again (empty) on the same port while the worker runs and ingest goes on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis
from redis.exceptions import RedisError
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus
from sqlalchemy import func, select

from tests.helpers import identify, outage_redis
from tributary.app import create_app
from tributary.models import Event, TimelineEntry
from tributary.runtime.embedded_redis import redis_executable
from tributary.runtime.process import Runtime
from tributary.workers.worker import TributaryWorker

pytestmark = pytest.mark.slow

WORKER = [sys.executable, "-P", "-m", "tributary.app.cli", "worker"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


class PrivateRedis:
    """A redis-server of this test only (never the machine's shared one), without persistence:
    a restart brings it back empty, the worst case for the queue."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self.responding, timeout=10)

    def responding(self) -> bool:
        try:
            return bool(Redis.from_url(self.url, socket_timeout=0.5).ping())
        except RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def worker_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:  # its own session: the RQ scheduler it forked goes too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def worker_states(server: PrivateRedis) -> list[bytes | None]:
    redis = Redis.from_url(server.url)
    return [redis.hget(key, "state") for key in redis.smembers("rq:workers")]


def _count(runtime: Runtime, *where: object) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event).where(*where)) or 0)


def test_a_worker_rides_out_redis_dying_mid_job_and_while_idle(
    runtime: Runtime,
    admin_key: str,
    subprocess_env: dict[str, str],
    private_redis: PrivateRedis,
    worker_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    # Ingest talks to the private Redis too (same database as the test).
    ingest = Runtime(
        runtime.settings, db=runtime.db, redis=outage_redis(private_redis.url, socket_connect_timeout=0.5)
    )
    client: FlaskClient = create_app({"TESTING": True}, runtime=ingest).test_client()
    marker, release, log = tmp_path / "paused", tmp_path / "release", tmp_path / "worker.log"
    env = {
        **subprocess_env,
        "REDIS_URL": private_redis.url,
        "TRIBUTARY_SWEEP_INTERVAL_SECONDS": "2",
        "TRIBUTARY_FAILPOINT": "batch.before_commit",
        "TRIBUTARY_FAILPOINT_FILE": str(marker),
        "TRIBUTARY_FAILPOINT_RELEASE": str(release),
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(WORKER, env=env, stderr=out, start_new_session=True)
    worker_process.append(worker)

    def ingest_some(prefix: str, n: int) -> None:
        for i in range(n):
            identify(client, admin_key, email=f"{prefix}{i}@example.com", params={"i": i})

    # 1. Redis dies while the worker is inside a drain job (held at the failpoint before COMMIT).
    ingest_some("before", 10)
    wait_for(marker.exists)
    private_redis.kill()
    release.touch()
    wait_for(lambda: _count(runtime, Event.status == "processed") == 10)
    ingest_some("during", 10)  # stored; the doorbell is unreachable
    time.sleep(2)
    assert worker.poll() is None, log.read_text()

    # 2. Redis comes back empty: the worker resumes and picks up what was stored meanwhile.
    private_redis.start()
    ingest.doorbell_paused_until = 0  # as if the ingest breaker's few seconds had passed
    ingest_some("after", 10)
    wait_for(lambda: _count(runtime, Event.status == "processed") == 30)
    assert worker.poll() is None, log.read_text()
    # Its scheduler (retry jobs) died with Redis; the worker started it again on the empty server.
    lock = RQScheduler.get_locking_key(runtime.settings.queue_name)
    wait_for(lambda: bool(Redis.from_url(private_redis.url).exists(lock)), timeout=30)

    # 3. Redis dies while the worker is idle, waiting for jobs.
    private_redis.kill()
    time.sleep(2)
    private_redis.start()
    ingest.doorbell_paused_until = 0
    ingest_some("idle", 5)
    wait_for(lambda: _count(runtime, Event.status == "processed") == 35)
    assert worker.poll() is None, log.read_text()

    assert _count(runtime) == 35
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 35
        assert set(session.scalars(select(Event.attempts))) == {1}
    text = log.read_text()
    assert "lost Redis while running job" in text
    assert "Redis is back" in text
    assert "unhandled exception" not in text


def test_a_worker_entering_its_dequeue_as_redis_dies_waits_for_it(
    runtime: Runtime, private_redis: PrivateRedis
) -> None:
    """RQ records the worker's "idle" state before the part of its dequeue that handles Redis
    errors: an outage just after a job made the worker quit (seen once in CI)."""
    redis = Redis.from_url(private_redis.url)
    worker = TributaryWorker(Runtime(runtime.settings, db=runtime.db, redis=redis))
    worker.register_birth()
    private_redis.kill()
    back = threading.Timer(1.0, private_redis.start)
    back.start()
    try:
        worker.set_state(WorkerStatus.IDLE)  # raised ConnectionError, which ended `work`
    finally:
        back.join()
    assert worker.outages == 1
    # Redis came back empty; the worker registered again as it resumed.
    assert Redis.from_url(private_redis.url).sismember("rq:workers", worker.key)


def test_a_worker_waiting_for_redis_stops_promptly_on_sigterm(
    subprocess_env: dict[str, str],
    private_redis: PrivateRedis,
    worker_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            WORKER, env={**subprocess_env, "REDIS_URL": private_redis.url}, stderr=out, start_new_session=True
        )
    worker_process.append(worker)
    wait_for(lambda: worker_states(private_redis) == [b"idle"], timeout=30)  # started, waiting for jobs
    private_redis.kill()
    wait_for(lambda: "lost Redis" in log.read_text(), timeout=30)

    # RQ asks Redis whether a job is running before it stops; the worker answers that itself.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, log.read_text()
    assert "stopped without unregistering from Redis" in log.read_text()


def test_a_worker_stopped_mid_job_during_an_outage_finishes_the_job_and_exits(
    runtime: Runtime,
    admin_key: str,
    subprocess_env: dict[str, str],
    private_redis: PrivateRedis,
    worker_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    ingest = Runtime(runtime.settings, db=runtime.db, redis=outage_redis(private_redis.url))
    client: FlaskClient = create_app({"TESTING": True}, runtime=ingest).test_client()
    marker, release, log = tmp_path / "paused", tmp_path / "release", tmp_path / "worker.log"
    env = {
        **subprocess_env,
        "REDIS_URL": private_redis.url,
        "TRIBUTARY_FAILPOINT": "batch.before_commit",
        "TRIBUTARY_FAILPOINT_FILE": str(marker),
        "TRIBUTARY_FAILPOINT_RELEASE": str(release),
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(WORKER, env=env, stderr=out, start_new_session=True)
    worker_process.append(worker)
    for i in range(5):
        identify(client, admin_key, email=f"s{i}@example.com")
    wait_for(marker.exists)
    private_redis.kill()
    worker.send_signal(signal.SIGTERM)  # a warm stop, asked for while the batch is open
    time.sleep(0.5)
    release.touch()
    # The batch commits, and the worker exits instead of waiting for Redis to come back.
    assert worker.wait(timeout=30) == 0, log.read_text()
    assert _count(runtime, Event.status == "processed") == 5


def test_a_worker_started_while_redis_is_down_waits_for_it(
    runtime: Runtime,
    admin_key: str,
    subprocess_env: dict[str, str],
    private_redis: PrivateRedis,
    worker_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    private_redis.kill()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            WORKER, env={**subprocess_env, "REDIS_URL": private_redis.url}, stderr=out, start_new_session=True
        )
    worker_process.append(worker)
    wait_for(lambda: "Redis unreachable while starting" in log.read_text(), timeout=30)
    assert worker.poll() is None, log.read_text()

    private_redis.start()
    ingest = Runtime(runtime.settings, db=runtime.db, redis=outage_redis(private_redis.url))
    client: FlaskClient = create_app({"TESTING": True}, runtime=ingest).test_client()
    identify(client, admin_key, email="late@example.com")
    wait_for(lambda: _count(runtime, Event.status == "processed") == 1)
    assert worker.poll() is None
