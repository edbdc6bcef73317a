"""Background replays outlive the process running them: the sweeper resumes a replay whose runner
is gone, and a foreground `tributary events replay` holds a lease so it is never taken for gone.

A replay is resumable by design (it walks event ids in order and records the last one in the
same transaction as the batch, workers/replay.py), so a replay whose worker was killed, whose
queue Redis lost, or whose foreground process died is simply queued again from where it stopped.
Its runner (Redis, `chain_key`) says who takes the next slice: a job id, or a lease of a
foreground run. The sweeper treats a replay as orphaned when its runner is missing, or is a job
RQ no longer holds as queued, scheduled or started (RQ moves the job of a dead worker out of
"started" once its heartbeat lapses), and the runner did not change while it looked. A replay
orphaned `MAX_RESUMES` times fails instead, with the reason: a batch that kills its worker
every time must not loop forever.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from tributary.models import Replay
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime
from tributary.workers.replay import (
    RUNNER_TTL_SECONDS,
    TERMINAL_STATES,
    chain_key,
    enqueue_replay,
    replay_queue,
    runner_of,
)

log = logging.getLogger(__name__)

LEASE_PREFIX = "lease:"
# A foreground run renews its lease every batch (well under a second each).
LEASE_SECONDS = 120
MAX_RESUMES = 3
ALIVE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED}


def _resumes_key(replay_id: str) -> str:
    return f"tributary:replay:{replay_id}:resumes"


@contextmanager
def foreground_lease(runtime: Runtime, replay_id: str) -> Iterator[None]:
    """Mark the replay as run by this process for as long as the block runs; call `renew` between
    batches. If the process dies, the lease lapses and the sweeper resumes the rest in the
    background. Best effort: without Redis the replay still runs (and no sweeper runs either)."""
    with suppress(RedisError):
        runtime.redis.set(chain_key(replay_id), _lease_value(), ex=LEASE_SECONDS)
    try:
        yield
    finally:
        with suppress(RedisError):
            runtime.redis.delete(chain_key(replay_id))


def renew(runtime: Runtime, replay_id: str) -> None:
    with suppress(RedisError):
        runtime.redis.expire(chain_key(replay_id), LEASE_SECONDS)


def _lease_value() -> str:
    return f"{LEASE_PREFIX}{socket.gethostname()}:{os.getpid()}"


def _runner_alive(runtime: Runtime, runner: str | None) -> bool:
    if runner is None:
        return False
    if runner.startswith(LEASE_PREFIX):
        return True  # the key expires with the lease
    try:
        status = Job.fetch(runner, connection=runtime.redis).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in ALIVE


def resume_orphaned(runtime: Runtime) -> list[str]:
    """Queue again every unfinished replay nobody runs; returns their ids. Raises RedisError when
    Redis is unreachable (the sweeper logs it and tries next time)."""
    # Jobs of workers that died leave "started" here, once their heartbeat has lapsed.
    StartedJobRegistry(queue=replay_queue(runtime)).cleanup()
    with runtime.db.session() as session:
        unfinished = list(session.scalars(select(Replay.id).where(Replay.state.not_in(TERMINAL_STATES))))
    resumed = []
    for replay_id in unfinished:
        runner = runner_of(runtime, replay_id)
        if _runner_alive(runtime, runner) or runner_of(runtime, replay_id) != runner:
            continue  # running, waiting in its queue, or handed on to its next slice meanwhile
        if _finished(runtime, replay_id) or _give_up(runtime, replay_id):
            continue
        enqueue_replay(runtime, replay_id)
        resumed.append(replay_id)
    if resumed:
        log.warning("sweep: %d replays had lost their runner, queued again: %s", len(resumed), resumed)
    return resumed


def _finished(runtime: Runtime, replay_id: str) -> bool:
    """Whether it ended while we looked (its last job drops the runner as it finishes)."""
    with runtime.db.session() as session:
        return session.scalar(select(Replay.state).where(Replay.id == replay_id)) in (*TERMINAL_STATES, None)


def _give_up(runtime: Runtime, replay_id: str) -> bool:
    """Count this resume; past MAX_RESUMES, fail the replay (if it is still unfinished) instead."""
    key = _resumes_key(replay_id)
    with runtime.redis.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, RUNNER_TTL_SECONDS)  # kept as long as the runner it counts losing
        count = int(pipe.execute()[0])
    if count <= MAX_RESUMES:
        return False
    with runtime.db.write_session() as session, session.begin():
        replay = session.get(Replay, replay_id, with_for_update=runtime.db.is_postgres)
        if replay is not None and replay.state not in TERMINAL_STATES:
            replay.state, replay.finished_at = "failed", utcnow()
            replay.error = (
                f"it stopped unfinished {count} times (the worker or process running it died); "
                "a new replay with the same filters does the rest (replaying is idempotent)"
            )
    return True
