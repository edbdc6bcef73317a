"""The read side at scale: customers generated in SQL on PostgreSQL (1,000,000 in 3 projects by
default), then p50/p95 of `GET /v1/customers` for each filter family through the web server, with
the query plans (bench/explain.py) recorded to show whether each uses an index."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import text

from bench.constants import EXPLAIN_MODULE, WSGI_APP
from bench.harness import Environment, Processes, log, run_cli
from bench.options import Config
from bench.servers import start_server

PROJECTS = ("alpha", "beta", "gamma")
DEEP_PAGE = 50

# Every customer belongs to one project (by id modulo 3) and every fourth to the next one too, so
# ~1.25 project rows per customer. Activity spreads over 90 days (one in ten never active), creation
# over a year; statuses, plans and seats cycle at different periods so filters cut across each other.
CUSTOMERS_SQL = """
INSERT INTO customers (id, account_id, email, name, past_emails, clock, created_at, updated_at,
                       last_activity_at)
SELECT 'cus_r' || lpad(g::text, 9, '0'), :account, 'user' || g || '@example' || (g % 97) || '.com',
       'Reader ' || g, '[]', '{}', now() - (g % 525600) * interval '1 minute', now(),
       CASE WHEN g % 10 = 0 THEN NULL ELSE now() - ((g::bigint * 7919) % 7776000) * interval '1 second' END
FROM generate_series(1, CAST(:n AS integer)) AS g
"""
PROJECT_ROWS_SQL = """
INSERT INTO customer_projects (customer_id, project_id, status, params, clock, first_seen_at,
                               last_activity_at, updated_at)
SELECT 'cus_r' || lpad(g::text, 9, '0'), (CAST(:projects AS text[]))[1 + (g + k) % 3],
       (ARRAY['trial', 'active', 'past_due', 'canceled', 'paused'])[1 + (g / 3) % 5],
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team', 'enterprise'])[1 + (g / 7) % 4],
                          'seats', g % 50, 'region', (ARRAY['eu', 'us', 'apac'])[1 + (g / 11) % 3]),
       '{}', now() - (g % 525600) * interval '1 minute',
       CASE WHEN g % 10 = 0 THEN NULL
            ELSE now() - ((g::bigint * 7919 + k) % 7776000) * interval '1 second' END,
       now()
FROM generate_series(1, CAST(:n AS integer)) AS g CROSS JOIN (VALUES (0), (1)) AS extra(k)
WHERE k = 0 OR g % 4 = 0
"""


def generate(env: Environment, customers: int) -> float:
    """Projects through the CLI, customers and their project rows in SQL; returns seconds taken."""
    started = time.monotonic()
    for slug in PROJECTS:
        run_cli(env.env(), "projects", "create", slug)
    account = env.scalar("SELECT account_id FROM projects LIMIT 1")
    ids = [env.scalar(f"SELECT id FROM projects WHERE slug = '{slug}'") for slug in PROJECTS]
    assert env.engine is not None
    with env.engine.connect() as conn:
        conn.execute(text(CUSTOMERS_SQL), {"account": account, "n": customers})
        conn.execute(text(PROJECT_ROWS_SQL), {"projects": ids, "n": customers})
        # A live server's autovacuum would have done this; the planner needs the statistics.
        conn.execute(text("VACUUM ANALYZE customers"))
        conn.execute(text("VACUUM ANALYZE customer_projects"))
    return time.monotonic() - started


def families() -> dict[str, str]:
    """One request per filter family (the deep cursor page is found later by walking)."""
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query: dict[str, dict[str, str]] = {
        "project+status": {"project": "alpha", "status": "active"},
        "params equality (project)": {"project": "alpha", "params.plan": "team"},
        "params equality (any project)": {"params.plan": "enterprise", "params.region": "eu"},
        "q (substring)": {"q": "user12345"},
        "active_since (project)": {"project": "beta", "active_since": since},
        "sort -last_activity_at (project)": {"project": "gamma", "sort": "-last_activity_at"},
        "sort last_activity_at (project)": {"project": "gamma", "sort": "last_activity_at"},
        "sort -created_at": {"sort": "-created_at"},
        "sort created_at": {"sort": "created_at"},
    }
    return {name: "/v1/customers?" + urlencode(args, quote_via=quote) for name, args in query.items()}


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    body = response.read()
    elapsed = 1000 * (time.perf_counter() - started)
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")
    return elapsed, response.status, json.loads(body)


def _deep_path(conn: http.client.HTTPConnection, token: str) -> str:
    """The path of page DEEP_PAGE of project alpha's customers (default sort), by following cursors."""
    path = "/v1/customers?project=alpha"
    for _ in range(DEEP_PAGE - 1):
        _, _, page = _get(conn, path, token)
        if not page.get("next_cursor"):
            raise RuntimeError("fewer pages than the deep cursor page: raise --read-customers")
        path = "/v1/customers?" + urlencode(
            {"project": "alpha", "cursor": page["next_cursor"]}, quote_via=quote
        )
    return path


def readside_phase(cfg: Config, env: Environment, procs: Processes) -> dict[str, Any]:
    env.execute("TRUNCATE events, customers RESTART IDENTITY CASCADE")
    log(f"read side: generating {cfg.read_customers:,} customers in 3 projects in SQL")
    seconds = generate(env, cfg.read_customers)
    project_rows = int(env.scalar("SELECT count(*) FROM customer_projects"))
    log(f"  {project_rows:,} project rows; {seconds:.0f} s with VACUUM ANALYZE")
    ingest_key, read_key = env.key("ingest"), env.key("read")
    server = start_server(
        procs, "readside", "Tributary, read side", WSGI_APP, env.env(), cfg.web_workers, ingest_key
    )
    paths = families()
    results: list[dict[str, Any]] = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        paths[f"deep cursor page {DEEP_PAGE} (project)"] = _deep_path(conn, read_key)
        for family, path in paths.items():
            for _ in range(2):  # warm: connections, caches, the plan
                _get(conn, path, read_key)
            times, rows = [], 0
            for _ in range(cfg.read_repeat):
                elapsed, _, page = _get(conn, path, read_key)
                times.append(elapsed)
                rows = len(page.get("data", []))
            times.sort()
            results.append(
                {
                    "family": family,
                    "path": path,
                    "rows": rows,
                    "requests": len(times),
                    "p50_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
                }
            )
            log(f"  {family}: p50 {results[-1]['p50_ms']} ms, p95 {results[-1]['p95_ms']} ms, {rows} rows")
        conn.close()
    finally:
        procs.stop(server.proc)
    plans = explain(env, procs, paths, read_key)
    for entry in results:
        plan = plans.get(entry["family"], {})
        entry["plan_uses_index"] = plan.get("uses_index")
        entry["plan"] = plan.get("plan", [])
        # The database's own time for the query (EXPLAIN ANALYZE), beside the HTTP round trip.
        found = re.search(r"Execution Time: ([\d.]+) ms", "\n".join(entry["plan"]))
        entry["db_execution_ms"] = float(found.group(1)) if found else None
        entry["sql"] = plan.get("sql")
    return {
        "customers": cfg.read_customers,
        "project_rows": project_rows,
        "generate_seconds": round(seconds, 1),
        "families": results,
    }


def explain(env: Environment, procs: Processes, paths: dict[str, str], read_key: str) -> dict[str, Any]:
    log("  query plans (bench/explain.py: the statements the app runs, under EXPLAIN ANALYZE)")
    spec, out = procs.log_dir / "explain.paths.json", procs.log_dir / "explain.out.json"
    spec.write_text(json.dumps(paths))
    proc = procs.start(
        "explain",
        [sys.executable, "-m", EXPLAIN_MODULE, str(spec), str(out)],
        env.env(BENCH_READ_KEY=read_key),
    )
    try:
        proc.wait(timeout=600)
    finally:
        procs.stop(proc)
    if proc.returncode != 0 or not out.exists():
        log(f"  WARNING: bench/explain.py failed (exit {proc.returncode}); see its log in {procs.log_dir}")
        return {}
    plans: dict[str, Any] = json.loads(out.read_text())
    return plans
