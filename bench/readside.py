"""The read side at scale: customers generated in SQL on PostgreSQL by `bench/readside_data.py`
(1,000,000 in 3 projects by default), then p50/p95 of `GET /v1/customers` for each filter family
through the web server, with the query plans (bench/explain.py) recorded to show whether each
uses an index."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from bench.constants import EXPLAIN_MODULE, WSGI_APP
from bench.harness import Environment, Processes, log
from bench.options import Config
from bench.readside_data import FAMILIES, generate
from bench.servers import start_server

DEEP_PAGE = 50


def families() -> dict[str, str]:
    """`bench/readside_data.py`'s families as request paths; `page50:` ones are walked later."""
    month_ago = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        name: query if query.startswith("page50:") else "/v1/customers?" + query.format(month_ago=month_ago)
        for name, query in FAMILIES.items()
    }


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    body = response.read()
    elapsed = 1000 * (time.perf_counter() - started)
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")
    return elapsed, response.status, json.loads(body)


def _deep_path(conn: http.client.HTTPConnection, token: str, query: str) -> str:
    """The path of page DEEP_PAGE of the list `query` selects, by following its cursors."""
    args = dict(parse_qsl(query))
    path = "/v1/customers?" + urlencode(args, quote_via=quote)
    for _ in range(DEEP_PAGE - 1):
        _, _, page = _get(conn, path, token)
        if not page.get("next_cursor"):
            raise RuntimeError("fewer pages than the deep cursor page: raise --read-customers")
        path = "/v1/customers?" + urlencode({**args, "cursor": page["next_cursor"]}, quote_via=quote)
    return path


def readside_phase(cfg: Config, env: Environment, procs: Processes) -> dict[str, Any]:
    env.execute("TRUNCATE events, customers RESTART IDENTITY CASCADE")
    log(f"read side: generating {cfg.read_customers:,} customers in 3 projects in SQL")
    seconds = generate(env.database_url, cfg.read_customers)
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
        for family, path in paths.items():
            if path.startswith("page50:"):
                paths[family] = _deep_path(conn, read_key, path.removeprefix("page50:"))
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
