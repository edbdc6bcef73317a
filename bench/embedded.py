"""The embedded default: `tributary serve` (SQLite + the embedded Redis, web and one worker) with a
data directory of its own; identify ingest beside bare Flask under serve's own server configuration
(the shipped gunicorn file with serve's process count), then the drain by serve's own worker."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.constants import BARE_APP, CLI_MODULE, INGEST_KEYS, PRODUCT_ENV_PREFIXES, SERVE_WEB_WORKERS, cli
from bench.harness import Processes, free_port, log, run_cli, wait_until
from bench.options import Config
from bench.procstat import cmdline
from bench.schedule import Recording, beside_worker
from bench.servers import Server, gunicorn_args, seed_batches, wait_ready
from bench.wrk import Target, measure_ingest, run_wrk

# The scheduler's record of serve under load (bench/schedule.py): a run of its own after the
# measured points, as tracing every context switch costs some of the CPU the ratio measures.
SCHEDULE_LOAD_S = 6
SCHEDULE_DELAY_S, SCHEDULE_RECORD_S = 2.0, 3.0


class SqliteStore:
    """serve's database, read beside it (the CPU accounting has no PostgreSQL to attribute)."""

    database = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def scalar(self, sql: str) -> int:
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            return int(conn.execute(sql).fetchone()[0])

    def count_events(self) -> int:
        return self.scalar("SELECT count(*) FROM events")

    def pending(self) -> int:
        return self.scalar("SELECT count(*) FROM events WHERE status = 'pending'")


def stop_tree(procs: Processes, server: Server) -> None:
    """Stop serve (it stops its children), then kill whatever of its tree outlived it: serve runs
    its worker in a session of its own, which a kill of serve's process group would not reach."""
    tree = {pid: cmdline(pid) for pid in server.pids()}
    procs.stop(server.proc)
    for pid, command in tree.items():
        if command and cmdline(pid) == command:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _serve_worker(server: Server) -> int:
    worker = f"{CLI_MODULE} worker"
    found = [pid for pid in server.pids() if worker in cmdline(pid)]
    if not found:
        raise RuntimeError("serve's worker process was not found")
    return min(found)  # the worker itself; its RQ scheduler is its child, in its process group


def embedded_phase(wrk: str, cfg: Config, procs: Processes, workdir: Path) -> dict[str, Any]:
    home = workdir / "embedded-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRODUCT_ENV_PREFIXES)}
    env["TRIBUTARY_HOME"] = str(home)
    run_cli(env, "db", "upgrade")
    token = json_key(env)
    # Spread over several keys, as in the PostgreSQL phase: one key is refused above its limit
    # (1000/s) by design, so a single key measured the configured limit, not serve.
    spread = Target(
        env={"BENCH_API_KEYS": ",".join([token] + [json_key(env) for _ in range(INGEST_KEYS - 1)])}
    )
    store = SqliteStore(home / "tributary.db")
    port = free_port()
    log(f"embedded: `tributary serve` on port {port}, data in {home}")
    serve_proc = procs.start("serve", cli("serve", "--port", str(port)), env)
    serve = Server("serve", f"tributary serve (default limiter, {INGEST_KEYS} keys)", port, serve_proc)
    bare_port = free_port()
    bare_proc = procs.start("bare-serve", gunicorn_args(BARE_APP, bare_port, SERVE_WEB_WORKERS), env)
    bare = Server(
        "bare-serve", f"bare Flask, serve's config ({SERVE_WEB_WORKERS} processes)", bare_port, bare_proc
    )
    out: dict[str, Any] = {"ingest": [], "ingest_ratio": {}}
    try:
        wait_ready(serve_proc, "serve", port, token)
        wait_ready(bare_proc, "bare-serve", bare_port, token)
        run_ids = itertools.count(1000)
        # In rounds, bare Flask and serve one after the other in each, as the PostgreSQL ratios
        # (bench/ingest.py): bare Flask alone swung from 3,322 to 4,785 requests/s between two
        # runs a few minutes apart, and one pair of points read 0.40 where the next read 0.50.
        # The ratio is the median of the rounds' ratios, each from its own pair.
        ratios: dict[str, list[float]] = {}
        for round_no in range(cfg.rounds):
            for connections in cfg.connections:
                points = {}
                for server in (bare, serve):
                    log(
                        f"embedded ingest: {server.label}, {connections} connections, "
                        f"round {round_no + 1} of {cfg.rounds}"
                    )
                    target = spread if server is serve else None
                    point = measure_ingest(
                        wrk, cfg, store, server, token, connections, run_ids, target, round_no=round_no
                    )
                    points[server.name] = point
                    out["ingest"].append(asdict(point))
                    log(
                        f"  {point.accepted_per_s:.0f}/s accepted, p99 {point.p99_ms} ms, "
                        f"{point.non_2xx} non-2xx"
                    )
                ratio = points["serve"].accepted_per_s / max(1e-9, points["bare-serve"].accepted_per_s)
                ratios.setdefault(str(connections), []).append(round(ratio, 3))
        out["ingest_ratio"] = {c: round(statistics.median(found), 3) for c, found in ratios.items()}
        out["ingest_ratio_rounds"] = ratios
        out["schedule"] = {
            str(c): _schedule(wrk, cfg, serve, token, c, f"s{next(run_ids)}", spread) for c in cfg.connections
        }
        bare.record_peak_rss()
        procs.stop(bare_proc)
        out.update(_drain(cfg, procs, serve, store, token))
        serve.record_peak_rss()
        out["peak_rss_kib"] = {"serve": serve.peak_rss_kib, "bare": bare.peak_rss_kib}
    finally:
        with contextlib.suppress(Exception):
            procs.stop(bare_proc)
        stop_tree(procs, serve)
    return out


def _schedule(
    wrk: str, cfg: Config, serve: Server, token: str, connections: int, run_id: str, target: Target
) -> dict[str, float] | None:
    """Where the machine's idle time fell under `connections` of identify load (bench/schedule.py);
    None without `perf`."""
    recording = Recording(SCHEDULE_DELAY_S, SCHEDULE_RECORD_S)
    if not recording.start():
        log("embedded schedule: no `perf` to record the scheduler with; skipped")
        return None
    run_wrk(wrk, cfg, serve.port, token, connections, SCHEDULE_LOAD_S, run_id, target)
    found = beside_worker(recording.timeline(), _serve_worker(serve))
    log(f"embedded schedule, {connections} connections: {found}")
    return found


def json_key(env: dict[str, str]) -> str:
    import json

    created = json.loads(run_cli(env, "keys", "create", "--scope", "ingest", "--name", "bench", "--json"))
    key: str = created["key"]
    return key


def _drain(cfg: Config, procs: Processes, serve: Server, store: SqliteStore, token: str) -> dict[str, Any]:
    """serve's one worker is paused (SIGSTOP to its process group) while the events are stored, then
    resumed; the clock runs from the resume until no event is pending."""
    wait_until(lambda: store.pending() == 0, 120, "serve's worker to apply the ingest events", interval=0.5)
    worker = _serve_worker(serve)
    group = os.getpgid(worker)
    os.killpg(group, signal.SIGSTOP)
    try:
        log(f"embedded drain: storing {cfg.events:,} events with serve's worker paused")
        seed_batches(serve.port, token, cfg.events, "embedded-drain")
        pending = store.pending()
        started = time.monotonic()
    finally:
        os.killpg(group, signal.SIGCONT)
    wait_until(lambda: store.pending() == 0, 600, "serve's worker to apply every event", interval=0.05)
    seconds = time.monotonic() - started
    log(f"  {pending} events in {seconds:.2f} s = {pending / seconds:.0f} events/s")
    return {
        "drain_events": pending,
        "drain_seconds": round(seconds, 3),
        "drain_events_per_s": round(pending / seconds, 1),
    }
