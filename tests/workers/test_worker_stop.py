"""A worker asked to stop while it is idle stops, whatever its maintenance was doing at the time.

RQ's SIGTERM handler raises StopRequested in whichever frame is running when the worker has no
job; between jobs that is often the periodic sweep's query. Here the real handler is called from
inside the real sweep, as the signal would arrive."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rq.exceptions import StopRequested

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


@pytest.mark.parametrize("step", ["sweep_if_due", "reconcile_if_due"])
def test_a_stop_asked_for_during_maintenance_stops_the_worker(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, restored_signals: None, step: str
) -> None:
    worker = TributaryWorker(runtime)
    real: Callable[[Runtime], Any] = getattr(worker_module, step)
    ran: list[Any] = []

    def signalled_midway(rt: Runtime) -> Any:
        worker.request_stop(signal.SIGTERM, None)  # what the signal runs, mid-step
        ran.append(real(rt))  # not reached: the handler raised
        return ran[-1]

    monkeypatch.setattr(worker_module, step, signalled_midway)
    with pytest.raises(StopRequested):
        worker.run_maintenance_tasks()
    assert ran == []
    assert STOP_REQUESTED.is_set()  # what a drain job in hand reads (tests/workers/test_drain_job.py)


def test_a_failing_maintenance_step_is_logged_and_the_worker_goes_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(rt: Runtime) -> None:
        raise RuntimeError("the sweep's query failed")

    monkeypatch.setattr(worker_module, "sweep_if_due", broken)
    TributaryWorker(runtime).run_maintenance_tasks()
    assert "sweep failed; will try again next interval" in caplog.text
