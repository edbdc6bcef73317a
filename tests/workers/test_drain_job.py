"""The doorbell's drain job (workers/jobs.py `drain`): it goes on while events keep arriving, until a
claim finds nothing, instead of ending at the first batch smaller than `batch_size` (one RQ job per
small batch under steady load); after a batch that was not full it waits `drain_gather_seconds`
before the next claim (a steady trickle comes in batches), after a full one it claims again at
once; on SQLite it leaves the write lock free between its batches."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import identify
from tributary.models import Event
from tributary.runtime import doorbell
from tributary.runtime.process import Runtime
from tributary.workers import jobs
from tributary.workers.stopping import STOP_REQUESTED


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each of the job's batches claimed."""
    claimed: list[int] = []
    real = jobs.drain_batch

    def recording(runtime: Runtime, limit: int | None = None) -> int:
        claimed.append(real(runtime, limit))
        return claimed[-1]

    monkeypatch.setattr(jobs, "drain_batch", recording)
    return claimed


GATHER = 0.02


@pytest.fixture
def gather(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> float:
    """The shipped default, whatever the suite's settings say."""
    monkeypatch.setattr(
        runtime, "settings", dataclasses.replace(runtime.settings, drain_gather_seconds=GATHER)
    )
    return GATHER


@pytest.fixture
def yields(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the job makes between batches (not made here: only recorded)."""
    asked: list[float] = []
    monkeypatch.setattr(jobs, "time", SimpleNamespace(monotonic=time.monotonic, sleep=asked.append))
    return asked


def _pending(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).where(Event.status == "pending")) or 0)


def test_events_arriving_during_a_drain_are_applied_by_the_same_job(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    batches: list[int],
    yields: list[float],
    gather: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(3):
        identify(client, admin_key, email=f"first{i}@example.com")
    real = jobs.drain_batch

    def arriving(rt: Runtime, limit: int | None = None) -> int:
        claimed = real(rt, limit)
        if len(batches) == 1:  # two more events come in as the first batch commits
            for i in range(2):
                identify(client, admin_key, email=f"later{i}@example.com")
        return claimed

    monkeypatch.setattr(jobs, "drain_batch", arriving)
    assert jobs.drain() == 5
    # The last claim comes after the job gave the doorbell back (rings before it queued nothing).
    assert batches == [3, 2, 0, 0]
    assert _pending(runtime) == 0
    # Neither batch was full: each was followed by the gathering pause (on SQLite it is also the
    # step aside that lets the web's writes in).
    assert yields == [gather, gather]


def test_an_empty_queue_ends_the_job_at_once(
    runtime: Runtime, batches: list[int], yields: list[float]
) -> None:
    assert jobs.drain() == 0
    assert batches == [0, 0]  # before and after giving the doorbell back
    assert yields == []


@pytest.mark.parametrize("gather_s", [GATHER, 0.0])
def test_a_full_batch_recruits_another_worker_and_is_followed_by_a_claim_at_once(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    batches: list[int],
    yields: list[float],
    monkeypatch: pytest.MonkeyPatch,
    gather_s: float,
) -> None:
    settings = dataclasses.replace(runtime.settings, batch_size=2, drain_gather_seconds=gather_s)
    monkeypatch.setattr(runtime, "settings", settings)
    recruits: list[Runtime] = []
    monkeypatch.setattr(jobs, "recruit", recruits.append)
    for i in range(3):
        identify(client, admin_key, email=f"u{i}@example.com")
    assert jobs.drain() == 3
    assert batches == [2, 1, 0, 0]
    assert len(recruits) == 1  # after the full batch only
    # A full batch is a backlog: no gathering after it, only SQLite's writer steps aside; the
    # batch of 1 is followed by the gathering pause, at least that step aside on SQLite.
    if runtime.db.is_postgres:
        assert yields == ([gather_s] if gather_s else [])
    else:
        assert yields == [jobs.SQLITE_YIELD_S, max(gather_s, jobs.SQLITE_YIELD_S)]


def test_a_stop_asked_of_the_worker_ends_the_job_after_the_batch_in_hand(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    batches: list[int],
    yields: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under a backlog the job would drain on for its whole slice (30 s), as long as a platform
    # waits between SIGTERM and SIGKILL; asked to stop, it ends at the batch boundary and rings,
    # so another worker takes the rest.
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, batch_size=2))
    rings: list[bool] = []
    real_ring = jobs.ring

    def recorded_ring(rt: Runtime) -> bool:
        rings.append(real_ring(rt))
        return rings[-1]

    monkeypatch.setattr(jobs, "ring", recorded_ring)
    for i in range(5):
        identify(client, admin_key, email=f"s{i}@example.com")
    # The web's rings for those commits are made by its ringer thread: one landing after the
    # job's release would take the doorbell before the job's own ring (seen on a slow machine).
    doorbell.settle_all()
    STOP_REQUESTED.set()
    try:
        assert jobs.drain() == 2
    finally:
        STOP_REQUESTED.clear()
    assert batches == [2]
    assert _pending(runtime) == 3
    assert rings == [True]  # a drain job queued for the other workers
    assert jobs.drain() == 3  # the next job (here, the same process) finishes them
