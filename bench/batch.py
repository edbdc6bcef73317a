#!/usr/bin/env python
"""`python bench/batch.py`: events stored per second through `POST /v1/batch` (100 messages per
request) beside single `POST /v1/identify`, in one run on the same gunicorn + PostgreSQL + Redis
set-up as `bench/run.py` (whose harness it reuses), then the Python SDK's cost per `identify()` on the
caller's thread in background mode. See bench/README.md, "Batch ingest and the Python SDK"."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.constants import WSGI_APP
from bench.harness import BENCH, Environment, Processes, log, on_signal, wait_for_quiet
from bench.options import parse_args
from bench.servers import start_server
from bench.wrk import IngestPoint, Target, ensure_wrk, measure_ingest


def sdk_overhead(port: int, token: str, calls: int) -> dict[str, float]:
    """Time each `identify()` on this thread while the SDK's sender posts to the real server."""
    from tributary_sdk import Tributary

    client = Tributary(token, base_url=f"http://127.0.0.1:{port}", max_queue_size=calls + 1)
    for n in range(1000):  # warm up: the sender thread starts, connections open
        client.identify(f"warm-{n}@example.com", params={"plan": "pro"})
    client.flush()
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = time.monotonic()
    for n in range(calls):
        before = clock()
        client.identify(f"sdk-{n}@example.com", name="Bench User", status="trial", params={"plan": "pro"})
        samples.append(clock() - before)
    calls_s = time.monotonic() - started
    assert client.flush(timeout=120), "the SDK did not deliver everything"
    delivered_s = time.monotonic() - started
    assert client.dropped == 0 and client.shutdown()
    samples.sort()
    return {
        "calls": calls,
        "median_us": statistics.median(samples) / 1000,
        "p90_us": samples[int(len(samples) * 0.9)] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "calls_seconds": round(calls_s, 3),
        "delivered_events_per_s": round(calls / delivered_s, 1),
    }


def _events_per_s(point: IngestPoint) -> float:
    return (point.events_stored or 0) / point.duration_s


def _cpu_ms_per_event(point: IngestPoint) -> float:
    """CPU of everything serving the load (web, PostgreSQL, Redis, wrk) per stored event: unlike
    events/s, it hardly moves when other work shares the machine (bench/README.md)."""
    ours = sum(point.cpu_s.get(role, 0.0) for role in ("web", "postgres", "redis", "wrk"))
    return 1000 * ours / max(1, point.events_stored or 0)


def _other_load(point: IngestPoint) -> float:
    return point.cpu_s["other"] / max(1e-9, point.cpu_s["machine capacity"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="Messages per /v1/batch request.")
    parser.add_argument("--sdk-calls", type=int, default=20_000)
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="Seconds to wait for a quiet machine.")
    args = parser.parse_args()
    cfg = parse_args(
        [
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--connections",
            str(args.connections),
        ]
    )
    signal.signal(signal.SIGTERM, on_signal)
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="tributary-bench-batch-"))
    (workdir / "home").mkdir()
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    env = Environment(cfg, workdir / "home")
    try:
        wait_for_quiet(cfg.wait_quiet)
        token = env.prepare()
        server = start_server(
            procs,
            "tributary",
            "Tributary",
            WSGI_APP,
            env.env(TRIBUTARY_RATE_LIMIT="off"),
            cfg.web_workers,
            token,
        )
        run = itertools.count()
        log(f"single /v1/identify, {args.connections} connections, {args.duration} s")
        single = measure_ingest(wrk, cfg, env, server, token, args.connections, run)
        log(f"/v1/batch with {args.batch} messages, {args.connections} connections, {args.duration} s")
        target = Target(script=BENCH / "batch.lua", path="/v1/batch", env={"BENCH_BATCH": str(args.batch)})
        batch = measure_ingest(
            wrk, cfg, env, server, token, args.connections, run, target, ("batch", "Tributary /v1/batch")
        )
        log(f"Python SDK: {args.sdk_calls} identify() calls in background mode")
        sdk = sdk_overhead(server.port, token, args.sdk_calls)
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    single_eps, batch_eps = _events_per_s(single), _events_per_s(batch)
    print()
    print(
        f"{'':26} {'req/s':>7} {'events/s':>9} {'CPU ms/event':>13} {'p50 ms':>7} {'p99 ms':>8}"
        f" {'non-2xx':>7} {'other load':>10}"
    )
    for name, point in (("/v1/identify", single), (f"/v1/batch ({args.batch}/request)", batch)):
        print(
            f"{name:26} {point.requests_per_s:>7.1f} {_events_per_s(point):>9.1f}"
            f" {_cpu_ms_per_event(point):>13.3f} {point.p50_ms:>7.1f} {point.p99_ms:>8.1f}"
            f" {point.non_2xx:>7} {_other_load(point):>10.0%}"
        )
    by_cpu = _cpu_ms_per_event(single) / max(_cpu_ms_per_event(batch), 1e-9)
    print(
        f"batch / single, events stored per second: {batch_eps / max(single_eps, 1e-9):.1f}x"
        f" (by CPU per event: {by_cpu:.1f}x)"
    )
    print(
        f"SDK identify() on the caller's thread ({sdk['calls']} calls): median {sdk['median_us']:.1f} µs,"
        f" p90 {sdk['p90_us']:.1f} µs, p99 {sdk['p99_us']:.1f} µs;"
        f" delivered {sdk['delivered_events_per_s']:.0f} events/s end to end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
