"""`bench/drain_profile.py workers` and `noop`: the drain timed in real `tributary worker`
processes, and RQ's own rate for a job that does nothing, on the same Redis, for the ratio."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from sqlalchemy import create_engine, text

from bench.harness import Processes

BIN = Path(sys.executable).parent


def workers_run(url: str, env: dict[str, str], count: int, events: int) -> float:
    from rq import Worker

    from tributary.runtime.config import Settings
    from tributary.runtime.doorbell import ring
    from tributary.runtime.process import Runtime

    settings = Settings.load(
        {
            "DATABASE_URL": url,
            "REDIS_URL": env["REDIS_URL"],
            "TRIBUTARY_HOME": env["TRIBUTARY_HOME"],
            "TRIBUTARY_SECRET_KEY": "drain-profile",
        }
    )
    runtime = Runtime(settings)
    runtime.redis.flushdb()
    logs = Path(env["TRIBUTARY_HOME"]) / "logs"
    logs.mkdir(exist_ok=True)
    # Started and stopped as the harness does (SIGTERM, then SIGKILL for the group after 20 s): a
    # worker left behind on this Redis db would take the next run's drain job to a dropped database.
    processes = Processes(logs)
    procs = [processes.start(f"w{count}-{i}", [str(BIN / "tributary"), "worker"], env) for i in range(count)]
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=runtime.redis, queue=runtime.queue) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.monotonic()
        ring(runtime)
        with engine.connect() as conn:
            while conn.execute(
                text("SELECT EXISTS (SELECT 1 FROM events WHERE status = 'pending')")
            ).scalar():
                time.sleep(0.02)
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("drain took over 10 minutes")
            seconds = time.monotonic() - t0
            statuses = dict(conn.execute(text("SELECT status, count(*) FROM events GROUP BY 1")).all())
        if statuses != {"processed": events}:
            raise RuntimeError(f"unexpected statuses {statuses}")
        return seconds
    finally:
        for proc in procs:
            processes.stop(proc)
        engine.dispose()
        runtime.redis.flushdb()


def noop_run(env: dict[str, str], jobs: int) -> float:
    from rq import Queue

    redis = Redis.from_url(env["REDIS_URL"])
    redis.flushdb()
    queue = Queue("drain-profile-noop", connection=redis)
    for start in range(0, jobs, 1000):
        with redis.pipeline() as pipe:
            for _ in range(start, min(start + 1000, jobs)):
                queue.enqueue("bench.noop.noop", pipeline=pipe)
            pipe.execute()
    proc = subprocess.Popen(
        [str(BIN / "tributary"), "worker", "--burst"],
        env={**env, "TRIBUTARY_QUEUE": "drain-profile-noop"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while redis.llen(queue.key) >= jobs:
        if proc.poll() is not None:
            raise SystemExit(f"the no-op worker exited before its first job:\n{proc.stderr.read().decode()}")
        time.sleep(0.002)
    t0 = time.monotonic()
    proc.wait(900)
    seconds = time.monotonic() - t0
    redis.flushdb()
    return seconds
