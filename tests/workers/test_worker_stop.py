"""A worker asked to stop while it is idle stops, whatever its maintenance was doing at the time.

RQ's SIGTERM handler raises StopRequested in whichever frame is running when the worker has no
job; between jobs that is often the periodic sweep's query. The worker defers the stop to the end
of its database work instead (workers/worker.py, `_stop_deferred`). Here the real handler is called
from inside the real steps, and the real signal lands while the sweep's query waits."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rq.exceptions import StopRequested
from sqlalchemy import Connection, text

from tributary.runtime.process import Runtime
from tributary.workers import worker as worker_module
from tributary.workers.stopping import STOP_REQUESTED
from tributary.workers.worker import TributaryWorker


@pytest.fixture
def restored_signals() -> Iterator[None]:
    # RQ's handler re-points SIGINT/SIGTERM at its forced stop: the test process keeps its own.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    STOP_REQUESTED.clear()


# The maintenance steps, in the order the worker runs them.
STEPS = ("sweep_if_due", "reconcile_if_due")


@pytest.mark.parametrize("step", STEPS)
def test_a_stop_asked_for_during_maintenance_stops_the_worker_once_the_step_ends(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, restored_signals: None, step: str
) -> None:
    worker = TributaryWorker(runtime)
    ran: list[str] = []

    def recorded(name: str) -> Callable[[Runtime], Any]:
        real: Callable[[Runtime], Any] = getattr(worker_module, name)

        def run(rt: Runtime) -> Any:
            if name == step:
                worker.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]  # the signal, mid-step
            ran.append(name)  # reached: the handler no longer raises inside the step
            return real(rt)

        return run

    for name in STEPS:
        monkeypatch.setattr(worker_module, name, recorded(name))
    with pytest.raises(StopRequested):
        worker.run_maintenance_tasks()
    # The step in hand finished; the ones after it were left for the next worker.
    assert ran == list(STEPS[: STEPS.index(step) + 1])
    assert STOP_REQUESTED.is_set()  # what a drain job in hand reads (tests/workers/test_drain_job.py)


def test_a_failing_maintenance_step_is_logged_and_the_worker_goes_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(rt: Runtime) -> None:
        raise RuntimeError("the sweep's query failed")

    monkeypatch.setattr(worker_module, "sweep_if_due", broken)
    TributaryWorker(runtime).run_maintenance_tasks()
    assert "sweep failed; will try again next interval" in caplog.text


def _await_lock_wait(blocker: Connection, seconds: float = 10.0) -> bool:
    """Whether another backend came to wait for a lock (the sweep's query behind the blocker's)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Inside the blocker's transaction pg_stat_activity is read once and kept: drop that copy,
        # or a waiter that came after the first look is never seen.
        blocker.execute(text("SELECT pg_stat_clear_snapshot()"))
        waiting = blocker.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND datname = current_database()"
            )
        ).scalar()
        if waiting:
            return True
        time.sleep(0.02)
    return False


def test_a_stop_that_lands_in_a_maintenance_query_stops_the_worker_after_it(
    runtime: Runtime, restored_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The real signal, while the sweep's query waits in the driver. Raised there, StopRequested
    interrupted psycopg mid-command; closing the session then failed ("another command is already
    in progress"), that error replaced the stop, the sweep was logged as failed and the worker
    went on (the bench's drain worker, 17 minutes after its SIGTERM)."""
    if not runtime.db.is_postgres:
        pytest.skip("SQLite waits for a lock in C and runs Python's handler only after it")
    worker = TributaryWorker(runtime)
    worker._install_signal_handlers()  # type: ignore[no-untyped-call]  # what `work` installs
    seen: dict[str, bool] = {}
    blocker = runtime.db.engine.connect()
    # The sweep counts pending events: with the table locked, its query waits in the driver.
    blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))

    def signal_then_release() -> None:
        try:
            seen["waited"] = _await_lock_wait(blocker)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)  # the handler runs while the query still waits
        finally:
            blocker.rollback()
            blocker.close()

    releaser = threading.Thread(target=signal_then_release)
    releaser.start()
    try:
        with pytest.raises(StopRequested):
            worker.run_maintenance_tasks()
    finally:
        releaser.join(15)
    assert seen == {"waited": True}
    assert "failed" not in caplog.text
    # The sweep finished its query: its connection went back to the pool fit for the next one.
    with runtime.db.session() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1


def test_a_worker_stops_listening_promptly_once_its_channel_is_quiet(runtime: Runtime) -> None:
    """Unsubscribed, the command channel's thread waits for a subscription again, as long as its
    sleep time (RQ's is 60 s); redis-py 8's `stop()` waits for the thread, so a worker's teardown
    took up to a minute (a test's drain hung on it). Here the thread is put in that wait first,
    the case RQ's order of calls (unsubscribe, then stop) leaves to chance."""
    worker = TributaryWorker(runtime)
    worker.subscribe()
    pubsub = worker.pubsub
    assert pubsub is not None
    pubsub.unsubscribe()
    deadline = time.monotonic() + 10
    while pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread reads the reply, then waits for a subscription
    assert not pubsub.subscribed
    time.sleep(0.1)

    teardown = threading.Thread(target=worker.unsubscribe)
    teardown.start()
    teardown.join(10)
    assert not teardown.is_alive()
