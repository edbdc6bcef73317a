"""Sustained end to end: the web server and 2 workers under open-loop Stripe webhooks at rising
rates; the highest rate whose backlog stays flat, and at one rate (200/s) how long a webhook takes
to become visible through `GET /v1/customers/<email>`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.constants import BARE_APP, LOADGEN_MODULE, cli
from bench.harness import Environment, Processes, log, wait_until
from bench.ingest_kinds import STRIPE_SECRET, create_stripe_source
from bench.loadgen import run_open_loop
from bench.options import Config
from bench.procstat import CpuSnapshot, cpu_breakdown, cpu_snapshot
from bench.servers import Server, start_server

PENDING = "SELECT count(*) FROM events WHERE status = 'pending'"
# Events polled for visibility per second of load: enough samples, little extra read load.
TRACKED_PER_S = 2
# How long bare Flask is offered each rate: its CPU at a fixed rate settles within seconds.
BARE_SECONDS = 10


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares growth of the backlog, events per second."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var if var else 0.0


def cpu_split(
    first: CpuSnapshot, last: CpuSnapshot, roles: dict[str, list[int]], database: str
) -> dict[str, float]:
    """CPUs each role used on average between two snapshots taken while the load ran (2.0 is the
    whole of a 2-CPU machine): whether a rate that is not flat ran out of machine, and who had it."""
    seconds = max(1e-9, last.at - first.at)
    spent = cpu_breakdown(first, last, roles, database)
    return {role: round(used / seconds, 2) for role, used in spent.items() if role != "bench harness"}


def generator_pids(first: CpuSnapshot, last: CpuSnapshot) -> list[int]:
    """The load generator's processes, named by either snapshot: by the last one it may have exited,
    and until it is reaped its CPU is still counted but its command line is empty."""
    return sorted(
        {pid for snap in (first, last) for pid, (label, _) in snap.procs.items() if LOADGEN_MODULE in label}
    )


def _stripe_load(server: Server, rate: int, seconds: float, path: str, prefix: str) -> dict[str, Any]:
    """The generator's spec: signed Stripe webhooks to `path` at `rate` for `seconds`."""
    return {
        "port": server.port,
        "rate": rate,
        "duration": seconds,
        "kind": "stripe",
        "secret": STRIPE_SECRET,
        "path": path,
        "prefix": prefix,
    }


def _held(
    procs: Processes,
    name: str,
    spec: dict[str, Any],
    roles: Callable[[], dict[str, list[int]]],
    database: str,
    sample: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The generator's result, and the CPUs each of `roles` (and the generator) used between the
    first and the latest snapshot taken about once a second while it ran, after `sample` when
    given: both snapshots are taken while the load runs."""
    snapshots: list[CpuSnapshot] = []

    def during() -> None:
        if sample is not None:
            sample()
        snapshots[1:] = [cpu_snapshot()]

    load = run_open_loop(procs, name, spec, during=during)
    if len(snapshots) != 2:
        return load, {}
    split = {**roles(), "load generator": generator_pids(*snapshots)}
    return load, cpu_split(snapshots[0], snapshots[1], split, database)


def _step(
    cfg: Config,
    env: Environment,
    procs: Processes,
    server: Server,
    workers: list[int],
    source: str,
    read_token: str,
    rate: int,
) -> dict[str, Any]:
    samples: list[tuple[float, int]] = []
    started = time.monotonic()

    def sample() -> None:
        samples.append((round(time.monotonic() - started, 2), int(env.scalar(PENDING))))

    spec = _stripe_load(server, rate, cfg.sustained_window, f"/webhooks/{source}", f"sus{rate}")
    if rate == cfg.latency_rate:
        spec.update(track_every=max(1, rate // TRACKED_PER_S), read_token=read_token, poll_interval=0.02)
    load, cpus = _held(
        procs,
        f"sustained-{rate}",
        spec,
        lambda: {"web": server.pids(), "workers": workers},
        env.database,
        sample,
    )
    window = [(t, v) for t, v in samples if t <= cfg.sustained_window]
    accepted = sum(n for status, n in load["statuses"].items() if status.startswith("2"))
    growth = slope(window)
    kept_up = (
        accepted >= 0.98 * load["scheduled"]
        and load["send_lag_ms"].get("p99", 0) <= 1000  # the generator itself kept the schedule
        and load["latency_ms"].get("p99", 0) <= 2000  # the web server answered as they came
    )
    # Flat: over the window the backlog grew by less than one second's worth of arrivals.
    flat = kept_up and growth * cfg.sustained_window <= rate
    return {
        "rate": rate,
        "accepted": accepted,
        "accepted_per_s": round(accepted / cfg.sustained_window, 1),
        "backlog_samples": window,
        "backlog_first": window[0][1] if window else 0,
        "backlog_last": window[-1][1] if window else 0,
        "backlog_slope": round(growth, 2),
        "kept_up": kept_up,
        "flat": flat,
        "cpu_cpus": cpus,
        "load": load,
    }


def bare_baseline(
    cfg: Config, env: Environment, procs: Processes, token: str, rates: list[int]
) -> dict[str, dict[str, Any]]:
    """Bare Flask (bench/bare_app.py) under the shipped gunicorn configuration, offered the same
    signed webhooks open-loop at each rate the phase ran, for BARE_SECONDS: the CPUs its web took.
    The target is a rate, not a ratio, and at a steady rate gthread's hand-offs between threads cost
    a request about twice what they do under wrk's closed loop: this says how much of the web's
    CPU at a rate is the stack's before Tributary does anything."""
    server = start_server(procs, "sustained-bare", "bare Flask", BARE_APP, env.env(), None, token)
    out: dict[str, dict[str, Any]] = {}
    try:
        seconds = 3 if cfg.quick else BARE_SECONDS
        for rate in rates:
            log(f"sustained baseline: bare Flask, {rate} webhooks/s open-loop for {seconds} s")
            # bare Flask's one endpoint answers whatever is posted
            spec = _stripe_load(server, rate, seconds, "/v1/identify", f"bare{rate}")
            load, cpus = _held(
                procs, f"sustained-bare-{rate}", spec, lambda: {"web": server.pids()}, env.database
            )
            out[str(rate)] = {
                "cpu_cpus": cpus,
                "latency_ms": load["latency_ms"],
                "statuses": load["statuses"],
            }
            log(f"  web {cpus.get('web', '-')} CPUs, answers {load['statuses']}")
    finally:
        procs.stop(server.proc)
    return out


def sustained_phase(
    cfg: Config, env: Environment, procs: Processes, server: Server, read_token: str
) -> dict[str, Any]:
    env.execute("TRUNCATE events, customers RESTART IDENTITY CASCADE")
    source = create_stripe_source(env)
    workers = [procs.start(f"sustained-worker{i}", cli("worker"), env.env()) for i in range(2)]
    steps: list[dict[str, Any]] = []
    visible: dict[str, Any] = {}

    def run(rate: int) -> dict[str, Any]:
        log(f"sustained: {rate} webhooks/s open-loop for {cfg.sustained_window} s (web + 2 workers)")
        step = _step(cfg, env, procs, server, [w.pid for w in workers], source, read_token, rate)
        steps.append(step)
        log(
            f"  {step['accepted_per_s']:.0f}/s answered 2xx, backlog {step['backlog_first']} -> "
            f"{step['backlog_last']} (slope {step['backlog_slope']:.1f}/s): "
            f"{'flat' if step['flat'] else 'NOT flat'}"
        )
        return step

    def drained(timeout: float) -> None:
        # The next rate starts from an empty backlog.
        wait_until(lambda: int(env.scalar(PENDING)) == 0, timeout, "the backlog to drain", interval=0.5)

    try:
        time.sleep(2.0)  # the workers register and reach their blocking dequeue
        rates = sorted(set(cfg.sustained_rates) | {cfg.latency_rate})
        for rate in rates:
            step = run(rate)
            if rate == cfg.latency_rate:
                visible = step["load"]["visible_ms"]
            if not step["flat"] and rate >= cfg.latency_rate:
                break  # higher rates cannot be flat either
            drained(120)
        # Not even the lowest rate was flat (a loaded machine): halve it, twice at most, so the
        # figure is a rate rather than zero.
        probe = rates[0] // 2
        for _ in range(2):
            if any(s["flat"] for s in steps) or probe < 10:
                break
            drained(300)
            run(probe)
            probe //= 2
    finally:
        for proc in workers:
            procs.stop(proc)
    flat_rates = [s["rate"] for s in steps if s["flat"]]
    return {
        "window_s": cfg.sustained_window,
        "latency_rate": cfg.latency_rate,
        "steps": steps,
        "max_flat_rate": max(flat_rates, default=0),
        "visible": visible,
        "visible_p95_ms": visible.get("p95"),
    }


def rates_run(sustained: dict[str, Any]) -> list[int]:
    """The rates the phase held, each once, lowest first: those the baseline offers bare Flask."""
    return sorted({step["rate"] for step in sustained["steps"]})
