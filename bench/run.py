#!/usr/bin/env python
"""Tributary's benchmark: `python bench/run.py` (see bench/README.md for what each figure means).

One run, on this machine, against the local PostgreSQL and Redis:

1. ingest: POST /v1/identify under gunicorn with `wrk`, at 16 and 64 connections, beside a bare
   Flask endpoint served by the same gunicorn settings; Tributary with rate limiting off, and again
   with the default limiter.
2. drain: 20,000 identify events stored pending through the HTTP API, then applied by 1 and by 2
   `tributary worker` processes; beside RQ's own rate for 20,000 no-op jobs through the same worker
   class (`tributary worker --burst` on a queue of no-op jobs).
3. peak RSS (VmHWM) of every web and worker process.

The harness creates and drops its own PostgreSQL database (`tributary_bench_…`), uses one Redis db
index of its own (12-15, claimed with the test harness's lock so test runs skip it), starts and stops
every process it needs in its own session, and cleans up on failure or Ctrl-C. Results are printed
as tables and written to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LUA = BENCH / "identify.lua"
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
# The test harness claims Redis db indexes with this key in db 0; we take ours the same way.
REDIS_DB_LOCK = "tributary:test-db-lock:{}"
NOOP_QUEUE = "tributary-bench-noop"
TRIBUTARY_ENV = ("DATABASE_URL", "REDIS_URL", "TRIBUTARY_")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    pg_url: str
    redis_url: str
    redis_db: int
    connections: tuple[int, ...]
    duration: int
    warmup: int
    wrk_threads: int
    web_workers: int
    events: int
    noop_jobs: int
    batch_size: int
    seed_threads: int
    wait_quiet: float
    keep_logs: bool
    skip_ingest: bool = False
    skip_drain: bool = False


def parse_args(argv: list[str] | None = None) -> Config:
    from tributary.runtime.config import Settings

    parser = argparse.ArgumentParser(
        description="Benchmark identify ingest, the drain workers and their memory (see bench/README.md)."
    )
    parser.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server to use (any database on it; a tributary_bench_* database is created there).",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server to use.")
    parser.add_argument("--redis-db", type=int, default=13, choices=(12, 13, 14, 15), help="Redis db index.")
    parser.add_argument("--connections", default="16,64", help="wrk connection counts (comma separated).")
    parser.add_argument("--duration", type=int, default=10, help="Seconds measured per ingest point.")
    parser.add_argument("--warmup", type=int, default=3, help="Seconds of unmeasured load before each point.")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (one per core here).")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers, both apps.")
    parser.add_argument("--events", type=int, default=20_000, help="Identify events per drain run.")
    parser.add_argument("--noop-jobs", type=int, default=20_000, help="No-op RQ jobs for the baseline.")
    parser.add_argument(
        "--batch-size", type=int, default=Settings.batch_size, help="TRIBUTARY_BATCH_SIZE for the workers."
    )
    parser.add_argument(
        "--seed-threads", type=int, default=16, help="HTTP client threads storing the events."
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="Wait up to this many seconds for other load on the machine to settle before starting.",
    )
    parser.add_argument(
        "--skip-ingest", action="store_true", help="Only the drain, no-op and memory figures."
    )
    parser.add_argument("--skip-drain", action="store_true", help="Only the ingest and memory figures.")
    parser.add_argument("--keep-logs", action="store_true", help="Keep the process logs (printed path).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smoke test: 2 s points, 2,000 events and jobs (numbers meaningless).",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.events, args.noop_jobs = 2, 1, 2_000, 2_000
    connections = tuple(int(c) for c in args.connections.split(",") if c.strip())
    if not connections or min(connections) < 1:
        parser.error("--connections needs positive integers")
    if args.events < 1 or args.noop_jobs < 1 or args.duration <= 0:
        parser.error("--events, --noop-jobs and --duration must be positive")
    return Config(
        pg_url=args.pg,
        redis_url=args.redis.rstrip("/"),
        redis_db=args.redis_db,
        connections=connections,
        duration=args.duration,
        warmup=args.warmup,
        wrk_threads=args.wrk_threads,
        web_workers=args.web_workers,
        events=args.events,
        noop_jobs=args.noop_jobs,
        batch_size=args.batch_size,
        seed_threads=args.seed_threads,
        wait_quiet=args.wait_quiet,
        keep_logs=args.keep_logs,
        skip_ingest=args.skip_ingest,
        skip_drain=args.skip_drain,
    )


# --------------------------------------------------------------------------------------------
# /proc: CPU time and peak memory per process


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, process group, utime + stime in clock ticks) or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    parents: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            parents.setdefault(stat[1], []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is None:
            continue
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of a live process (VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuSnapshot:
    at: float
    busy: int
    total: int
    procs: dict[int, tuple[str, int]]  # pid -> (classification text, ticks)
    self_seconds: float


def cpu_snapshot() -> CpuSnapshot:
    busy, total = _busy_ticks()
    procs: dict[int, tuple[str, int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            procs[pid] = (f"{stat[0]}\0{_cmdline(pid)}", stat[3])
    times = os.times()
    return CpuSnapshot(time.monotonic(), busy, total, procs, times.user + times.system)


# A process serving one database: a client backend ("user db host(port) state") or an autovacuum
# worker ("autovacuum worker db"). The rest (checkpointer, WAL writer, ...) serves everyone.
_PG_FOR_ONE_DATABASE = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]|::1?\(\d+\)|autovacuum worker")


def cpu_breakdown(
    before: CpuSnapshot,
    after: CpuSnapshot,
    roles: Mapping[str, list[int]],
    database: str,
    extra: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by role.

    `roles` maps a role to the pids that play it (web server tree, worker processes). `postgres` is
    our database's backends and autovacuum workers; `pg shared` the server's own processes (WAL
    writer, checkpointer, ...), which also work for other databases (a test run dropping its
    database forces a checkpoint); other databases' backends belong to `other`. `extra` is CPU
    measured elsewhere, for processes that exited before the second snapshot (wrk, from its rusage).
    `other` is everything the machine did that is not ours, including processes that came and went:
    on a shared machine it says how disturbed the measurement was.
    """
    role_of = {pid: role for role, pids in roles.items() for pid in pids}
    spent: dict[str, float] = {role: 0.0 for role in roles}
    spent.update({"postgres": 0.0, "pg shared": 0.0, "redis": 0.0})
    for pid, (label, ticks) in after.procs.items():
        delta = ticks - before.procs.get(pid, (label, 0))[1]
        if delta <= 0 or pid == os.getpid():
            continue
        comm, _, cmd = label.partition("\0")
        if pid in role_of:
            role = role_of[pid]
        elif comm.startswith("redis-server"):
            role = "redis"
        elif cmd.startswith("postgres") or comm == "postgres":
            if f" {database} " in f"{cmd} ":
                role = "postgres"
            elif not _PG_FOR_ONE_DATABASE.search(cmd):
                role = "pg shared"
            else:
                continue  # another database's: part of `other`
        else:
            continue
        spent[role] = spent.get(role, 0.0) + delta / HZ
    spent["bench harness"] = after.self_seconds - before.self_seconds
    for role, seconds in (extra or {}).items():
        spent[role] = spent.get(role, 0.0) + seconds
    busy = (after.busy - before.busy) / HZ
    spent["other"] = max(0.0, busy - sum(spent.values()))
    spent["machine busy"] = busy
    spent["machine capacity"] = (after.total - before.total) / HZ
    return {k: round(v, 3) for k, v in spent.items()}


# --------------------------------------------------------------------------------------------
# Processes we start: each in its own session, stopped by its id, never by name


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                args,
                env=dict(env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        """SIGTERM the process (gunicorn and RQ shut down their children), then SIGKILL whatever is
        left of its process group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f} s; killing its process group")
        for pid in _pids():
            stat = _stat(pid)
            if stat is not None and stat[2] == proc.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc, timeout=10.0)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


# --------------------------------------------------------------------------------------------
# Environment: wrk, PostgreSQL, Redis


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_quiet(limit: float) -> float:
    """Other work on the machine skews every figure. Returns the busy share seen last (0-1)."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0 = _busy_ticks()
        time.sleep(2.0)
        busy1, total1 = _busy_ticks()
        share = (busy1 - busy0) / max(1, total1 - total0)
        if share < 0.15 or time.monotonic() >= deadline:
            if share >= 0.15:
                log(f"WARNING: the machine is {share:.0%} busy with other work; figures will be noisy")
            return share
        log(f"machine is {share:.0%} busy with other work; waiting for it to settle")


class Environment:
    """The bench's own database and Redis db index, created here and removed in `close()`."""

    def __init__(self, cfg: Config, home: Path) -> None:
        self.cfg = cfg
        base = make_url(cfg.pg_url)
        self.database = f"tributary_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.database_url = base.set(database=self.database).render_as_string(hide_password=False)
        self.redis_url = f"{cfg.redis_url}/{cfg.redis_db}"
        self.home = home
        self.secret = secrets.token_urlsafe(16)
        self._admin: Engine = create_engine(base, isolation_level="AUTOCOMMIT")
        self._control = Redis.from_url(f"{cfg.redis_url}/0")
        self._lock_token = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        self._locked = False
        self._created = False
        self.redis = Redis.from_url(self.redis_url)
        self.engine: Engine | None = None

    def open(self) -> None:
        lock = REDIS_DB_LOCK.format(self.cfg.redis_db)
        if not self._control.set(lock, self._lock_token, nx=True, ex=3600):
            raise SystemExit(
                f"Redis db {self.cfg.redis_db} is in use ({lock} is set); pick another --redis-db"
            )
        self._locked = True
        self.redis.flushdb()
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.database}"'))
        self._created = True
        self.engine = create_engine(self.database_url, isolation_level="AUTOCOMMIT", pool_size=2)

    def prepare(self) -> str:
        """Create the database and schema; returns a new ingest key."""
        self.open()
        run_cli(self.env(), "db", "upgrade")
        created = run_cli(self.env(), "keys", "create", "--scope", "ingest", "--name", "bench", "--json")
        token: str = json.loads(created)["key"]
        return token

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self._created:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self._admin.dispose()
        if self._locked:
            self.redis.flushdb()
            lock = REDIS_DB_LOCK.format(self.cfg.redis_db)
            if self._control.get(lock) == self._lock_token.encode():
                self._control.delete(lock)

    def env(self, **overrides: str | None) -> dict[str, str]:
        """A child's environment: ours, with every inherited Tributary variable dropped first."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(TRIBUTARY_ENV)}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            TRIBUTARY_HOME=str(self.home),
            TRIBUTARY_SECRET_KEY=self.secret,
            TRIBUTARY_RATE_LIMIT="off",
            TRIBUTARY_BATCH_SIZE=str(self.cfg.batch_size),
        )
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def scalar(self, sql: str) -> Any:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def execute(self, sql: str) -> None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            conn.execute(text(sql))


def run_cli(env: Mapping[str, str], *args: str) -> str:
    result = subprocess.run(
        ["tributary", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tributary {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


# --------------------------------------------------------------------------------------------
# HTTP: servers, readiness, seeding


def post_identify(port: int, token: str, payload: Mapping[str, Any], timeout: float = 30.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v1/identify",
            json.dumps(payload),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    label: str
    port: int
    proc: subprocess.Popen[bytes]
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def record_peak_rss(self) -> None:
        master = self.proc.pid
        for pid in self.pids():
            hwm = vm_hwm_kib(pid)
            if hwm is not None:
                self.peak_rss_kib["master" if pid == master else f"worker {len(self.peak_rss_kib)}"] = hwm


def gunicorn_args(app: str, port: int, workers: int) -> list[str]:
    # The one gunicorn configuration both apps get (bench/README.md, "Method"): 4 sync workers, as the
    # published figures were measured (the Procfile now runs app/gunicorn_conf.py's gthread workers),
    # which is also 2 per core on this 2-core machine.
    # Sync workers block on each database and Redis round trip, so two per core keep both cores busy
    # while one waits; more only add context switches on a box that also runs PostgreSQL, Redis and wrk.
    return [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--backlog",
        "2048",
        "--timeout",
        "60",
        "--log-level",
        "warning",
        "--chdir",
        str(REPO),
    ]


def start_server(
    procs: Processes, name: str, label: str, app: str, env: Mapping[str, str], workers: int, token: str
) -> Server:
    port = free_port()
    proc = procs.start(name, gunicorn_args(app, port, workers), env)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start (see its log)")
        with contextlib.suppress(OSError):
            status = post_identify(port, token, {"email": "ready@example.com"}, timeout=5.0)
            if status == 202:
                break
            raise RuntimeError(f"{name} answered {status} to a valid identify")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer within 60 s")
        time.sleep(0.2)
    # Every worker process imports the app on its first request; give them one each.
    for _ in range(workers * 4):
        post_identify(port, token, {"email": "ready@example.com"})
    return Server(name, label, port, proc)


def seed_events(port: int, token: str, count: int, prefix: str, threads: int) -> float:
    """Store `count` identify events through the HTTP API, each exactly once (a message_id makes a
    retried request after a lost response a duplicate, not a second event). Returns seconds taken."""
    numbers = itertools.count()
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while not errors:
            with lock:
                i = next(numbers)
            if i >= count:
                return
            payload = {
                "email": f"{prefix}-{i}@example.com",
                "name": "Drain Bench",
                "status": "trial",
                "params": {"plan": "pro", "seats": i % 50},
                "message_id": f"{prefix}-{i}",
            }
            for attempt in range(5):
                try:
                    status = post_identify(port, token, payload)
                except OSError as exc:
                    status = 0
                    reason = str(exc)
                else:
                    reason = f"HTTP {status}"
                if status == 202:
                    break
                time.sleep(0.1 * (attempt + 1))
            else:
                errors.append(f"event {i}: {reason}")

    started = time.monotonic()
    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=600)
    if errors or any(t.is_alive() for t in pool):
        raise RuntimeError(f"seeding failed: {errors[:3] or 'timed out'}")
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Phase 1: ingest


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


def measure_ingest(
    wrk: str,
    cfg: Config,
    env: Environment,
    server: Server,
    token: str,
    connections: int,
    run: Iterator[int],
    target: Target | None = None,
    app: tuple[str, str] | None = None,
) -> IngestPoint:
    """One load point. `target` and `app` (name, label) measure another route of the same server."""
    if cfg.warmup > 0:
        run_wrk(wrk, cfg, server.port, token, connections, cfg.warmup, f"w{next(run)}", target)
    counts_events = server.name != "bare"
    stored_before = int(env.scalar("SELECT count(*) FROM events")) if counts_events else 0
    before = cpu_snapshot()
    summary, wrk_cpu = run_wrk(
        wrk, cfg, server.port, token, connections, cfg.duration, f"m{next(run)}", target
    )
    after = cpu_snapshot()
    stored = None
    if counts_events:
        time.sleep(0.5)  # requests in flight when wrk stopped still commit
        stored = int(env.scalar("SELECT count(*) FROM events")) - stored_before
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
    )


def measure_breakdown(env: Environment, token: str) -> dict[str, dict[str, dict[str, float]]]:
    """bench/breakdown.py in child processes: identify's steps timed in place, inside requests
    served by Flask's test client, with rate limiting off and with a limiter."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, args in (("limiter_off", []), ("limiter_on", ["limited"])):
        result = subprocess.run(
            [sys.executable, "-m", "bench.breakdown", *args],
            env=env.env(BENCH_API_KEY=token),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench/breakdown.py failed:\n{result.stdout}\n{result.stderr}")
        out[variant] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------------------------
# Phase 2: drain and the no-op baseline


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
    from tributary.runtime.config import Settings
    from tributary.runtime.process import Runtime

    overrides = {k: v for k, v in env.env().items() if k.startswith(TRIBUTARY_ENV)}
    if queue:
        overrides["TRIBUTARY_QUEUE"] = queue
    return Runtime(Settings.load(overrides))


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


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


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def measure_drain(
    cfg: Config, env: Environment, procs: Processes, server: Server, token: str, workers: int
) -> DrainRun:
    from rq import Worker

    from tributary.runtime.doorbell import ring

    # A clean slate: no customers, no events, an empty queue. TRUNCATE … CASCADE follows every
    # foreign key, so tables added later are cleared too; accounts, projects and keys stay.
    env.execute("TRUNCATE events, customers RESTART IDENTITY CASCADE")
    env.redis.flushdb()
    log(f"drain x{workers}: storing {cfg.events:,} identify events through the HTTP API (no worker running)")
    seed_seconds = seed_events(server.port, token, cfg.events, f"drain{workers}", cfg.seed_threads)
    pending = int(env.scalar("SELECT count(*) FROM events WHERE status = 'pending'"))
    if pending != cfg.events:
        raise RuntimeError(f"expected {cfg.events} pending events after seeding, found {pending}")
    # Seeding rang the doorbell and queued one drain job; drop it so the clock starts with the ring below.
    env.redis.flushdb()

    runtime = _runtime(env)
    # The sweeper would ring on its own for events older than 30 s, possibly before the clock starts.
    worker_env = env.env(TRIBUTARY_SWEEP_AFTER_SECONDS="3600")
    started = [
        procs.start(f"drain{workers}-worker{i}", ["tributary", "worker"], worker_env) for i in range(workers)
    ]
    _wait_until(
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

    _wait_until(done, 600, "the workers to apply every event")
    seconds = time.monotonic() - t0
    after = cpu_snapshot()
    cpu = cpu_breakdown(before, after, roles, env.database)
    peak: dict[str, int] = {}
    for i, proc in enumerate(started):
        peak.update(_peak_rss(proc.pid, f"worker {i}"))
    for proc in started:
        procs.stop(proc)
    jobs = [
        _jobs_ok(procs.log_dir / f"drain{workers}-worker{i}.log", "tributary.workers.jobs.drain")
        for i in range(workers)
    ]
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
        batch_size=cfg.batch_size,
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
                queue.enqueue("bench.noop.noop", pipeline=pipe)
            pipe.execute()
    if queue.count != cfg.noop_jobs:
        raise RuntimeError(f"expected {cfg.noop_jobs} queued no-op jobs, found {queue.count}")
    # `bench.noop` must be importable by the worker: the repository root goes on its path.
    worker_env = env.env(TRIBUTARY_QUEUE=NOOP_QUEUE, TRIBUTARY_SWEEP_AFTER_SECONDS="3600")
    worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    log("no-op: running `tributary worker --burst` on them")
    redis = runtime.redis
    key = queue.key
    proc = procs.start("noop-worker", ["tributary", "worker", "--burst"], worker_env)
    # The clock starts when the worker takes its first job (process start-up is not RQ's job rate)
    # and stops when the burst worker finds the queue empty and exits.
    deadline = time.monotonic() + 60
    while redis.llen(key) >= cfg.noop_jobs:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the no-op worker never took a job (see its log)")
        time.sleep(0.002)
    t0 = time.monotonic()
    before = cpu_snapshot()
    startup = _stat(proc.pid)
    startup_cpu = startup[3] / HZ if startup else 0.0
    children_before = _children_cpu()
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
    worker_cpu = _children_cpu() - children_before - startup_cpu
    cpu = cpu_breakdown(before, after, {}, env.database, {"worker": worker_cpu})
    procs.stop(proc)
    ok = _jobs_ok(procs.log_dir / "noop-worker.log", "bench.noop.noop")
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


# --------------------------------------------------------------------------------------------
# Report


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _rss_line(label: str, peaks: Mapping[str, int]) -> str:
    """One line per role: the main process, its workers, and the sum, in MiB."""
    parts = [f"{name} {_mib(kib)}" for name, kib in peaks.items()]
    return f"  {label:<34} sum {_mib(sum(peaks.values())):>6}  ({', '.join(parts)})"


def _share(cpu: Mapping[str, float], role: str) -> str:
    return f"{cpu.get(role, 0.0) / max(1e-9, cpu['machine capacity']):.0%}"


def _table(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Rows of cells as aligned text: columns in `left` flush left, the others (numbers) flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def report(results: dict[str, Any]) -> str:
    meta, cfg, summary = results["meta"], results["config"], results.get("summary", {})
    lines = [
        "",
        f"Tributary bench {meta['started_at']}: {meta['cpus']} CPUs ({meta['cpu_model']}), commit "
        f"{meta['git_commit'][:10]}{' + uncommitted changes' if meta['git_dirty'] else ''}",
    ]
    ingest: list[dict[str, Any]] = results["ingest"]
    if ingest:
        lines += [
            "",
            f"(a) POST /v1/identify under gunicorn ({cfg['web_workers']} sync workers, both apps); wrk "
            f"{cfg['wrk_threads']} threads, {cfg['warmup']} s warmup + {cfg['duration']} s per point",
        ]
        rows = [["app", "conns", "req/s", "202/s", "p50 ms", "p99 ms", "non-2xx", "sock err", "stored"]]
        for p in ingest:
            rows.append(
                [
                    p["label"],
                    str(p["connections"]),
                    f"{p['requests_per_s']:.0f}",
                    f"{p['accepted_per_s']:.0f}",
                    f"{p['p50_ms']:.1f}",
                    f"{p['p99_ms']:.1f}",
                    str(p["non_2xx"]),
                    str(sum(p["socket_errors"].values())),
                    "-" if p["events_stored"] is None else str(p["events_stored"]),
                ]
            )
        lines += _table(rows)
        for c, ratio in summary.get("ingest_ratio", {}).items():
            lines.append(
                f"  Tributary / bare at {c} connections: {ratio['limiter_off']:.2f} with rate limiting off, "
                f"{ratio['default_limiter']:.2f} with the default limiter (202s); by CPU per request "
                f"{ratio['limiter_off_by_cpu']:.2f}"
                + (f"; Stripe webhook {ratio['stripe_webhook']:.2f}" if "stripe_webhook" in ratio else "")
            )
        if "ingest_target_met" in summary:
            lines.append(
                f"  target: >= 0.50 of bare Flask -> {'MET' if summary['ingest_target_met'] else 'MISSED'}"
            )
        lines += ["", "    CPU per request (ms) and the machine's load during each point (2 CPUs = 100%)"]
        rows = [["app", "conns", "web", "postgres", "pg shared", "redis", "wrk", "ours", "other load"]]
        for p in ingest:
            cpu, per = p["cpu_s"], p["cpu_ms_per_request"]
            ours = cpu["machine busy"] - cpu["other"]
            rows.append(
                [
                    p["label"],
                    str(p["connections"]),
                    f"{per.get('web', 0):.3f}",
                    f"{per.get('postgres', 0):.3f}",
                    f"{per.get('pg shared', 0):.3f}",
                    f"{per.get('redis', 0):.3f}",
                    f"{per.get('wrk', 0):.3f}",
                    f"{ours / max(1e-9, cpu['machine capacity']):.0%}",
                    _share(cpu, "other"),
                ]
            )
        lines += _table(rows)
    breakdown: dict[str, dict[str, dict[str, float]]] = results.get("breakdown") or {}
    if breakdown:
        off, on = breakdown["limiter_off"], breakdown["limiter_on"]
        lines += [
            "",
            "    where identify's time goes in the web process: microseconds per request, each step timed in",
            "    place (bench/breakdown.py: Flask test client, one process, no HTTP server)",
        ]
        rows = [["step", "CPU us", "wall us", "with limiter: CPU", "wall"]]
        for step, t in off.items():
            o = on.get(step, {"cpu_us": 0.0, "wall_us": 0.0})
            cells = [f"{t['cpu_us']:.0f}", f"{t['wall_us']:.0f}", f"{o['cpu_us']:.0f}", f"{o['wall_us']:.0f}"]
            rows.append([step, *cells])
        lines += _table(rows)
    drain: list[dict[str, Any]] = results["drain"]
    noop = results.get("noop")
    if drain or noop:
        lines += [
            "",
            f"(b) drain on PostgreSQL: {cfg['events']:,} identify events (distinct emails) stored pending,"
            f" then applied by `tributary worker` processes; TRIBUTARY_BATCH_SIZE={cfg['batch_size']}",
        ]
        rows = [
            [
                "run",
                "rate/s",
                "seconds",
                "result",
                "jobs/worker",
                "CPU ms: worker",
                "pg",
                "pg shared",
                "other load",
            ]
        ]
        for d in drain:
            per = d["cpu_ms_per_event"]
            rows.append(
                [
                    f"{d['workers']} worker{'s' if d['workers'] > 1 else ''} (events/s)",
                    f"{d['events_per_s']:.0f}",
                    f"{d['seconds']:.2f}",
                    ", ".join(f"{n} {s}" for s, n in sorted(d["statuses"].items()))
                    + f"; {d['customers']} customers",
                    "/".join(map(str, d["drain_jobs_per_worker"])),
                    f"{sum(v for k, v in per.items() if k.startswith('worker')):.3f}",
                    f"{per.get('postgres', 0):.3f}",
                    f"{per.get('pg shared', 0):.3f}",
                    _share(d["cpu_s"], "other"),
                ]
            )
        if noop:
            rows.append(
                [
                    "RQ no-op jobs, 1 worker (jobs/s)",
                    f"{noop['jobs_per_s']:.0f}",
                    f"{noop['seconds']:.2f}",
                    f"{noop['jobs_ok']} ok, {noop['failed']} failed",
                    "",
                    f"{noop['cpu_ms_per_job'].get('worker', 0):.3f}",
                    f"redis {noop['cpu_ms_per_job'].get('redis', 0):.3f}",
                    "",
                    _share(noop["cpu_s"], "other"),
                ]
            )
        lines += _table(rows, left=(0, 3, 4))
        if summary.get("drain_ratio") is not None:
            lines.append(
                f"  2 workers / no-op job rate: {summary['drain_ratio']:.2f}x "
                f"(target >= 10x -> {'MET' if summary['drain_target_met'] else 'MISSED'}); "
                f"2 workers / 1 worker: {summary.get('drain_scaling', 0):.2f}x"
            )
    lines += ["", "(c) peak RSS (VmHWM, MiB), per process and summed per role"]
    for server in results["servers"]:
        lines.append(_rss_line(f"web: {server['label']}", server["peak_rss_kib"]))
    for d in drain:
        lines.append(_rss_line(f"worker processes, {d['workers']}-worker run", d["peak_rss_kib"]))
    if noop:
        lines.append(_rss_line("no-op worker", noop["peak_rss_kib"]))
    lines.append("")
    return "\n".join(lines)


def _cpu_per_request(point: IngestPoint) -> float:
    """CPU ms one request costs the web server, PostgreSQL, Redis and wrk together."""
    return sum(point.cpu_ms_per_request.get(role, 0.0) for role in ("web", "postgres", "redis", "wrk"))


def summarize(ingest: list[IngestPoint], drain: list[DrainRun], noop: NoopRun | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"ingest_ratio": {}}
    by = {(p.app, p.connections): p for p in ingest}
    ratios = []
    for (app, c), point in sorted(by.items()):
        if app != "bare":
            continue
        off, limited = by.get(("tributary", c)), by.get(("tributary-limiter", c))
        if off is None or limited is None:
            continue
        entry = {
            "limiter_off": round(off.accepted_per_s / point.accepted_per_s, 3),
            "default_limiter": round(limited.accepted_per_s / point.accepted_per_s, 3),
            # The machine is CPU-bound and shared: throughput follows the CPU that one request costs
            # all our processes together, a ratio that other load on the machine barely moves.
            "limiter_off_by_cpu": round(_cpu_per_request(point) / _cpu_per_request(off), 3),
        }
        if (stripe := by.get(("tributary-stripe", c))) is not None:
            entry["stripe_webhook"] = round(stripe.accepted_per_s / point.accepted_per_s, 3)
        summary["ingest_ratio"][str(c)] = entry
        ratios.append(entry["limiter_off"])
    summary["ingest_target_met"] = bool(ratios) and min(ratios) >= 0.5
    two = next((d for d in drain if d.workers == 2), None)
    one = next((d for d in drain if d.workers == 1), None)
    if two and noop:
        summary["drain_ratio"] = round(two.events_per_s / noop.jobs_per_s, 2)
        summary["drain_target_met"] = summary["drain_ratio"] >= 10
    if two and one:
        summary["drain_scaling"] = round(two.events_per_s / one.events_per_s, 2)
    return summary


def _meta() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                cmd, capture_output=True, text=True, cwd=REPO, timeout=10, check=False
            ).stdout.strip()
        return ""

    from importlib.metadata import version

    packages = ("flask", "gunicorn", "sqlalchemy", "psycopg", "pydantic", "rq", "redis", "limits")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "",
    )
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": out("git", "rev-parse", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "cpus": NCPU,
        "cpu_model": model,
        "memory_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "wrk": out("wrk", "--version").splitlines()[0] if out("wrk", "--version") else "",
    }


# --------------------------------------------------------------------------------------------


def ingest_phase(
    wrk: str, cfg: Config, env: Environment, procs: Processes, token: str, results: dict[str, Any]
) -> tuple[Server, list[IngestPoint]]:
    """Start the three servers, measure each at every connection count, stop all but Tributary."""
    if cfg.skip_ingest:
        label = "Tributary (only stored the drain events)"
        server = start_server(
            procs, "tributary", label, "tributary.app.wsgi:app", env.env(), cfg.web_workers, token
        )
        return server, []
    apps = [
        ("bare", "bare Flask (bench/bare_app.py)", "bench.bare_app:app", env.env()),
        ("tributary", "Tributary, rate limit off", "tributary.app.wsgi:app", env.env()),
        (
            "tributary-limiter",
            "Tributary, default limiter",
            "tributary.app.wsgi:app",
            env.env(TRIBUTARY_RATE_LIMIT=None),
        ),
    ]
    servers = [
        start_server(procs, name, label, app, app_env, cfg.web_workers, token)
        for name, label, app, app_env in apps
    ]
    run_ids = itertools.count()
    points: list[IngestPoint] = []
    for connections in cfg.connections:
        for server in servers:
            log(f"ingest: {server.label}, {connections} connections")
            point = measure_ingest(wrk, cfg, env, server, token, connections, run_ids)
            points.append(point)
            results["ingest"].append(asdict(point))
            log(
                f"  {point.requests_per_s:.0f} req/s ({point.accepted_per_s:.0f} accepted), "
                f"p50 {point.p50_ms} ms, p99 {point.p99_ms} ms"
            )
    tributary = next(s for s in servers if s.name == "tributary")
    points += measure_stripe(wrk, cfg, env, tributary, token, run_ids, results)
    for server in servers:
        if server.name != "tributary":
            server.record_peak_rss()
            results["servers"].append(
                {"name": server.name, "label": server.label, "peak_rss_kib": server.peak_rss_kib}
            )
            procs.stop(server.proc)
    return next(s for s in servers if s.name == "tributary"), points


STRIPE_SECRET = "whsec_bench_stripe_signing_secret"


def write_stripe_deliveries(path: Path, count: int, run_id: str) -> None:
    """`count` distinct `customer.created` events, signed now, one "<signature>\t<body>" per line."""
    from tributary.connectors.testkit import stripe_signature

    now = int(time.time())
    with path.open("w") as out:
        for i in range(count):
            customer = {
                "id": f"cus_bench{run_id}x{i}",
                "object": "customer",
                "created": now,
                "email": f"stripe-{run_id}-{i}@example.com",
                "name": "Bench Customer",
                "livemode": False,
                "metadata": {},
            }
            event = {
                "id": f"evt_bench{run_id}x{i}",
                "object": "event",
                "api_version": "2025-03-31.basil",
                "created": now,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": "customer.created",
                "data": {"object": customer},
            }
            body = json.dumps(event, separators=(",", ":")).encode()
            out.write(f"{stripe_signature(body, STRIPE_SECRET, now)}\t{body.decode()}\n")


def measure_stripe(
    wrk: str,
    cfg: Config,
    env: Environment,
    server: Server,
    token: str,
    run_ids: Iterator[int],
    results: dict[str, Any],
) -> list[IngestPoint]:
    """Stripe webhook ingest on the Tributary server: signature verified with the `stripe` library,
    one event per delivery, each stored before the 200."""
    created = json.loads(
        run_cli(env.env(), "sources", "create", "--connector", "stripe", "--secret", STRIPE_SECRET, "--json")
    )
    label = "Tributary, Stripe webhook"
    points = []
    for connections in cfg.connections:
        log(f"ingest: {label}, {connections} connections")
        with tempfile.TemporaryDirectory() as tmp:
            deliveries = Path(tmp) / "stripe.tsv"
            # Two halves (warmup, measured; see stripe.lua), each several times what a point sends.
            write_stripe_deliveries(deliveries, 8000 * max(cfg.warmup, cfg.duration), str(next(run_ids)))
            target = Target(
                script=BENCH / "stripe.lua",
                path=f"/webhooks/{created['id']}",
                env={"BENCH_STRIPE_FILE": str(deliveries)},
            )
            point = measure_ingest(
                wrk, cfg, env, server, token, connections, run_ids, target, ("tributary-stripe", label)
            )
        points.append(point)
        results["ingest"].append(asdict(point))
        log(f"  {point.requests_per_s:.0f} req/s, p50 {point.p50_ms} ms, p99 {point.p99_ms} ms")
    return points


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


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    wrk = ensure_wrk()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tributary-bench-"))
    (workdir / "home").mkdir()
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    env = Environment(cfg, workdir / "home")
    results: dict[str, Any] = {
        "meta": _meta(),
        "config": asdict(cfg),
        "ingest": [],
        "drain": [],
        "noop": None,
    }
    results["servers"] = []
    ok = False
    try:
        results["meta"]["other_load_at_start"] = round(wait_for_quiet(cfg.wait_quiet), 3)
        token = env.prepare()
        log(f"database {env.database}, Redis {env.redis_url}, logs in {workdir / 'logs'}")
        tributary, ingest = ingest_phase(wrk, cfg, env, procs, token, results)
        drain: list[DrainRun] = []
        noop: NoopRun | None = None
        if not cfg.skip_ingest:
            log("breakdown: identify's steps timed in place in one process (bench/breakdown.py)")
            results["breakdown"] = measure_breakdown(env, token)
        if not cfg.skip_drain:
            drain = drain_phase(cfg, env, procs, tributary, token, results)
        stop_tributary(procs, tributary, results)
        if not cfg.skip_drain:
            noop = measure_noop(cfg, env, procs)
            results["noop"] = asdict(noop)
            log(f"  no-op: {noop.jobs_per_s:.0f} jobs/s in {noop.seconds:.2f} s")
        results["summary"] = summarize(ingest, drain, noop)
        results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
        ok = True
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            env.close()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
