"""`python bench/run.py` options: what one run measures and for how long (bench/README.md)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bench.constants import SETTINGS, product

PHASES = ("ingest", "drain", "sustained", "readside", "embedded", "memory")


@dataclass(frozen=True)
class Config:
    pg_url: str
    redis_url: str
    redis_db: int
    connections: tuple[int, ...]
    duration: int
    warmup: int
    wrk_threads: int
    web_workers: int | None  # None: the shipped configuration's (WEB_CONCURRENCY's default)
    events: int
    noop_jobs: int
    batch_size: int
    seed_threads: int
    wait_quiet: float
    keep_logs: bool
    skip_ingest: bool = False
    skip_drain: bool = False
    quick: bool = False
    rounds: int = 3
    batch_messages: int = 100
    sustained_window: int = 60
    sustained_rates: tuple[int, ...] = (200, 500, 750, 1000, 1500, 2000, 3000)
    latency_rate: int = 200
    read_customers: int = 1_000_000
    read_repeat: int = 40
    memory_batch_sizes: tuple[int, ...] = (100, 500, 2000)
    skip: frozenset[str] = field(default_factory=frozenset)

    def runs(self, phase: str) -> bool:
        return phase not in self.skip


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(",") if c.strip())


def parse_args(argv: list[str] | None = None) -> Config:
    settings = product(SETTINGS)
    parser = argparse.ArgumentParser(
        description="Measure every target of issue #10 in one run (see bench/README.md)."
    )
    add = parser.add_argument
    add(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server to use (any database on it; a tributary_bench_* database is created there).",
    )
    add("--redis", default="redis://127.0.0.1:6379", help="Redis server to use.")
    add("--redis-db", type=int, default=13, choices=(12, 13, 14, 15), help="Redis db index.")
    add("--connections", default="16,64", help="wrk connection counts (comma separated).")
    add("--duration", type=int, default=10, help="Seconds measured per ingest point.")
    add("--warmup", type=int, default=3, help="Seconds of unmeasured load before each point.")
    add(
        "--rounds",
        type=int,
        default=None,
        help="Rounds of the ratio points (bare, identify, Stripe; bare and serve in the embedded "
        "phase), alternated; medians reported (default 3, 1 with --quick).",
    )
    add("--wrk-threads", type=int, default=2, help="wrk threads (one per core here).")
    add(
        "--web-workers",
        type=int,
        default=None,
        help="gunicorn processes (default: the shipped configuration's, WEB_CONCURRENCY's default).",
    )
    # 20,000 drained in 1.6-3 s on PostgreSQL: a worker's start and the second worker's recruitment
    # moved the ratio by a third between runs (bench/README.md, 2026-12-05 23:05).
    add("--events", type=int, default=60_000, help="Identify events per drain run.")
    add("--noop-jobs", type=int, default=20_000, help="No-op RQ jobs for the baseline.")
    add("--batch-size", type=int, default=settings.batch_size, help="TRIBUTARY_BATCH_SIZE for the workers.")
    add("--batch-messages", type=int, default=100, help="Messages per /v1/batch request.")
    add("--seed-threads", type=int, default=4, help="Client threads storing drain events (/v1/batch).")
    add("--sustained-window", type=int, default=60, help="Seconds each sustained rate is held.")
    add("--sustained-rates", default="200,500,750,1000,1500,2000,3000", help="Offered events/s, rising.")
    add("--read-customers", type=int, default=1_000_000, help="Customers generated for the read side.")
    add("--read-repeat", type=int, default=40, help="Requests timed per read-side filter family.")
    add("--memory-batch-sizes", default="100,500,2000", help="Batch sizes for worker RSS growth.")
    add(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="Wait up to this many seconds for other load on the machine to settle before starting.",
    )
    add("--skip", default="", help=f"Phases to leave out, comma separated: {', '.join(PHASES)}.")
    add("--skip-ingest", action="store_true", help="Same as --skip ingest.")
    add("--skip-drain", action="store_true", help="Same as --skip drain.")
    add("--keep-logs", action="store_true", help="Keep the process logs (printed path).")
    add(
        "--quick",
        action="store_true",
        help="Smoke test of every phase in a few minutes: short points, small counts (numbers meaningless).",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.events, args.noop_jobs = 2, 1, 2_000, 500
        args.sustained_window, args.sustained_rates = 8, "100,200,400"
        args.read_customers, args.read_repeat = 20_000, 10
        args.memory_batch_sizes = "500,2000"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip_ingest:
        skip.add("ingest")
    if args.skip_drain:
        skip.add("drain")
    if unknown := skip - set(PHASES):
        parser.error(f"unknown phase(s) in --skip: {', '.join(sorted(unknown))}")
    connections = _ints(args.connections)
    if not connections or min(connections) < 1:
        parser.error("--connections needs positive integers")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.events < 1 or args.noop_jobs < 1 or args.duration <= 0 or args.rounds < 1:
        parser.error("--events, --noop-jobs, --duration and --rounds must be positive")
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
        skip_ingest="ingest" in skip,
        skip_drain="drain" in skip,
        quick=args.quick,
        rounds=args.rounds,
        batch_messages=args.batch_messages,
        sustained_window=args.sustained_window,
        sustained_rates=_ints(args.sustained_rates),
        read_customers=args.read_customers,
        read_repeat=args.read_repeat,
        memory_batch_sizes=_ints(args.memory_batch_sizes),
        skip=frozenset(skip),
    )
