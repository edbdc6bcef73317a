"""Where identify's time goes inside one web process, step by step.

Run by bench/run.py in a child process whose environment points at the bench database and Redis db
(`BENCH_API_KEY` holds an ingest key). It sends identify requests through Flask's test client (no
HTTP server, no network client) with each step of the view wrapped in a timer, so the steps are
measured in place, inside real requests, and add up to the whole. Timing a step alone in a tight
loop would flatter it: caches and CPython's specializing interpreter stay warm for that one step.

It prints one JSON object: for each step, CPU and wall microseconds per request. CPU is this
process's own time, so it is little disturbed by other load; wall time includes waiting for
PostgreSQL and Redis to answer.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from flask import Flask

from tributary.app import create_app, fast_path
from tributary.app.api import ingest
from tributary.app.event_store import EventStore
from tributary.app.schemas import IdentifyRequest
from tributary.runtime import doorbell

CALLS = int(os.environ.get("BENCH_BREAKDOWN_CALLS", "3000"))
WARMUP = max(100, CALLS // 10)

STEPS = (
    "authenticate: key hash + cached lookup (+ rate limiter hit)",
    "validate: pydantic IdentifyRequest, email-validator",
    "DB: the shared INSERT ... RETURNING, autocommit (group commit: one row at a time here)",
    "Redis: doorbell ring (by the ringer thread, at most once per 20 ms; its share per request)",
    "response: EventAccepted's JSON",
    "rest of the fast path (ids, clocks, project, request body; app/fast_path.py)",
    "the test client around the app (identify skips Flask's request machinery)",
)


class Clock:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.on = False

    def add(self, step: str, cpu: float, wall: float) -> None:
        if self.on:
            self.cpu[step] += cpu
            self.wall[step] += wall

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(step, time.process_time() - cpu, time.perf_counter() - wall)

        return timed


def instrument(clock: Clock) -> None:
    """Wrap each step where the view calls it. Only this child process is patched."""

    def patch(owner: Any, name: str, step: str) -> None:
        setattr(owner, name, clock.wrap(step, getattr(owner, name)))

    patch(fast_path, "principal_for", STEPS[0])
    patch(IdentifyRequest, "model_validate_json", STEPS[1])
    patch(EventStore, "_insert", STEPS[2])
    patch(doorbell, "ring", STEPS[3])
    patch(ingest, "accepted", STEPS[4])
    # Identify is served by app/fast_path.py; patched on the class, before the app is made.
    patch(fast_path.FastPath, "__call__", "view")


def run(app: Flask, clock: Clock, token: str) -> dict[str, dict[str, float]]:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    numbers = itertools.count()

    def request() -> None:
        i = next(numbers)
        body = json.dumps(
            {
                "email": f"breakdown-{os.getpid()}-{i}@example.com",
                "name": "Bench User",
                "status": "trial",
                "params": {"plan": "pro", "seats": i % 50},
            }
        )
        response = client.post("/v1/identify", data=body, headers=headers)
        if response.status_code != 202:
            raise RuntimeError(f"identify answered {response.status_code}: {response.get_data(as_text=True)}")

    for _ in range(WARMUP):
        request()
    clock.cpu.clear()
    clock.wall.clear()
    clock.on = True
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(CALLS):
        request()
    total_cpu, total_wall = time.process_time() - cpu, time.perf_counter() - wall
    clock.on = False
    view_cpu, view_wall = clock.cpu.pop("view"), clock.wall.pop("view")
    clock.cpu[STEPS[5]] = view_cpu - sum(clock.cpu.values())
    clock.wall[STEPS[5]] = view_wall - sum(clock.wall.values())
    clock.cpu[STEPS[6]] = total_cpu - view_cpu
    clock.wall[STEPS[6]] = total_wall - view_wall
    steps = {
        step: {
            "cpu_us": round(1e6 * clock.cpu[step] / CALLS, 1),
            "wall_us": round(1e6 * clock.wall[step] / CALLS, 1),
        }
        for step in STEPS
        if step in clock.cpu
    }
    steps["whole request"] = {
        "cpu_us": round(1e6 * total_cpu / CALLS, 1),
        "wall_us": round(1e6 * total_wall / CALLS, 1),
    }
    return steps


def main() -> None:
    token = os.environ["BENCH_API_KEY"]
    clock = Clock()
    instrument(clock)
    # Rate limiting as configured (the bench passes TRIBUTARY_RATE_LIMIT=off); with `limited`, a limit
    # far above what one process can reach, so the limiter's round trip is timed without any 429.
    limited = len(sys.argv) > 1 and sys.argv[1] == "limited"
    app = create_app({"TRIBUTARY_RATE_LIMIT": "1000000/second"} if limited else None)
    json.dump(run(app, clock, token), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
