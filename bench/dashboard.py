"""Dashboard page server times on a generated dataset.

    python bench/dashboard.py [--customers 100000] [--events 1000000] [--repeat 5] [--keep DIR]

Builds a fresh SQLite database (the embedded default; set DATABASE_URL to a PostgreSQL server URL to
use a fresh database there instead) with customers in several projects, their project rows, events
spread over 30 days (a realistic share in the last 24 hours, some failed and pending) and one
timeline row per event. Then signs in through the real form and times every dashboard page in
process with Flask's test client: server time only (routing, queries, templates), no network.
Prints a table and writes bench/results/dashboard-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import temporary_database
from tributary.app import create_app
from tributary.app.accounts import create_key, ensure_account
from tributary.models import (
    Customer,
    CustomerProject,
    Event,
    Project,
    Source,
    TimelineEntry,
)
from tributary.models.session import normalize_url
from tributary.runtime.config import Settings
from tributary.runtime.migrate import upgrade
from tributary.runtime.process import Runtime

CHUNK = 20_000
STATUSES = ["trial", "paid", "paid", "paid", "free", "past_due", "canceled"]
PLANS = ["basic", "pro", "team", "enterprise"]
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def minted_id(prefix: str, moment: datetime) -> str:
    """A `sortable_id` as if minted at `moment` (the product mints event ids on receipt)."""
    value = (int(moment.timestamp() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def _events(
    conn: Any,
    rng: random.Random,
    now: datetime,
    account_id: str,
    project_ids: list[str],
    source_ids: list[str],
    customer_ids: list[str],
    events: int,
) -> None:
    customers = len(customer_ids)
    batch, changes = [], []
    body = json.dumps({"email": "user@example.com", "status": "paid", "params": {"plan": "pro"}}).encode()
    # Stored in arrival order, as the product stores them: 30 days at an even rate, so the last 24 h
    # hold ~3 % of the events, and the backlog (pending) is the newest few minutes.
    ages = sorted((rng.uniform(0, 30 * 86_400) for _ in range(events)), reverse=True)
    for n, age in enumerate(ages):
        received = now - timedelta(seconds=age)
        i = rng.randrange(customers)
        status = rng.choices(("processed", "ignored", "failed"), (95, 3, 2))[0] if age > 300 else "pending"
        eid = minted_id("evt", received)
        batch.append({
            "id": eid, "account_id": account_id, "project_id": rng.choice(project_ids),
            "source_id": rng.choice([*source_ids, None]), "channel": "stripe", "type": "customer.updated",
            "provider_event_id": f"p{n}", "dedup_key": f"d{n}", "email": f"user{i}@example.com",
            "occurred_at": received, "received_at": received, "body": body,
            "headers": {"stripe-signature": "t=1,v1=x"}, "payload": None, "status": status,
            "attempts": 1, "last_error": "ValueError: bench" if status == "failed" else None,
            "changes": None, "processed_at": received if status == "processed" else None,
        })  # fmt: skip
        if status == "processed":
            changes.append({
                "customer_id": customer_ids[i], "project_id": batch[-1]["project_id"], "event_id": eid,
                "kind": "customer.updated", "data": {"changed": {"params.plan": [None, "pro"]}},
                "occurred_at": received, "recorded_at": received,
            })  # fmt: skip
        if len(batch) >= CHUNK:
            conn.execute(insert(Event), batch)
            conn.execute(insert(TimelineEntry), changes)
            batch, changes = [], []
            if (n + 1) % 200_000 == 0:
                print(f"  events: {n + 1:,}", flush=True)
    if batch:
        conn.execute(insert(Event), batch)
    if changes:
        conn.execute(insert(TimelineEntry), changes)


def generate(runtime: Runtime, customers: int, events: int) -> dict[str, Any]:
    rng = random.Random(7)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        projects = [session.scalar(select(Project).where(Project.slug == "default"))]
        for slug in ("shop", "app"):
            project = Project(account_id=account.id, slug=slug, name=slug)
            session.add(project)
            projects.append(project)
        session.flush()
        sources = []
        for connector, project in (
            ("stripe", projects[1]),
            ("clerk", projects[2]),
            ("standard", projects[0]),
        ):
            source = Source(account_id=account.id, project_id=project.id, connector=connector, name=connector)
            session.add(source)
            sources.append(source)
        session.flush()
        account_id = account.id
        project_ids = [p.id for p in projects if p is not None]
        source_ids = [s.id for s in sources]
        admin = create_key(session, account_id, ["admin"], name="bench").token
        bound = create_key(session, account_id, ["read"], projects[1], name="bench bound").token
    customer_ids: list[str] = []
    with runtime.db.engine.begin() as conn:
        rows, memberships = [], []
        for i in range(customers):
            created = now - timedelta(days=rng.uniform(0, 365))
            active = created + (now - created) * rng.random()
            cid = minted_id("cus", created)
            customer_ids.append(cid)
            rows.append({
                "id": cid, "account_id": account_id, "email": f"user{i}@example.com", "name": f"User {i}",
                "past_emails": [], "clock": {}, "created_at": created, "updated_at": active,
                "last_activity_at": active,
            })  # fmt: skip
            for project_id in rng.sample(project_ids, rng.choice((1, 1, 2))):
                memberships.append({
                    "customer_id": cid, "project_id": project_id, "status": rng.choice(STATUSES),
                    "params": {"plan": rng.choice(PLANS), "seats": rng.randint(1, 20)}, "clock": {},
                    "first_seen_at": created, "last_activity_at": active, "updated_at": active,
                })  # fmt: skip
            if len(rows) >= CHUNK:
                conn.execute(insert(Customer), rows)
                rows = []
        if rows:
            conn.execute(insert(Customer), rows)
        for start in range(0, len(memberships), CHUNK):
            conn.execute(insert(CustomerProject), memberships[start : start + CHUNK])
        print(f"  customers: {customers:,} and {len(memberships):,} project rows", flush=True)
        _events(conn, rng, now, account_id, project_ids, source_ids, customer_ids, events)
    if runtime.db.is_postgres:
        # VACUUM too: autovacuum would have set the visibility map on a live server, and without it
        # no index-only scan pays (the test server runs with autovacuum off).
        with runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with runtime.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return {
        "customer": _shop_customer(runtime),
        "admin": admin,
        "bound": bound,
        "generate_seconds": round(time.perf_counter() - started, 1),
    }


def _shop_customer(runtime: Runtime) -> str | None:
    """A customer of the project the bound key sees, so both keys time the same pages."""
    with runtime.db.session() as session:
        shop = select(Project.id).where(Project.slug == "shop").scalar_subquery()
        return session.scalar(
            select(CustomerProject.customer_id)
            .where(CustomerProject.project_id == shop)
            .order_by(CustomerProject.customer_id)
            .offset(1000)
            .limit(1)
        )


def reuse(runtime: Runtime) -> dict[str, Any]:
    with runtime.db.session() as session, session.begin():
        account_id = session.scalars(select(Project.account_id)).first()
        shop = session.scalar(select(Project).where(Project.slug == "shop"))
        assert account_id and shop
        return {
            "admin": create_key(session, account_id, ["admin"], name="bench").token,
            "bound": create_key(session, account_id, ["read"], shop, name="bench bound").token,
            "customer": _shop_customer(runtime),
            "generate_seconds": 0,
        }


def measure(runtime: Runtime, data: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    app = create_app({"TESTING": True}, runtime=runtime)
    results = []
    for label, token in (("admin", data["admin"]), ("project-bound", data["bound"])):
        client = app.test_client()
        page = client.get("/dashboard/sign-in").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf
        signed = client.post("/dashboard/sign-in", data={"api_key": token, "csrf_token": csrf.group(1)})
        assert signed.status_code == 302, signed.status_code
        with runtime.db.session() as session:
            shop = select(Project.id).where(Project.slug == "shop").scalar_subquery()
            in_shop = Event.project_id == shop
            event_id = session.scalar(select(Event.id).where(in_shop).order_by(Event.id.desc()).limit(1))
            failed_id = session.scalar(select(Event.id).where(in_shop, Event.status == "failed").limit(1))
        pages = [
            "/dashboard/",
            "/dashboard/customers",
            "/dashboard/customers?project=shop&status=paid",
            "/dashboard/customers?project=shop&pk=plan&pv=pro&pk=seats&pv=3",
            "/dashboard/customers?pk=plan&pv=team",
            "/dashboard/customers?q=user4242",
            "/dashboard/customers?sort=-created_at&created_since=2026-06-01",
            f"/dashboard/customers/{data['customer']}",
            "/dashboard/events",
            "/dashboard/events?status=failed",
            # A status no event has: the list must not walk every event to find none.
            "/dashboard/events?status=deferred",
            f"/dashboard/events/{event_id}",
            f"/dashboard/events/{failed_id}",
            "/dashboard/sources",
        ]
        if label == "admin":
            pages.append("/dashboard/keys")
        for path in pages:
            times, status = [], 0
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                status = response.status_code
            results.append({
                "key": label, "page": path, "status": status,
                "first_ms": round(times[0], 1), "median_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
            })  # fmt: skip
            median = statistics.median(times)
            print(f"  {label:13} {path[:64]:64} {status} {times[0]:8.1f} {median:8.1f} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--sqlite", type=Path, help="keep the SQLite database in this file; an existing one is reused as is"
    )
    parser.add_argument(
        "--pg-database",
        help="with DATABASE_URL: use (and keep) this database on that server; an existing one is reused",
    )
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="tributary-dashboard-bench-") as home:
        if server_url and args.pg_database:
            context: Any = _KeptPostgres(server_url, args.pg_database)
        elif server_url:
            context = temporary_database(server_url, f"tributary_dash_bench_{os.getpid()}")
        else:
            context = _Sqlite(str(args.sqlite) if args.sqlite else str(Path(home) / "bench.db"))
        with context as url:
            settings = Settings.load(
                {"TRIBUTARY_HOME": home, "DATABASE_URL": url, "TRIBUTARY_SECRET_KEY": "bench"}
            )
            upgrade(url)
            runtime = Runtime(settings)
            if isinstance(context, _Sqlite | _KeptPostgres) and context.reuse:
                print("reusing the existing database")
                data = reuse(runtime)
            else:
                sizes = f"{args.customers:,} customers and {args.events:,} events"
                print(f"generating {sizes} ({runtime.db.dialect})")
                data = generate(runtime, args.customers, args.events)
            print(f"  generated in {data['generate_seconds']} s; timing pages ({args.repeat} runs each)")
            print(f"  {'key':13} {'page':64} {'st'} {'first':>8} {'median':>8}")
            results = measure(runtime, data, args.repeat)
            runtime.db.dispose()
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "customers": args.customers,
        "events": args.events,
        "backend": "postgresql" if server_url else "sqlite",
        "generate_seconds": data["generate_seconds"],
        "pages": results,
    }
    (out / f"dashboard-{stamp}.json").write_text(json.dumps(report, indent=2))
    slowest = max(results, key=lambda r: r["median_ms"])
    print(f"slowest page: {slowest['page']} ({slowest['key']}) {slowest['median_ms']} ms median")


class _KeptPostgres:
    def __init__(self, server_url: str, name: str) -> None:
        base = make_url(normalize_url(server_url))
        self.url = base.set(database=name).render_as_string(hide_password=False)
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.reuse = exists is not None

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


class _Sqlite:
    def __init__(self, path: str) -> None:
        self.reuse = Path(path).exists()
        self.url = f"sqlite:///{Path(path).resolve()}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
