"""The scheduler's timeline of serve under load (bench/schedule.py): `perf sched timehist` read
into slices, and where the machine's idle time fell against serve's worker."""

from __future__ import annotations

import pytest

from bench.schedule import IDLE, Recording, Slice, beside_worker, parse_timehist

WORKER = 8551

# Real `perf sched timehist` output (the worker is 8551, a web process 8557), with its header.
TIMEHIST = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
     674.256610 [0000]  <idle>                              0.000      0.000      0.470
     674.256619 [0001]  python[8557]                        0.000      0.000      0.152
     674.257076 [0000]  python[8602/8557]                   0.000      0.063      0.466
     674.257377 [0000]  python[8551]                        0.000      0.000      0.241
     674.257407 [0000]  Web Content[8624/8622]              0.000      0.696      0.029
"""


def test_timehist_lines_become_slices_of_processes_and_idle_time() -> None:
    slices = parse_timehist(TIMEHIST)
    assert [(s.cpu, s.pid) for s in slices] == [(0, IDLE), (1, 8557), (0, 8557), (0, WORKER), (0, 8622)]
    assert slices[0].end == pytest.approx(674256.610)
    assert slices[0].end - slices[0].start == pytest.approx(0.470)


def test_idle_time_is_split_by_whether_the_worker_ran_beside_it() -> None:
    slices = [
        # CPU 0: the worker for 10 ms, then a web process for 10.
        Slice(0, 0.0, 10.0, WORKER),
        Slice(0, 10.0, 20.0, 8557),
        # CPU 1: idle for the worker's first 6 ms, web for 8, idle for the last 6.
        Slice(1, 0.0, 6.0, IDLE),
        Slice(1, 6.0, 14.0, 8558),
        Slice(1, 14.0, 20.0, IDLE),
    ]
    found = beside_worker(slices, WORKER)
    assert found == {"idle_beside_worker": 0.5, "worker_beside_idle": 0.6, "idle_ms": 12.0, "worker_ms": 10.0}


def test_three_cpus_count_each_idle_one_and_a_timeline_without_the_worker_gives_nothing() -> None:
    slices = [Slice(0, 0.0, 4.0, WORKER), Slice(1, 0.0, 4.0, IDLE), Slice(2, 0.0, 4.0, IDLE)]
    assert beside_worker(slices, WORKER) == {
        "idle_beside_worker": 1.0,
        "worker_beside_idle": 1.0,
        "idle_ms": 8.0,
        "worker_ms": 4.0,
    }
    assert beside_worker([Slice(0, 0.0, 4.0, 8557), Slice(1, 0.0, 4.0, IDLE)], WORKER) is None
    assert beside_worker([], WORKER) is None


def test_without_perf_nothing_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    recording = Recording(0.0, 0.1)
    assert recording.start() is False
    assert recording.timeline() == []
