"""Open-loop load: requests sent on a fixed schedule (request i at start + i / rate), whatever the
server's answers, over a pool of keep-alive HTTP/1.1 connections (bench/http_pool.py: asyncio,
standard library only).

wrk keeps a fixed number of requests in flight (closed loop): a slow server is offered less. This
generator keeps offering the rate, so a server that falls behind shows it as a growing backlog and
latency, counted from each request's scheduled time (no coordinated omission).

Run as a child of the harness: `python -m bench.loadgen SPEC.json OUT.json`. SPEC keys: port, rate,
duration, kind ("identify" with token, or "stripe" with secret and path), prefix, and optionally
track_every / read_token / poll_interval: every track_every-th request's customer is then polled
with `GET /v1/customers/<email>` until it answers 200, and the time from the POST being sent to
that answer is recorded as its visibility latency.

The result counts answers by status (or "error <kind>" for none), the latency from each request's
due time, the generator's own lag behind its schedule, and `connections_opened`: the most
connections it held open at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.constants import LOADGEN_MODULE
from bench.harness import Processes
from bench.http_pool import Job, Pool, request_bytes

MAX_CONNECTIONS = 256
VISIBLE_TIMEOUT_S = 30.0


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)

    return {"count": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe's public scheme: `t=<s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def build(spec: dict[str, Any], i: int) -> tuple[str, dict[str, str], bytes, str]:
    """(path, headers, body, the customer's email) of request i."""
    email = f"{spec['prefix']}-{i}@example.com"
    if spec["kind"] == "identify":
        body = json.dumps(
            {"email": email, "name": "Load", "status": "trial", "params": {"plan": "pro", "seats": i % 50}}
        ).encode()
        return "/v1/identify", {"Authorization": f"Bearer {spec['token']}"}, body, email
    now = int(time.time())
    event = {
        "id": f"evt_{spec['prefix']}x{i}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
        "data": {
            "object": {
                "id": f"cus_{spec['prefix']}x{i}",
                "object": "customer",
                "created": now,
                "email": email,
                "name": "Load Customer",
                "livemode": False,
                "metadata": {},
            }
        },
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    return spec["path"], {"Stripe-Signature": stripe_signature(body, spec["secret"], now)}, body, email


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    rate, duration = float(spec["rate"]), float(spec["duration"])
    total = int(rate * duration)
    writes, reads = Pool(spec["port"], MAX_CONNECTIONS), Pool(spec["port"], 16)
    statuses: Counter[str] = Counter()
    latency: list[float] = []
    lag: list[float] = []
    visible: list[float] = []
    never = 0
    answered = 0
    watchers: set[asyncio.Task[None]] = set()
    track_every = int(spec.get("track_every") or 0)
    read_headers = {"Authorization": f"Bearer {spec.get('read_token', '')}"}
    poll = float(spec.get("poll_interval", 0.02))

    async def watch(email: str, sent_at: float) -> None:
        nonlocal never
        path = f"/v1/customers/{quote(email, safe='')}"
        while time.monotonic() - sent_at < VISIBLE_TIMEOUT_S:
            if await reads.fetch("GET", path, read_headers, b"") == 200:  # errors: polled again
                visible.append(1000 * (time.monotonic() - sent_at))
                return
            # Fine-grained near the target (250 ms), coarser after: an overloaded server must not
            # also drown in polls.
            waited = time.monotonic() - sent_at
            await asyncio.sleep(poll if waited < 0.5 else 5 * poll if waited < 3 else 25 * poll)
        never += 1

    def on_answer(job: Job, status: int | str) -> None:
        nonlocal answered
        answered += 1
        statuses[str(status)] += 1
        if isinstance(status, str):
            return  # an error: counted, never fatal, the schedule goes on
        latency.append(1000 * (time.monotonic() - job.due))
        if job.watch is not None and 200 <= status < 300:
            task = asyncio.get_running_loop().create_task(watch(job.watch, job.sent_at))
            watchers.add(task)
            task.add_done_callback(watchers.discard)

    start = time.monotonic() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # one wake sends every request due by then
        path, headers, body, email = build(spec, i)
        tracked = email if track_every and i % track_every == 0 else None
        job = Job(request_bytes("POST", path, headers, body), due, on_answer, tracked)
        lag.append(1000 * (time.monotonic() - due))
        writes.submit(job)
    sent_by = time.monotonic()
    deadline = sent_by + VISIBLE_TIMEOUT_S + 30
    while (answered < total or watchers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return {
        "rate": rate,
        "scheduled": total,
        "sending_seconds": round(sent_by - start, 3),
        "answered_seconds": round(time.monotonic() - start, 3),
        "statuses": dict(statuses),
        "unanswered": total - answered,
        "latency_ms": percentiles(latency),
        "send_lag_ms": percentiles(lag),
        "visible_ms": {**percentiles(visible), "never": never},
        "connections_opened": writes.peak,
    }


def run_open_loop(
    procs: Processes, name: str, spec: dict[str, Any], during: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run the generator in a child process (its CPU is not the harness's); call `during` about once
    a second while it runs (the sustained phase samples the backlog); return its result."""
    spec_file = procs.log_dir / f"{name}.spec.json"
    out_file = procs.log_dir / f"{name}.out.json"
    spec_file.write_text(json.dumps(spec))
    proc = procs.start(
        name, [sys.executable, "-m", LOADGEN_MODULE, str(spec_file), str(out_file)], os.environ
    )
    deadline = time.monotonic() + float(spec["duration"]) + VISIBLE_TIMEOUT_S + 90
    while proc.poll() is None:
        if time.monotonic() > deadline:
            procs.stop(proc)
            raise RuntimeError(f"the load generator {name} did not finish")
        if during is not None:
            during()
        time.sleep(1.0 if during is not None else 0.1)
    procs.stop(proc)
    if proc.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"the load generator {name} failed (exit {proc.returncode}; see its log)")
    result: dict[str, Any] = json.loads(out_file.read_text())
    return result


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(spec))
    Path(sys.argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
