"""A background replay outlives what runs it: a killed worker, a queue Redis lost, a foreground
`tributary replay` that died. The sweeper resumes it from its last event; a stray job stops at
once; a replay that keeps dying fails with the reason."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job
from rq.registry import StartedJobRegistry
from sqlalchemy import func, select

from tests.helpers import identify
from tributary.app.cli import cli, ops
from tributary.models import Event, Replay
from tributary.runtime.process import Runtime
from tributary.workers.replay import chain_key, replay_step, run_replay
from tributary.workers.replay_watch import MAX_RESUMES, foreground_lease, resume_orphaned
from tributary.workers.sweep import sweep
from tributary.workers.worker import TributaryWorker

WORKER = [sys.executable, "-P", "-m", "tributary.app.cli", "worker"]


def _replay(client: FlaskClient, admin: dict[str, str], drain: Callable[[], None], events: int) -> str:
    """`events` processed identify events and a background replay of them, queued."""
    token = admin["Authorization"].split()[1]
    for i in range(events):
        identify(client, token, email=f"r{i}@example.com")
    drain()
    started = client.post("/v1/events/replay", json={"connector": "identify"}, headers=admin)
    assert started.status_code == 202, started.get_json()
    replay_id: str = started.get_json()["id"]
    return replay_id


def _state(runtime: Runtime, replay_id: str) -> tuple[str, int, str | None]:
    with runtime.db.session() as session:
        replay = session.get(Replay, replay_id)
        assert replay is not None
        return replay.state, replay.done, replay.error


def _attempts(runtime: Runtime) -> list[int]:
    with runtime.db.session() as session:
        return sorted(set(session.scalars(select(Event.attempts))))


def _lose_jobs(runtime: Runtime) -> None:
    """What a Redis that lost its data does to the replay queue: no job left to run it."""
    queue = runtime.replay_queue
    for job_id in queue.get_job_ids():
        Job.fetch(job_id, connection=runtime.redis).delete()
    queue.empty()


@pytest.mark.slow
def test_a_replay_whose_worker_is_killed_resumes_where_it_stopped(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    replay_id = _replay(client, admin, drain, 250)
    marker = tmp_path / "failpoint"
    env = {
        **subprocess_env,
        "TRIBUTARY_FAILPOINT": "replay.after_batch",
        "TRIBUTARY_FAILPOINT_FILE": str(marker),
    }
    doomed = subprocess.Popen([*WORKER], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and doomed.poll() is None, "the worker never replayed a batch"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    assert _state(runtime, replay_id)[:2] == ("running", 100)  # one batch committed, then killed

    registry = StartedJobRegistry(queue=runtime.replay_queue)
    [entry] = runtime.redis.zrange(registry.key, 0, -1)
    assert sweep(runtime) == 0 and runtime.replay_queue.count == 0  # its heartbeat is still fresh
    # Its job's heartbeat lapses (REPLAY_JOB_TIMEOUT + 60 s after the last one): moved back here.
    runtime.redis.zadd(registry.key, {entry: 1})
    sweep(runtime)
    assert runtime.replay_queue.count == 1
    drain()
    assert _state(runtime, replay_id) == ("completed", 250, None)
    assert _attempts(runtime) == [2]  # every event replayed exactly once: none twice, none skipped


def test_a_replay_whose_queue_was_lost_is_resumed_and_a_live_one_is_left_alone(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    replay_id = _replay(client, admin, drain, 30)
    assert resume_orphaned(runtime) == [] and runtime.replay_queue.count == 1  # queued: alive
    _lose_jobs(runtime)
    assert resume_orphaned(runtime) == [replay_id]
    assert resume_orphaned(runtime) == [] and runtime.replay_queue.count == 1  # once, not per sweep
    drain()
    assert _state(runtime, replay_id) == ("completed", 30, None)
    assert runtime.redis.get(chain_key(replay_id)) is None  # a finished replay leaves no runner
    assert resume_orphaned(runtime) == []


def test_a_job_that_is_not_the_replays_runner_stops_at_once(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    replay_id = _replay(client, admin, drain, 30)
    runner = runtime.redis.get(chain_key(replay_id))
    # A stray job ahead of the runner (one the sweeper queued while the old runner was alive after all).
    stray = runtime.replay_queue.enqueue(run_replay, replay_id, result_ttl=60, at_front=True)
    assert runtime.redis.get(chain_key(replay_id)) == runner
    TributaryWorker(runtime).work(burst=True, max_jobs=1, logging_level="WARNING")
    assert Job.fetch(stray.id, connection=runtime.redis).return_value() == "superseded"
    assert _state(runtime, replay_id)[:2] == ("queued", 0)
    drain()
    assert _state(runtime, replay_id) == ("completed", 30, None)


def test_a_replay_that_keeps_losing_its_runner_fails_with_the_reason(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    replay_id = _replay(client, admin, drain, 5)
    for _ in range(MAX_RESUMES):
        _lose_jobs(runtime)
        assert resume_orphaned(runtime) == [replay_id]
    _lose_jobs(runtime)
    assert resume_orphaned(runtime) == []
    state, done, error = _state(runtime, replay_id)
    assert (state, done) == ("failed", 0)
    assert error is not None and f"stopped unfinished {MAX_RESUMES + 1} times" in error
    detail = client.get(f"/v1/replays/{replay_id}", headers=admin).get_json()
    assert detail["state"] == "failed" and detail["error"] == error


def test_a_foreground_replay_holds_a_lease_and_is_resumed_when_its_process_is_gone(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    replay_id = _replay(client, admin, drain, 5)
    _lose_jobs(runtime)
    runtime.redis.delete(chain_key(replay_id))
    with foreground_lease(runtime, replay_id):
        assert resume_orphaned(runtime) == []  # a live foreground run is nobody's orphan
        assert runtime.redis.ttl(chain_key(replay_id)) > 0  # it lapses if the process dies
    assert resume_orphaned(runtime) == [replay_id]
    drain()
    assert _state(runtime, replay_id) == ("completed", 5, None)
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Replay)) == 1


def test_a_sweep_while_the_cli_replays_in_the_foreground_leaves_it_alone(
    app: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = admin["Authorization"].split()[1]
    for i in range(5):
        identify(client, token, email=f"f{i}@example.com")
    drain()
    swept: list[list[str]] = []

    def step_then_sweep(rt: Runtime, replay_id: str) -> bool:
        more = replay_step(rt, replay_id)
        swept.append(resume_orphaned(runtime))  # another worker's sweep, between two batches
        return more

    monkeypatch.setattr(ops, "replay_step", step_then_sweep)
    result = app.test_cli_runner().invoke(cli, ["events", "replay", "--connector", "identify"])
    assert result.exit_code == 0, result.output
    assert "completed: 5 of 5 events replayed" in result.output
    assert swept == [[], []] and runtime.replay_queue.count == 0
    assert runtime.redis.keys("tributary:replay:*:runner") == []  # the lease ends with the run
