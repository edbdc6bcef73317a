"""The drain: identify events stored pending, then applied by 1 and by 2 `tributary worker`
processes, beside RQ's own rate for no-op jobs through the same worker class."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.constants import DRAIN_JOB, NOOP_JOB, RING, RUNTIME, SETTINGS, cli, product
from bench.harness import REPO, Environment, Processes, children_cpu, log, wait_until
from bench.options import Config
from bench.procstat import HZ, cpu_breakdown, cpu_snapshot, proc_stat, process_tree, vm_hwm_kib
from bench.servers import Server, seed_batches

NOOP_QUEUE = "tributary-bench-noop"


@dataclass
class DrainRun:
    workers: int
    events: int
    batch_size: int
    seconds: float
    events_per_s: float
    statuses: dict[str, int]
    customers: int
    drain_jobs_per_worker: list[int]
    seed_seconds: float
    cpu_s: dict[str, float]
    cpu_ms_per_event: dict[str, float]
    peak_rss_kib: dict[str, int]


@dataclass
class NoopRun:
    jobs: int
    seconds: float
    jobs_per_s: float
    jobs_ok: int
    queue_left: int
    failed: int
    cpu_s: dict[str, float]
    cpu_ms_per_job: dict[str, float]
    peak_rss_kib: dict[str, int]


def _runtime(env: Environment, queue: str | None = None) -> Any:
    """The product's runtime (its Redis connection and queue), configured as the children are."""
    overrides = {
        k: v for k, v in env.env().items() if k.startswith(("DATABASE_URL", "REDIS_URL", "TRIBUTARY_"))
    }
    if queue:
        overrides["TRIBUTARY_QUEUE"] = queue
    return product(RUNTIME)(product(SETTINGS).load(overrides))


def _peak_rss(root: int, label: str) -> dict[str, int]:
    """VmHWM of a process (as `label`) and of its children (`label child <pid>`), in KiB."""
    peaks = {}
    for pid in process_tree(root):
        hwm = vm_hwm_kib(pid)
        if hwm is not None:
            # A long-running RQ worker forks its scheduler (the only child it has).
            peaks[label if pid == root else f"{label}'s scheduler {pid}"] = hwm
    return peaks


def _jobs_ok(log_file: Path, job: str) -> int:
    try:
        text_ = log_file.read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(rf"Successfully completed {re.escape(job)}\(", text_))


def measure_drain(
    cfg: Config,
    env: Environment,
    procs: Processes,
    server: Server,
    token: str,
    workers: int,
    batch_size: int | None = None,
    name: str | None = None,
) -> DrainRun:
    """`cfg.events` events stored pending, then applied by `workers` long-running workers (with
    TRIBUTARY_BATCH_SIZE=`batch_size`, default the configured one), timed from the first ring."""
    from rq import Worker

    batch_size = batch_size or cfg.batch_size
    name = name or f"drain{workers}"
    ring = product(RING)
    # A clean slate: no customers, no events, an empty queue. TRUNCATE … CASCADE follows every
    # foreign key, so tables added later are cleared too; accounts, projects and keys stay.
    env.execute("TRUNCATE events, customers RESTART IDENTITY CASCADE")
    env.redis.flushdb()
    log(f"drain x{workers}: storing {cfg.events:,} identify events through /v1/batch (no worker running)")
    seed_seconds = seed_batches(server.port, token, cfg.events, name, threads=cfg.seed_threads)
    pending = int(env.scalar("SELECT count(*) FROM events WHERE status = 'pending'"))
    if pending != cfg.events:
        raise RuntimeError(f"expected {cfg.events} pending events after seeding, found {pending}")
    # Seeding rang the doorbell and queued one drain job; drop it so the clock starts with the ring below.
    env.redis.flushdb()

    runtime = _runtime(env)
    # The sweeper would ring on its own for events older than 30 s, possibly before the clock starts.
    worker_env = env.env(TRIBUTARY_SWEEP_AFTER_SECONDS="3600", TRIBUTARY_BATCH_SIZE=str(batch_size))
    started = [procs.start(f"{name}-worker{i}", cli("worker"), worker_env) for i in range(workers)]
    wait_until(
        lambda: Worker.count(connection=runtime.redis, queue=runtime.queue) >= workers,
        60,
        "the workers to register",
    )
    for proc in started:
        if proc.poll() is not None:
            raise RuntimeError("a worker exited at start (see its log)")
    time.sleep(0.5)  # let each worker reach its blocking dequeue
    roles = {f"worker {i}": process_tree(p.pid) for i, p in enumerate(started)}
    before = cpu_snapshot()
    t0 = time.monotonic()
    ring(runtime)

    def done() -> bool:
        return not env.scalar("SELECT EXISTS (SELECT 1 FROM events WHERE status = 'pending')")

    wait_until(done, 600, "the workers to apply every event")
    seconds = time.monotonic() - t0
    after = cpu_snapshot()
    cpu = cpu_breakdown(before, after, roles, env.database)
    peak: dict[str, int] = {}
    for i, proc in enumerate(started):
        peak.update(_peak_rss(proc.pid, f"worker {i}"))
    for proc in started:
        procs.stop(proc)
    jobs = [_jobs_ok(procs.log_dir / f"{name}-worker{i}.log", DRAIN_JOB) for i in range(workers)]
    with env.engine.connect() as conn:  # type: ignore[union-attr]
        statuses = {
            s: int(n) for s, n in conn.execute(text("SELECT status, count(*) FROM events GROUP BY 1"))
        }
    customers = int(env.scalar("SELECT count(*) FROM customers"))
    if sum(statuses.values()) != cfg.events or statuses.get("pending", 0):
        raise RuntimeError(f"event count mismatch after the drain: {statuses}")
    per_event = {
        role: round(1000 * s / cfg.events, 3)
        for role, s in cpu.items()
        if role not in ("machine busy", "machine capacity")
    }
    return DrainRun(
        workers=workers,
        events=cfg.events,
        batch_size=batch_size,
        seconds=round(seconds, 3),
        events_per_s=round(cfg.events / seconds, 1),
        statuses=statuses,
        customers=customers,
        drain_jobs_per_worker=jobs,
        seed_seconds=round(seed_seconds, 1),
        cpu_s=cpu,
        cpu_ms_per_event=per_event,
        peak_rss_kib=peak,
    )


def measure_noop(cfg: Config, env: Environment, procs: Processes) -> NoopRun:
    from rq.registry import FailedJobRegistry

    runtime = _runtime(env, NOOP_QUEUE)
    queue = runtime.queue
    queue.empty()
    log(f"no-op: queueing {cfg.noop_jobs:,} jobs on {NOOP_QUEUE}")
    for start in range(0, cfg.noop_jobs, 1000):
        with runtime.redis.pipeline() as pipe:
            for _ in range(start, min(start + 1000, cfg.noop_jobs)):
                # RQ's default job options: the fastest for RQ, so the baseline is not lowered to
                # flatter the drain. (`ring()`'s result_ttl=0 makes RQ delete each finished job with
                # an LREM that scans the whole queued list: 25-30% fewer no-op jobs per second here.)
                queue.enqueue(NOOP_JOB, pipeline=pipe)
            pipe.execute()
    if queue.count != cfg.noop_jobs:
        raise RuntimeError(f"expected {cfg.noop_jobs} queued no-op jobs, found {queue.count}")
    # `bench.noop` must be importable by the worker: the repository root goes on its path.
    worker_env = env.env(TRIBUTARY_QUEUE=NOOP_QUEUE, TRIBUTARY_SWEEP_AFTER_SECONDS="3600")
    worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    log("no-op: running `tributary worker --burst` on them")
    redis = runtime.redis
    key = queue.key
    proc = procs.start("noop-worker", cli("worker", "--burst"), worker_env)
    # The clock starts when the worker takes its first job (process start-up is not RQ's job rate)
    # and stops when the burst worker finds the queue empty and exits.
    deadline = time.monotonic() + 60
    while redis.llen(key) >= cfg.noop_jobs:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the no-op worker never took a job (see its log)")
        time.sleep(0.002)
    t0 = time.monotonic()
    before = cpu_snapshot()
    startup = proc_stat(proc.pid)
    startup_cpu = startup[3] / HZ if startup else 0.0
    children_before = children_cpu()
    peak: dict[str, int] = {}
    deadline = time.monotonic() + 900
    next_rss = 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError("the no-op worker did not finish in 15 minutes")
        if now >= next_rss:
            peak.update(_peak_rss(proc.pid, "worker"))
            next_rss = now + 0.25
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    after = cpu_snapshot()
    # The worker has exited: its CPU is what the kernel credited to us, its parent, minus start-up.
    worker_cpu = children_cpu() - children_before - startup_cpu
    cpu = cpu_breakdown(before, after, {}, env.database, {"worker": worker_cpu})
    procs.stop(proc)
    ok = _jobs_ok(procs.log_dir / "noop-worker.log", NOOP_JOB)
    failed = FailedJobRegistry(queue=queue).count
    left = queue.count
    if ok != cfg.noop_jobs or failed or left:
        raise RuntimeError(f"no-op run incomplete: {ok} ok, {failed} failed, {left} left in the queue")
    per_job = {
        role: round(1000 * s / cfg.noop_jobs, 3)
        for role, s in cpu.items()
        if role not in ("machine busy", "machine capacity")
    }
    return NoopRun(
        jobs=cfg.noop_jobs,
        seconds=round(seconds, 3),
        jobs_per_s=round(cfg.noop_jobs / seconds, 1),
        jobs_ok=ok,
        queue_left=left,
        failed=failed,
        cpu_s=cpu,
        cpu_ms_per_job=per_job,
        peak_rss_kib=peak,
    )


def drain_phase(
    cfg: Config, env: Environment, procs: Processes, server: Server, token: str, results: dict[str, Any]
) -> list[DrainRun]:
    runs: list[DrainRun] = []
    for workers in (1, 2):
        run = measure_drain(cfg, env, procs, server, token, workers)
        runs.append(run)
        results["drain"].append(asdict(run))
        log(f"  {workers} worker(s): {run.events_per_s:.0f} events/s in {run.seconds:.2f} s, {run.statuses}")
    return runs


def stop_tributary(procs: Processes, server: Server, results: dict[str, Any]) -> None:
    """Its peak memory includes storing the drain events; listed after the bare app."""
    server.record_peak_rss()
    entry = {"name": server.name, "label": server.label, "peak_rss_kib": server.peak_rss_kib}
    results["servers"].insert(min(1, len(results["servers"])), entry)
    procs.stop(server.proc)
