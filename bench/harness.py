"""The harness's ground: logging, the processes it starts (stopped by pid, never by name), its own
PostgreSQL database and Redis db index (created here, removed on close), and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.constants import PRODUCT_ENV_PREFIXES, cli
from bench.options import Config
from bench.procstat import busy_ticks, pids, proc_stat

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# The test harness claims Redis db indexes with this key in db 0; we take ours the same way.
REDIS_DB_LOCK = "tributary:test-db-lock:{}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
        for pid in pids():
            stat = proc_stat(pid)
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


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


# --------------------------------------------------------------------------------------------
# Environment: wrk, PostgreSQL, Redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        # Pinged before use: the database is dropped through this engine at the end of a run, and a
        # server restarted meanwhile (by an operator, or a test of the product) leaves its pooled
        # connection dead; the drop then failed and the run left its database behind.
        self._admin: Engine = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self._control = Redis.from_url(f"{cfg.redis_url}/0")
        self._lock_token = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        self._locked = False
        self._created = False
        self.redis = Redis.from_url(self.redis_url)
        self.engine: Engine | None = None
        self._keys: dict[str, str] = {}

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
        return self.key("ingest")

    def key(self, scope: str) -> str:
        """One key per scope for the whole run, created on first use."""
        if scope not in self._keys:
            self._keys[scope] = self.create_key(scope)
        return self._keys[scope]

    def create_key(self, scope: str) -> str:
        created = run_cli(
            self.env(), "keys", "create", "--scope", scope, "--name", f"bench {scope}", "--json"
        )
        token: str = json.loads(created)["key"]
        return token

    def close(self) -> None:
        """Drop the database, empty the Redis db and give it back. The Redis db is given back even
        when the drop fails (the error is raised after): a lock held on for an hour would refuse
        every run on that db until it expired."""
        try:
            if self.engine is not None:
                self.engine.dispose()
            if self._created:
                with self._admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
                self._created = False
            self._admin.dispose()
        finally:
            if self._locked:
                self.redis.flushdb()
                lock = REDIS_DB_LOCK.format(self.cfg.redis_db)
                if self._control.get(lock) == self._lock_token.encode():
                    self._control.delete(lock)
                self._locked = False

    def env(self, **overrides: str | None) -> dict[str, str]:
        """A child's environment: ours, with every inherited Tributary variable dropped first, so the
        product runs with its shipped defaults (the rate limiter on) unless `overrides` say otherwise."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(PRODUCT_ENV_PREFIXES)}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            TRIBUTARY_HOME=str(self.home),
            TRIBUTARY_SECRET_KEY=self.secret,
            TRIBUTARY_BATCH_SIZE=str(self.cfg.batch_size),
        )
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def count_events(self) -> int:
        return int(self.scalar("SELECT count(*) FROM events"))

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
        cli(*args),
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


def wait_for_quiet(limit: float) -> float:
    """Other work on the machine skews every figure. Returns the busy share seen last (0-1)."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0 = busy_ticks()
        time.sleep(2.0)
        busy1, total1 = busy_ticks()
        share = (busy1 - busy0) / max(1, total1 - total0)
        if share < 0.15 or time.monotonic() >= deadline:
            if share >= 0.15:
                log(f"WARNING: the machine is {share:.0%} busy with other work; figures will be noisy")
            return share
        log(f"machine is {share:.0%} busy with other work; waiting for it to settle")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def children_cpu() -> float:
    """CPU seconds of our children that have exited and been waited for."""
    times = os.times()
    return times.children_user + times.children_system
