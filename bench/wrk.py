"""Closed-loop load with `wrk`: a Lua script per request kind, its summary parsed from done()."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.harness import BENCH, log
from bench.options import Config
from bench.procstat import cpu_breakdown, cpu_snapshot
from bench.servers import Server

LUA = BENCH / "identify.lua"


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise SystemExit("wrk is not installed and apt-get is unavailable: install wrk and run again")
    log("installing wrk (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing after apt-get install")
    return found


@dataclass(frozen=True)
class Target:
    """What wrk sends: a Lua script, a path on the server, and the script's environment."""

    script: Path = LUA
    path: str = "/v1/identify"
    env: Mapping[str, str] = field(default_factory=dict)


def run_wrk(
    wrk: str,
    cfg: Config,
    port: int,
    token: str,
    connections: int,
    seconds: int,
    run_id: str,
    target: Target | None = None,
) -> tuple[dict[str, Any], float]:
    """One wrk run; returns wrk's summary (from the script's done()) and wrk's own CPU seconds."""
    target = target or Target()
    args = [
        wrk,
        f"-t{min(cfg.wrk_threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(target.script),
        f"http://127.0.0.1:{port}{target.path}",
    ]
    threads = str(min(cfg.wrk_threads, connections))
    env = {**os.environ, "BENCH_API_KEY": token, "BENCH_RUN_ID": run_id, "BENCH_WRK_THREADS": threads}
    env.update(target.env)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + seconds + 30
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("wrk did not finish in time")
                time.sleep(0.05)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read().decode(errors="replace")
    match = re.search(r"^BENCH_JSON (\{.*\})$", output, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{output}")
    summary: dict[str, Any] = json.loads(match.group(1))
    return summary, usage.ru_utime + usage.ru_stime


@dataclass
class IngestPoint:
    app: str
    label: str
    connections: int
    duration_s: float
    requests: int
    requests_per_s: float
    accepted: int  # 2xx/3xx answers: 202 for identify
    accepted_per_s: float
    non_2xx: int
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    events_stored: int | None
    cpu_s: dict[str, float]
    cpu_ms_per_request: dict[str, float]
    # Which round of the ingest phase measured it (`--rounds`; bench/ingest.py).
    round: int = 0


class EventStore(Protocol):
    """Where a server stores events: its database's name (for the CPU accounting) and a count."""

    database: str

    def count_events(self) -> int: ...


def measure_ingest(
    wrk: str,
    cfg: Config,
    env: EventStore,
    server: Server,
    token: str,
    connections: int,
    run: Iterator[int],
    target: Target | None = None,
    app: tuple[str, str] | None = None,
    round_no: int = 0,
) -> IngestPoint:
    """One load point. `target` and `app` (name, label) measure another route of the same server;
    `round_no` is the round of the ingest phase it belongs to."""
    if cfg.warmup > 0:
        run_wrk(wrk, cfg, server.port, token, connections, cfg.warmup, f"w{next(run)}", target)
    counts_events = not server.name.startswith("bare")
    stored_before = env.count_events() if counts_events else 0
    before = cpu_snapshot()
    summary, wrk_cpu = run_wrk(
        wrk, cfg, server.port, token, connections, cfg.duration, f"m{next(run)}", target
    )
    after = cpu_snapshot()
    stored = None
    if counts_events:
        time.sleep(0.5)  # requests in flight when wrk stopped still commit
        stored = env.count_events() - stored_before
    cpu = cpu_breakdown(before, after, {"web": server.pids()}, env.database, {"wrk": wrk_cpu})
    duration = summary["duration_us"] / 1e6
    errors = summary["errors"]
    requests = int(summary["requests"])
    non_2xx = int(errors["status"])
    accepted = requests - non_2xx
    per_request = {
        role: round(1000 * seconds / max(1, requests), 3)
        for role, seconds in cpu.items()
        if role not in ("machine busy", "machine capacity")
    }
    return IngestPoint(
        app=app[0] if app else server.name,
        label=app[1] if app else server.label,
        connections=connections,
        duration_s=round(duration, 3),
        requests=requests,
        requests_per_s=round(requests / duration, 1),
        accepted=accepted,
        accepted_per_s=round(accepted / duration, 1),
        non_2xx=non_2xx,
        socket_errors={k: int(v) for k, v in errors.items() if k != "status"},
        p50_ms=round(summary["p50_us"] / 1000, 2),
        p99_ms=round(summary["p99_us"] / 1000, 2),
        max_ms=round(summary["max_us"] / 1000, 2),
        events_stored=stored,
        cpu_s=cpu,
        cpu_ms_per_request=per_request,
        round=round_no,
    )
