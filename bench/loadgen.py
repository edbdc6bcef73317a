"""Open-loop load: requests sent on a fixed schedule (request i at start + i / rate), whatever the
server's answers, over a pool of keep-alive HTTP/1.1 connections (asyncio, standard library only).

wrk keeps a fixed number of requests in flight (closed loop): a slow server is offered less. This
generator keeps offering the rate, so a server that falls behind shows it as a growing backlog and
latency, counted from each request's scheduled time (no coordinated omission).

Run as a child of the harness: `python -m bench.loadgen SPEC.json OUT.json`. SPEC keys: port, rate,
duration, kind ("identify" with token, or "stripe" with secret and path), prefix, and optionally
track_every / read_token / poll_interval: every track_every-th request's customer is then polled
with `GET /v1/customers/<email>` until it answers 200, and the time from the POST being sent to
that answer is recorded as its visibility latency.
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


class Pool:
    """Keep-alive connections to one port, opened on demand up to a cap."""

    def __init__(self, port: int, cap: int) -> None:
        self.port, self.cap, self.opened = port, cap, 0
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def _acquire(self) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        """An idle connection (reused: True) or a new one; waits while the cap is reached."""
        while True:
            if not self.idle.empty():
                return self.idle.get_nowait(), True
            if self.opened < self.cap:
                self.opened += 1
                try:
                    return await asyncio.open_connection("127.0.0.1", self.port), False
                except OSError:
                    self.opened -= 1
                    raise
            await asyncio.sleep(0.002)

    async def fetch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        conn, reused = await self._acquire()
        try:
            return await self._exchange(conn, method, path, headers, body)
        except (OSError, asyncio.IncompleteReadError):
            if not reused:
                raise
        # The server closed an idle keep-alive connection (gunicorn's keepalive): retry on a new one,
        # as HTTP clients do.
        conn, _ = await self._acquire()
        return await self._exchange(conn, method, path, headers, body)

    async def _exchange(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> int:
        reader, writer = conn
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "Content-Type: application/json\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        try:
            writer.write(head.encode("latin-1") + b"\r\n" + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.opened -= 1
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.opened -= 1
            writer.close()
        else:
            self.idle.put_nowait(conn)
        return status


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    rate, duration = float(spec["rate"]), float(spec["duration"])
    total = int(rate * duration)
    writes, reads = Pool(spec["port"], MAX_CONNECTIONS), Pool(spec["port"], 16)
    statuses: Counter[str] = Counter()
    latency: list[float] = []
    lag: list[float] = []
    visible: list[float] = []
    never = 0
    track_every = int(spec.get("track_every") or 0)
    read_headers = {"Authorization": f"Bearer {spec.get('read_token', '')}"}
    poll = float(spec.get("poll_interval", 0.02))

    async def watch(email: str, sent_at: float) -> None:
        nonlocal never
        path = f"/v1/customers/{quote(email, safe='')}"
        while time.monotonic() - sent_at < VISIBLE_TIMEOUT_S:
            try:
                if await reads.fetch("GET", path, read_headers, b"") == 200:
                    visible.append(1000 * (time.monotonic() - sent_at))
                    return
            except Exception:  # a failed read is retried at the next poll
                pass
            # Fine-grained near the target (250 ms), coarser after: an overloaded server must not
            # also drown in polls.
            waited = time.monotonic() - sent_at
            await asyncio.sleep(poll if waited < 0.5 else 5 * poll if waited < 3 else 25 * poll)
        never += 1

    async def send(i: int, due: float) -> None:
        path, headers, body, email = build(spec, i)
        sent_at = time.monotonic()
        lag.append(1000 * (sent_at - due))
        try:
            status = await writes.fetch("POST", path, headers, body)
        except Exception as exc:  # counted, never fatal: the schedule goes on
            statuses[f"error {type(exc).__name__}"] += 1
            return
        latency.append(1000 * (time.monotonic() - due))
        statuses[str(status)] += 1
        if track_every and i % track_every == 0 and 200 <= status < 300:
            await watch(email, sent_at)

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_by = time.monotonic()
    if tasks:
        await asyncio.wait(tasks, timeout=VISIBLE_TIMEOUT_S + 30)
    return {
        "rate": rate,
        "scheduled": total,
        "sending_seconds": round(sent_by - start, 3),
        "answered_seconds": round(time.monotonic() - start, 3),
        "statuses": dict(statuses),
        "latency_ms": percentiles(latency),
        "send_lag_ms": percentiles(lag),
        "visible_ms": {**percentiles(visible), "never": never},
        "connections_opened": writes.opened,
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
