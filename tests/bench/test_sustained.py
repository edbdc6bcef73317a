"""The sustained phase's CPU split (bench/sustained.py `cpu_split`) and its columns in the report:
which process had the machine while a rate was held."""

from __future__ import annotations

import re
from typing import Any

from bench.procstat import HZ, CpuSnapshot
from bench.report import extra_sections
from bench.run import sustained_with_baseline
from bench.summary import summarize
from bench.sustained import cpu_split, generator_pids

WEB, WORKER, GENERATOR, BACKEND, OTHER_DB = 101, 102, 103, 104, 105
LABELS = {
    WEB: "python\0python -m gunicorn -c python:tributary.app.gunicorn_conf",
    WORKER: "tributary\0python tributary worker",
    GENERATOR: "python\0python -m bench.loadgen spec.json out.json",
    BACKEND: "postgres\0postgres: postgres benchdb 127.0.0.1(50312) idle",
    OTHER_DB: "postgres\0postgres: postgres elsewhere 127.0.0.1(50313) idle",
}


def snapshot(
    at: float, seconds: dict[int, float], busy: float, capacity: float, steal: float = 0.0
) -> CpuSnapshot:
    procs = {pid: (LABELS[pid], round(spent * HZ)) for pid, spent in seconds.items()}
    return CpuSnapshot(at, round(busy * HZ), round(capacity * HZ), procs, 0.0, round(steal * HZ))


def test_each_role_is_given_in_cpus_over_the_window() -> None:
    first = snapshot(100.0, {WEB: 5, WORKER: 1, GENERATOR: 0, BACKEND: 2, OTHER_DB: 0}, busy=50, capacity=200)
    # 10 s later on 2 CPUs: the web used 10.5 s of CPU, the worker 2, the generator 1, our database 5.
    last = snapshot(
        110.0, {WEB: 15.5, WORKER: 3, GENERATOR: 1, BACKEND: 7, OTHER_DB: 1}, busy=70, capacity=220
    )
    roles = {"web": [WEB], "workers": [WORKER], "load generator": [GENERATOR]}

    split = cpu_split(first, last, roles, "benchdb")

    assert split["web"] == 1.05
    assert split["workers"] == 0.2
    assert split["load generator"] == 0.1
    assert split["postgres"] == 0.5
    # Another database's backend is not ours: it is in `other`, with what nothing above claims.
    assert split["other"] == round((20 - 10.5 - 2 - 1 - 5) / 10, 2)
    assert split["machine busy"] == 2.0
    assert split["machine capacity"] == 2.0
    assert split["steal"] == 0.0


def test_time_the_host_gave_other_guests_is_steal_not_other_load() -> None:
    first = snapshot(100.0, {WEB: 5, BACKEND: 2}, busy=50, capacity=200, steal=10)
    # 10 s later: 14 s busy, of which 4 s were stolen by the hypervisor and 8 s ours.
    last = snapshot(110.0, {WEB: 11, BACKEND: 4}, busy=64, capacity=220, steal=14)
    split = cpu_split(first, last, {"web": [WEB]}, "benchdb")
    assert (split["web"], split["postgres"]) == (0.6, 0.2)
    assert split["steal"] == 0.4
    assert split["other"] == 0.2
    assert split["machine busy"] == 1.4


def step(rate: int, cpus: dict[str, float] | None) -> dict[str, object]:
    load = {"latency_ms": {"p99": 40.0}, "send_lag_ms": {"p99": 3.0}}
    entry: dict[str, object] = {
        "rate": rate,
        "accepted_per_s": float(rate),
        "backlog_first": 0,
        "backlog_last": 5,
        "backlog_slope": 0.1,
        "flat": True,
        "load": load,
    }
    if cpus is not None:
        entry["cpu_cpus"] = cpus
    return entry


def test_the_report_prints_the_split_and_a_dash_for_runs_without_it() -> None:
    cpus = {"web": 1.05, "workers": 0.21, "postgres": 0.56, "load generator": 0.11, "other": 0.03}
    cpus["steal"], cpus["machine busy"] = 0.2, 1.96
    sustained = {
        "window_s": 60,
        "latency_rate": 200,
        "steps": [step(200, None), step(1000, cpus)],
        "visible": {},
    }

    lines = extra_sections({"sustained": sustained})

    header = next(line for line in lines if "offered/s" in line)
    columns = ["CPUs web", "CPUs workers", "CPUs postgres", "CPUs load gen", "CPUs other", "CPUs steal"]
    assert re.split(r"\s{2,}", header.strip())[-8:] == [*columns, "CPUs busy", "CPUs bare Flask web"]
    row_200 = next(line for line in lines if line.split()[:1] == ["200"])
    row_1000 = next(line for line in lines if line.split()[:1] == ["1000"])
    assert row_200.split()[-8:] == ["-"] * 8
    assert row_1000.split()[-8:] == ["1.05", "0.21", "0.56", "0.11", "0.03", "0.20", "1.96", "-"]


def test_bare_flask_at_the_same_rate_is_shown_beside_each_rate_and_summed_up_where_it_was_not_flat() -> None:
    not_flat = {**step(1500, {"web": 1.07, "machine busy": 1.97}), "flat": False}
    sustained = {
        "window_s": 60,
        "latency_rate": 200,
        "steps": [step(200, {"web": 0.33}), step(1000, {"web": 0.98}), not_flat],
        "visible": {"p95": 90.0},
        "visible_p95_ms": 90.0,
        "max_flat_rate": 1000,
        "bare": {
            str(rate): {"cpu_cpus": {"web": web}} for rate, web in ((200, 0.12), (1000, 0.66), (1500, 0.94))
        },
    }

    lines = extra_sections({"sustained": sustained})
    rows = {
        line.split()[0]: line.split()[-1]
        for line in lines
        if line.split()[:1] in (["200"], ["1000"], ["1500"])
    }
    assert rows == {"200": "0.12", "1000": "0.66", "1500": "0.94"}

    summary = summarize({"sustained": sustained})
    assert summary["sustained_web_cpus_vs_bare"] == {"rate": 1500, "web": 1.07, "bare_web": 0.94}
    context = [row for row in summary["targets"] if row["figure"].startswith("web CPUs at 1500/s")]
    assert [(row["value"], row["met"]) for row in context] == [(1.07, None), (0.94, None)]
    # Context only: the count of targets met is the phase's two.
    assert summary["targets_met"] == "1 of 2"


def test_a_generator_that_exited_before_the_last_snapshot_is_still_the_generator() -> None:
    first = snapshot(100.0, {WEB: 5, GENERATOR: 0}, busy=50, capacity=200)
    last = snapshot(110.0, {WEB: 11, GENERATOR: 2}, busy=64, capacity=220)
    # Exited, not yet reaped: /proc still counts its CPU but no longer gives its command line.
    last.procs[GENERATOR] = ("python\0", last.procs[GENERATOR][1])

    assert generator_pids(first, last) == [GENERATOR]
    split = cpu_split(first, last, {"web": [WEB], "load generator": generator_pids(first, last)}, "benchdb")
    assert split["load generator"] == 0.2


def _results() -> dict[str, Any]:
    return {"meta": {}}


def _rates() -> dict[str, Any]:
    steps = [step(200, {"web": 0.3}), {**step(1500, {"web": 1.07}), "flat": False}, step(1000, {"web": 0.9})]
    # The phase's own result (bench/sustained.py `sustained_phase`); the baseline adds `bare`.
    return {
        "window_s": 60,
        "latency_rate": 200,
        "steps": steps,
        "max_flat_rate": 1000,
        "visible": {"p95": 90.0},
        "visible_p95_ms": 90.0,
    }


def test_the_baseline_is_offered_each_rate_the_phase_held_once_lowest_first() -> None:
    results = _results()
    offered: list[list[int]] = []

    def baseline(rates: list[int]) -> dict[str, dict[str, Any]]:
        offered.append(rates)
        return {str(rate): {"cpu_cpus": {"web": rate / 2000}} for rate in rates}

    sustained_with_baseline(results, _rates, baseline)

    assert offered == [[200, 1000, 1500]]
    assert results["sustained"]["bare"]["1500"] == {"cpu_cpus": {"web": 0.75}}
    assert "errors" not in results


def test_a_failed_baseline_is_the_runs_error_and_keeps_the_rates_figures() -> None:
    results = _results()

    def baseline(rates: list[int]) -> dict[str, dict[str, Any]]:
        raise RuntimeError("bare Flask did not start")

    sustained_with_baseline(results, _rates, baseline)

    assert results["sustained"]["max_flat_rate"] == 1000
    assert len(results["sustained"]["steps"]) == 3
    assert results["sustained"]["bare"] == {}
    assert "bare Flask did not start" in results["errors"]["sustained baseline"]
    assert summarize(results)["targets_met"] == "1 of 2"  # the rates' own rows are still summed up


def test_no_baseline_without_the_rates() -> None:
    results = _results()
    called: list[list[int]] = []

    def rates() -> dict[str, Any]:
        raise RuntimeError("the workers did not start")

    sustained_with_baseline(results, rates, lambda held: called.append(held) or {})

    assert results["sustained"] is None
    assert called == []
    assert list(results["errors"]) == ["sustained"]
