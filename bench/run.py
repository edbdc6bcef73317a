#!/usr/bin/env python
"""Tributary's benchmark: `python bench/run.py` (`--quick` for a smoke run of every phase; see
bench/README.md for what each figure means and how it is measured).

One run measures every target of issue #10 against the local PostgreSQL and Redis:

1. ingest (bench/ingest.py, ingest_kinds.py): identify under the shipped gunicorn configuration beside
   bare Flask under the same, limiter on and off, at 16 and 64 connections; the Stripe webhook;
   /v1/batch; whether the limiter refuses below its rate;
2. drain (bench/drain.py): 1 and 2 workers beside RQ's no-op job rate;
3. memory (bench/memory.py): worker peak RSS by batch size (web and worker peaks come with 1 and 2);
4. sustained (bench/sustained.py): web + 2 workers under open-loop webhooks at rising rates;
5. read side (bench/readside.py): GET /v1/customers per filter family over generated customers;
6. embedded (bench/embedded.py): `tributary serve` beside bare Flask under serve's configuration.

Then every figure against its target (bench/summary.py), printed and written to
bench/results/latest.json under `summary`. The harness creates and drops its own PostgreSQL
database, uses one Redis db index of its own, starts and stops every process it needs by pid, and
cleans up on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.drain import drain_phase, measure_noop, stop_tributary
from bench.embedded import embedded_phase
from bench.harness import BENCH, REPO, Environment, Processes, log, on_signal, wait_for_quiet
from bench.ingest import ingest_phase, measure_breakdown
from bench.memory import memory_phase
from bench.options import Config, parse_args
from bench.readside import readside_phase
from bench.report import _meta, report
from bench.summary import summarize
from bench.sustained import bare_baseline, rates_run, sustained_phase
from bench.wrk import ensure_wrk

RESULTS = BENCH / "results"


def _phase(results: dict[str, Any], name: str, work: Callable[[], Any]) -> Any:
    """Run one of the later phases; a failure is recorded and reported, and the run goes on."""
    started = time.monotonic()
    try:
        return work()
    except Exception as exc:
        log(f"PHASE {name} FAILED: {exc}")
        results.setdefault("errors", {})[name] = traceback.format_exc()
        return None
    finally:
        results["meta"].setdefault("phase_seconds", {})[name] = round(time.monotonic() - started, 1)


def sustained_with_baseline(
    results: dict[str, Any],
    rates: Callable[[], dict[str, Any] | None],
    baseline: Callable[[list[int]], dict[str, dict[str, Any]]],
) -> None:
    """The sustained rates, then bare Flask at the rates they held, each a phase of its own: a
    baseline that fails is recorded as the run's error and leaves the rates' figures in place."""
    sustained = results["sustained"] = _phase(results, "sustained", rates)
    if sustained is not None:
        held = rates_run(sustained)
        sustained["bare"] = _phase(results, "sustained baseline", lambda: baseline(held)) or {}


def run_phases(
    cfg: Config, env: Environment, procs: Processes, wrk: str, workdir: Path, results: dict[str, Any]
) -> None:
    """Every phase in order; the default server from the ingest phase serves the drain, memory and
    sustained phases, then stops before the no-op baseline, the read side and the embedded server."""
    token = env.prepare()
    log(f"database {env.database}, Redis {env.redis_url}, logs in {workdir / 'logs'}")
    tributary, _ = ingest_phase(wrk, cfg, env, procs, token, results)
    if cfg.runs("ingest"):
        log("breakdown: identify's steps timed in place in one process (bench/breakdown.py)")
        results["breakdown"] = _phase(
            results, "breakdown", lambda: measure_breakdown(env, token, 300 if cfg.quick else 3000)
        )
    if cfg.runs("drain"):
        _phase(results, "drain", lambda: drain_phase(cfg, env, procs, tributary, token, results))
    if cfg.runs("memory"):
        results["memory_by_batch"] = _phase(
            results, "memory", lambda: memory_phase(cfg, env, procs, tributary, token, results["drain"])
        )
    if cfg.runs("sustained"):
        read_key = env.key("read")
        sustained_with_baseline(
            results,
            lambda: sustained_phase(cfg, env, procs, tributary, read_key),
            lambda rates: bare_baseline(cfg, env, procs, read_key, rates),
        )
    stop_tributary(procs, tributary, results)
    if cfg.runs("drain"):
        noop = _phase(results, "noop", lambda: measure_noop(cfg, env, procs))
        if noop is not None:
            results["noop"] = asdict(noop)
            log(f"  no-op: {noop.jobs_per_s:.0f} jobs/s in {noop.seconds:.2f} s")
    if cfg.runs("readside"):
        results["readside"] = _phase(results, "readside", lambda: readside_phase(cfg, env, procs))
    if cfg.runs("embedded"):
        results["embedded"] = _phase(results, "embedded", lambda: embedded_phase(wrk, cfg, procs, workdir))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    wrk = ensure_wrk()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tributary-bench-"))
    (workdir / "home").mkdir()
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    env = Environment(cfg, workdir / "home")
    results: dict[str, Any] = {
        "meta": _meta(),
        "config": {**asdict(cfg), "skip": sorted(cfg.skip)},
        "ingest": [],
        "drain": [],
        "noop": None,
        "servers": [],
    }
    ok = False
    try:
        results["meta"]["other_load_at_start"] = round(wait_for_quiet(cfg.wait_quiet), 3)
        run_phases(cfg, env, procs, wrk, workdir, results)
        results["summary"] = summarize(results)
        results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
        ok = not results.get("errors")
    finally:
        procs.stop_all()
        try:
            env.close()
        except Exception as exc:  # the results still count; say what may be left behind
            print(f"cleanup failed ({exc}); the database {env.database} may be left behind", file=sys.stderr)
        if not ok or cfg.keep_logs:
            print(f"process logs kept in {workdir / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = results["meta"]["started_at"].replace(":", "").replace("-", "")
    path = RESULTS / f"bench-{stamp}.json"
    for target in (path, RESULTS / "latest.json"):
        target.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    took = results["meta"]["wall_seconds"]
    print(f"JSON: {path.relative_to(REPO)} (also bench/results/latest.json); the run took {took} s")
    for name in results.get("errors", {}):
        print(f"phase {name} failed (traceback in the JSON under `errors`)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
