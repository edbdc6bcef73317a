#!/usr/bin/env python
"""`/metrics` at scale: `python bench/metrics_scrape.py [--events 1000000]` (bench/README.md, "Metrics").

Fills a fresh PostgreSQL database (created, migrated and dropped here) with N events generated in
SQL (two connectors, one source, mostly processed, some pending and failed), compacts the tallies
as the sweeper would, then times, side by side in one run:

- a whole scrape, `GET /metrics` through the app (the tallies, since migration 0013);
- counting the events table as scrapes did before (`scan_counts` + `scan_latency`, which SQLite's
  scrape still runs), on the same data.

It also checks that both say the same. Redis: db 12 of 127.0.0.1:6379 (`--redis-url`), flushed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.drain_profile import database
from tributary.runtime.migrate import upgrade

FILL = """
    INSERT INTO events (id, account_id, project_id, source_id, channel, type, email, occurred_at,
                        received_at, body, headers, status, attempts, processed_at)
    SELECT 'evt_b' || lpad(g::text, 10, '0'), :account, :project,
           CASE WHEN g % 3 = 0 THEN :source END,
           CASE WHEN g % 3 = 0 THEN 'stripe' ELSE 'identify' END, 'bench',
           'u' || g || '@example.com', now() - interval '2 days',
           now() - interval '2 days' + g * interval '1 ms', convert_to(repeat('x', 200), 'UTF8'), '{}',
           CASE WHEN g % 997 = 0 THEN 'failed' WHEN g % 101 = 0 THEN 'pending' ELSE 'processed' END, 1,
           CASE WHEN g % 101 = 0 THEN NULL
                ELSE now() - interval '2 days' + g * interval '1 ms' + (g % 5000) * interval '1 ms' END
    FROM generate_series(1, :events) AS g
"""


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # one warm-up: caches and plans
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    with database(args.pg, "metricsbench") as url:
        run(url, args)


def run(url: str, args: argparse.Namespace) -> None:
    from redis import Redis
    from sqlalchemy import select

    from tributary.app import create_app
    from tributary.app.accounts import ensure_account
    from tributary.models import Project, Source
    from tributary.models.event_tally import compact, scan_counts, scan_latency, tally_counts, tally_latency
    from tributary.runtime.config import Settings
    from tributary.runtime.process import Runtime

    upgrade(url)
    Redis.from_url(args.redis_url).flushdb()
    runtime = Runtime(Settings.load({"DATABASE_URL": url, "REDIS_URL": args.redis_url}))
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        project = session.scalars(select(Project).where(Project.account_id == account.id)).one()
        source = Source(account_id=account.id, project_id=project.id, connector="stripe", name="bench")
        session.add(source)
        session.flush()
        ids = {"account": account.id, "project": project.id, "source": source.id}
    t0 = time.perf_counter()
    with runtime.db.engine.begin() as conn:
        conn.execute(text(FILL), {**ids, "events": args.events})
    fill = time.perf_counter() - t0
    with runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))
    with runtime.db.write_session() as session, session.begin():
        compact(session)
    print(f"{args.events:,} events stored in {fill:.1f} s (the triggers counted them as they went in)")

    client = create_app({"TESTING": True}, runtime=runtime).test_client()

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    def scan() -> None:
        with runtime.db.session() as session:
            scan_counts(session)
            scan_latency(session)

    with runtime.db.session() as session:
        same = tally_counts(session) == scan_counts(session) and tally_latency(session) == scan_latency(
            session
        )
    rows = {}
    for label, fn in (("GET /metrics (tallies)", scrape), ("counting the events table", scan)):
        times = timed(fn, args.repeat)
        rows[label] = statistics.median(times)
        print(f"  {label:28} median {statistics.median(times):8.1f} ms   max {max(times):8.1f} ms")
    ratio = rows["counting the events table"] / rows["GET /metrics (tallies)"]
    print(f"  a whole scrape is {ratio:.0f}x faster than the count alone; tallies equal the count: {same}")
    runtime.db.dispose()


if __name__ == "__main__":
    main()
