"""A drain job holds the doorbell while it loops (runtime/doorbell.py `DrainHold`): rings meanwhile
queue no second job, so a trickle stays on one worker; it gives the doorbell back and claims once
more before it ends, so no event is left without a job; a full batch recruits one helper, and a
helper (a job that found the doorbell held by another) leaves at its first batch that is not full.
Real Redis and the real queue throughout."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import func, select

from tests.helpers import identify
from tributary.models import Event
from tributary.runtime import doorbell
from tributary.runtime.process import Runtime, fast_pool
from tributary.workers import jobs

OTHER_JOB = "another-live-drain-job"


@pytest.fixture(autouse=True)
def no_gathering(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, drain_gather_seconds=0))


@pytest.fixture
def on_claim(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[int, int], None]], list[int]]:
    """Run `hook(claim number, claimed)` after each of the job's claims; returns what each claimed."""

    def install(hook: Callable[[int, int], None]) -> list[int]:
        claimed: list[int] = []
        real = jobs.drain_batch

        def recording(runtime: Runtime, limit: int | None = None) -> int:
            claimed.append(real(runtime, limit))
            hook(len(claimed), claimed[-1])
            return claimed[-1]

        monkeypatch.setattr(jobs, "drain_batch", recording)
        return claimed

    return install


def _status(runtime: Runtime, status: str) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).where(Event.status == status)) or 0)


def _take_queued_job(runtime: Runtime) -> None:
    """What a worker does as it starts the job a ring queued: the queue is empty again."""
    doorbell.settle_all()
    assert len(runtime.queue) == 1
    runtime.queue.empty()


def _pending_in_small_batches(
    client: FlaskClient, admin_key: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """`count` events pending, batches of 2, and the job their ring queued taken by a worker."""
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, batch_size=2))
    for i in range(count):
        identify(client, admin_key, email=f"u{i}@example.com")
    _take_queued_job(runtime)


def test_rings_while_a_job_drains_queue_no_second_job(
    client: FlaskClient, admin_key: str, runtime: Runtime, on_claim: Any
) -> None:
    identify(client, admin_key, email="first@example.com")
    _take_queued_job(runtime)
    seen: dict[str, Any] = {}

    def arriving(number: int, claimed: int) -> None:
        if number == 1:  # more events come in, and their rings are made, while the job loops
            for i in range(3):
                identify(client, admin_key, email=f"later{i}@example.com")
            doorbell.settle_all()
            seen["queued"] = len(runtime.queue)
            seen["holder"] = runtime.redis.get(doorbell.DOORBELL_KEY)
            seen["ttl"] = runtime.redis.ttl(doorbell.DOORBELL_KEY)

    claims = on_claim(arriving)
    assert jobs.drain() == 4
    assert seen["queued"] == 0  # the rings found the doorbell held: no second worker called
    assert seen["holder"] not in (None, b"1")  # held by the job itself, not by a ring
    assert 0 < seen["ttl"] <= doorbell.HOLD_TTL_SECONDS  # a killed job's hold runs out
    assert claims == [1, 3, 0, 0]
    assert _status(runtime, "pending") == 0
    # The job gave the doorbell back: the next commit's ring queues a job.
    assert runtime.redis.exists(doorbell.DOORBELL_KEY) == 0
    identify(client, admin_key, email="next@example.com")
    doorbell.settle_all()
    assert len(runtime.queue) == 1


def test_events_rung_just_before_the_release_are_claimed_after_it(
    client: FlaskClient, admin_key: str, runtime: Runtime, on_claim: Any
) -> None:
    identify(client, admin_key, email="first@example.com")
    _take_queued_job(runtime)

    def late(number: int, claimed: int) -> None:
        if number == 2:  # the claim that found nothing: events come in before the job lets go
            assert claimed == 0
            for i in range(2):
                identify(client, admin_key, email=f"late{i}@example.com")
            doorbell.settle_all()
            assert len(runtime.queue) == 0  # rung into the held doorbell: nobody else will come

    claims = on_claim(late)
    assert jobs.drain() == 3
    assert claims == [1, 0, 2, 0, 0]  # the claim after the release found them
    assert _status(runtime, "processed") == 3


def test_a_helper_leaves_the_trickle_to_the_holder(
    client: FlaskClient, admin_key: str, runtime: Runtime, on_claim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pending_in_small_batches(client, admin_key, runtime, monkeypatch, 5)
    runtime.redis.set(doorbell.DOORBELL_KEY, OTHER_JOB, ex=60)  # another job holds the doorbell
    recruits: list[Runtime] = []
    monkeypatch.setattr(jobs, "recruit", recruits.append)
    claims = on_claim(lambda number, claimed: None)
    assert jobs.drain() == 5
    assert claims == [2, 2, 1]  # the batch that was not full was its last: no claim for nothing
    assert len(recruits) == 2
    assert runtime.redis.get(doorbell.DOORBELL_KEY) == OTHER_JOB.encode()  # left alone


def test_full_batches_recruit_one_helper_at_a_time(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pending_in_small_batches(client, admin_key, runtime, monkeypatch, 7)
    assert jobs.drain() == 7
    # Three full batches asked; one helper job is queued (a second would only wait behind it).
    assert len(runtime.queue) == 1
    drain()  # the helper starts, finds nothing to do and leaves
    assert len(runtime.queue) == 0
    assert runtime.redis.exists(doorbell.RECRUIT_KEY, doorbell.DOORBELL_KEY) == 0
    assert _status(runtime, "processed") == 7


def test_a_job_that_fails_gives_the_doorbell_back(
    client: FlaskClient, admin_key: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    identify(client, admin_key, email="a@example.com")
    _take_queued_job(runtime)

    def broken(rt: Runtime, limit: int | None = None) -> int:
        assert rt.redis.get(doorbell.DOORBELL_KEY) not in (None, b"1")
        raise RuntimeError("the database went away")

    monkeypatch.setattr(jobs, "drain_batch", broken)
    with pytest.raises(RuntimeError):
        jobs.drain()
    # Not held by a job that is gone: the next ring queues one at once.
    assert runtime.redis.exists(doorbell.DOORBELL_KEY) == 0
    assert doorbell.ring(runtime) is True


def test_a_job_takes_over_from_a_ring_still_queued(
    client: FlaskClient, admin_key: str, runtime: Runtime, on_claim: Any
) -> None:
    """The doorbell set by a ring ("1") means a job is queued and has not started: the running job
    takes the doorbell, and the queued one becomes a helper when it starts."""
    identify(client, admin_key, email="a@example.com")
    doorbell.settle_all()
    assert runtime.redis.get(doorbell.DOORBELL_KEY) == b"1"
    held: list[bytes | None] = []
    on_claim(lambda number, claimed: held.append(runtime.redis.get(doorbell.DOORBELL_KEY)))
    assert jobs.drain() == 1
    assert held[0] not in (None, b"1")


class _Unreachable(Redis):
    """Redis that is not there (nothing listens on port 1), counting the hold's calls."""

    def __init__(self) -> None:
        super().__init__(connection_pool=fast_pool(Redis(port=1).connection_pool))
        self.evals = 0

    def eval(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.evals += 1
        return super().eval(*args, **kwargs)


def test_without_redis_the_job_drains_everything_and_asks_at_most_once_a_second(
    client: FlaskClient, admin_key: str, runtime: Runtime, on_claim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pending_in_small_batches(client, admin_key, runtime, monkeypatch, 5)
    # The failed recruit opens the doorbell's breaker: put it back as it was for the next test.
    monkeypatch.setattr(runtime, "doorbell_paused_until", runtime.doorbell_paused_until)
    unreachable = _Unreachable()
    monkeypatch.setitem(runtime.__dict__, "fast_redis", unreachable)
    claims = on_claim(lambda number, claimed: None)
    assert jobs.drain() == 5
    assert claims == [2, 2, 1, 0, 0]  # as the holder: until a claim after the release finds nothing
    # One failed attempt to take the doorbell covers the next second's batches, then the release.
    assert unreachable.evals == 2
