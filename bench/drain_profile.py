"""Profile and time the drain on PostgreSQL, apart from `bench/run.py`.

    python bench/drain_profile.py profile --events 5000
        one in-process drain of N pending identify events: statements per batch (by kind) and
        seconds per phase (claim, normalize, load, apply, write, commit)
    python bench/drain_profile.py workers --events 20000 --workers 1 2
        events/s of 1 and 2 `tributary worker` processes draining N pre-inserted pending events
    python bench/drain_profile.py noop --jobs 20000
        RQ's no-op job rate (`tributary worker --burst` over N queued `bench.noop.noop` jobs)
    python bench/drain_profile.py triggers --events 2000
        PostgreSQL's execution time per batch by statement, and the triggers (foreign-key checks,
        tallies) each fired (bench/drain_triggers.py; needs a superuser for auto_explain)
    python bench/drain_profile.py stats --events 30000 --batch-size 20
        small batches with and without an ANALYZE halfway (bench/drain_stats.py)

It creates its own database (dropped at the end) on `--pg` and uses Redis db `--redis-db`.
The events are inserted directly (rows as the identify API stores them), not through HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def database(pg: str, label: str = "drainprof") -> Iterator[str]:
    """A new database `tributary_<label>_…` on the server of `pg`, dropped at the end; yields its URL."""
    base = make_url(pg)
    name = f"tributary_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def child_env(url: str, redis_url: str, home: str, batch_size: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env.update(
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        TRIBUTARY_HOME=home,
        TRIBUTARY_SECRET_KEY="drain-profile",
        TRIBUTARY_BATCH_SIZE=str(batch_size),
        TRIBUTARY_SWEEP_AFTER_SECONDS="3600",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    )
    return env


def prepare(url: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "tributary"), "db", "upgrade"], env=env, check=True, capture_output=True)
    from tributary.app.accounts import ensure_account
    from tributary.models.session import Database

    db = Database(url)
    with db.session() as session, session.begin():
        ensure_account(session)
    db.dispose()


def seed(url: str, count: int, prefix: str) -> None:
    """`count` pending identify events, one new customer each, as the API stores them."""
    from tributary.app.event_rows import event_row
    from tributary.models import Account, Event, Project
    from tributary.models.base import utcnow
    from tributary.models.session import Database

    db = Database(url)
    with db.session() as session, session.begin():
        account = session.query(Account).one()
        project = session.query(Project).filter_by(account_id=account.id, slug="default").one()
        now = utcnow()
        rows = []
        for i in range(count):
            message = {
                "email": f"{prefix}-{i}@example.com",
                "name": "Drain Bench",
                "status": "trial",
                "params": {"plan": "pro", "seats": i % 50},
            }
            rows.append(
                event_row(
                    account_id=account.id,
                    project_id=project.id,
                    channel="identify",
                    type="identify",
                    occurred_at=now - timedelta(seconds=count - i),
                    received_at=now,
                    body=json.dumps(message).encode(),
                    email=message["email"],
                    dedup_key=None,
                    provider_event_id=None,
                )
            )
        for start in range(0, count, 1000):
            session.execute(Event.__table__.insert(), rows[start : start + 1000])
    db.dispose()


def reset(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("TRUNCATE events, customers RESTART IDENTITY CASCADE"))
    engine.dispose()


# -- profile --------------------------------------------------------------------------------------


def _kind(statement: str) -> str:
    words = statement.split()
    head = words[0].upper() if words else "?"
    table = "?"
    for marker in ("INTO", "UPDATE", "FROM"):
        if marker in (w.upper() for w in words):
            idx = [w.upper() for w in words].index(marker)
            if idx + 1 < len(words):
                table = words[idx + 1].strip('"(')
                break
    if head == "UPDATE":
        table = words[1].strip('"')
    if head == "SELECT":
        # The first table read, past subqueries' parentheses and function calls.
        after_from = [words[i + 1].strip('"(') for i, word in enumerate(words[:-1]) if word.upper() == "FROM"]
        tables = [name for name in after_from if name and "(" not in name]
        table = tables[0] if tables else "?"
        table += " (lock)" if "FOR UPDATE" in statement else ""
        table += " (key share)" if "FOR KEY SHARE" in statement else ""
        table += " (advisory locks)" if "pg_advisory_xact_lock" in statement else ""
    return f"{head} {table}"


def drain_runtime(url: str, redis_url: str, batch_size: int) -> Any:
    """An installed runtime on the drain's database and Redis db, for an in-process drain."""
    from tributary.runtime.config import Settings
    from tributary.runtime.process import Runtime, install

    settings = Settings.load(
        {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "TRIBUTARY_BATCH_SIZE": batch_size,
            "TRIBUTARY_HOME": tempfile.mkdtemp(),
            "TRIBUTARY_SECRET_KEY": "drain-profile",
        }
    )
    return install(Runtime(settings))


def profile(url: str, redis_url: str, batch_size: int, events: int) -> None:  # noqa: PLR0915 - a script
    from tributary.workers import jobs
    from tributary.workers.batch import apply as apply_mod
    from tributary.workers.batch import state as state_mod
    from tributary.workers.worker import prepare_heap

    runtime = drain_runtime(url, redis_url, batch_size)
    # The garbage collector as `tributary worker` sets it (workers/worker.py).
    prepare_heap()
    phases: dict[str, float] = defaultdict(float)
    statements: Counter[str] = Counter()
    params: Counter[str] = Counter()
    seconds: dict[str, float] = defaultdict(float)
    started: list[float] = []

    @event.listens_for(runtime.db.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        kind = _kind(statement)
        statements[kind] += 1
        params[kind] += len(parameters) if many else 1
        started.append(time.perf_counter())

    @event.listens_for(runtime.db.engine, "after_cursor_execute")
    def _time(_conn: Any, _cursor: Any, statement: str, _p: Any, _ctx: Any, _many: bool) -> None:
        seconds[_kind(statement)] += time.perf_counter() - started.pop()

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - t0

        return wrapper

    apply_mod.claim_pending = timed("claim", apply_mod.claim_pending)  # type: ignore[assignment]
    jobs.claim_pending = apply_mod.claim_pending  # type: ignore[attr-defined]
    apply_mod.changes_for_event = timed("normalize", apply_mod.changes_for_event)  # type: ignore[assignment]
    state_mod.BatchState.load = timed("load", state_mod.BatchState.load)  # type: ignore[method-assign]
    apply_mod.write_batch = timed("write", apply_mod.write_batch)  # type: ignore[assignment]
    apply_mod.apply_events = timed("apply_events (all)", apply_mod.apply_events)  # type: ignore[assignment]
    jobs.apply_events = apply_mod.apply_events  # type: ignore[attr-defined]

    batches = 0
    t0 = time.perf_counter()
    while True:
        t1 = time.perf_counter()
        claimed = jobs.drain_batch(runtime)
        phases["drain_batch (all)"] += time.perf_counter() - t1
        if not claimed:
            break
        batches += 1
    total = time.perf_counter() - t0
    log(
        f"profile: {events} events, batch size {batch_size}, {batches} batches, {total:.2f} s, "
        f"{events / total:.0f} events/s in-process (load {load()})"
    )
    per_batch = {k: v / batches for k, v in sorted(statements.items())}
    log(
        f"statements per batch: {sum(statements.values()) / batches:.1f} "
        f"(each executemany counts once); rows/params per batch by kind:"
    )
    for kind, n in sorted(per_batch.items(), key=lambda kv: -kv[1]):
        log(
            f"  {kind:32s} {n:6.1f} statements {params[kind] / batches:8.1f} param sets "
            f"{1000 * seconds[kind] / batches:8.1f} ms"
        )
    apply_only = phases["apply_events (all)"] - phases["load"] - phases["write"] - phases["normalize"]
    phases["apply (merge loop etc.)"] = apply_only
    phases["commit etc. (drain_batch - claim - apply_events)"] = (
        phases["drain_batch (all)"] - phases["claim"] - phases["apply_events (all)"]
    )
    for name, seconds in phases.items():
        log(f"  {name:50s} {seconds:7.3f} s  {1000 * seconds / batches:8.1f} ms/batch")
    runtime.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["profile", "workers", "noop", "triggers", "stats"])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=20000)
    args = parser.parse_args()
    redis_url = f"{args.redis}/{args.redis_db}"
    home = tempfile.mkdtemp(prefix="drainprof-")
    sys.path.insert(0, str(REPO))  # run as a script: bench/ is on the path, not the repository
    if args.mode == "stats":
        from bench.drain_stats import compare

        @contextmanager
        def fresh() -> Iterator[Any]:
            with database(args.pg, "drainstats") as url:
                prepare(url, child_env(url, redis_url, home, args.batch_size))
                seed(url, args.events, "stats")
                runtime = drain_runtime(url, redis_url, args.batch_size)
                try:
                    yield runtime
                finally:
                    runtime.db.dispose()

        compare(fresh, args.batch_size, args.events, args.repeat)
        return
    from bench.drain_processes import noop_run, workers_run

    with database(args.pg) as url:
        env = child_env(url, redis_url, home, args.batch_size)
        prepare(url, env)
        if args.mode == "noop":
            for _ in range(args.repeat):
                seconds = noop_run(env, args.jobs)
                rate = args.jobs / seconds
                log(f"no-op: {args.jobs} jobs in {seconds:.2f} s = {rate:.0f} jobs/s (load {load()})")
            return
        if args.mode == "profile":
            seed(url, args.events, "prof")
            profile(url, redis_url, args.batch_size, args.events)
            return
        if args.mode == "triggers":
            from bench.drain_triggers import trigger_profile

            seed(url, args.events, "trig")
            trigger_profile(drain_runtime(url, redis_url, args.batch_size), args.batch_size, args.events)
            return
        for _ in range(args.repeat):
            for count in args.workers:
                reset(url)
                seed(url, args.events, f"w{count}")
                seconds = workers_run(url, env, count, args.events)
                log(
                    f"workers={count}: {args.events} events in {seconds:.2f} s = "
                    f"{args.events / seconds:.0f} events/s (load {load()})"
                )


if __name__ == "__main__":
    main()
