"""A batch finds its customers by email through the unique (account_id, email) index on PostgreSQL.

pg_trgm's operator class answers equality too; with the email's trigram index on the bare column,
the planner chose it for the batch's `email IN (...)` lock once the table held a few thousand
addresses of one domain, statistics or not, and a batch took a quarter of a second there
(migration 0012). No timings here: the statements a real batch sends are read with EXPLAIN.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, text

from tests.connectors.stripe_helpers import create_source, post_customer_created
from tests.helpers import (
    before_each_statement,
    customer,
    identify,
    plan_of,
    statements_sent,
    walks_the_table,
)
from tributary.models import Customer
from tributary.runtime.process import Runtime
from tributary.workers.batch import load_statements
from tributary.workers.jobs import drain_batch

KNOWN = 8_000  # where the trigram plan appeared, with fresh statistics
START = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_batch_locks_its_customers_through_the_unique_index(
    client: FlaskClient, admin_key: str, runtime: Runtime, account_id: str
) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("the plan is PostgreSQL's; SQLite has no trigram index")
    with runtime.db.engine.begin() as conn:
        conn.execute(
            insert(Customer),
            [
                {"account_id": account_id, "email": f"known{n}@example.com", "name": f"Known {n}",
                 "past_emails": [], "clock": {}, "created_at": START, "updated_at": START}
                for n in range(KNOWN)
            ],
        )  # fmt: skip
    # With statistics, as on a live server, and with the new rows still in the GIN index's pending
    # list, as between two vacuums of a table that takes inserts all day: then the planner priced
    # the trigram index below the unique one.
    with runtime.db.engine.begin() as conn:
        conn.execute(text("ANALYZE customers"))
    # A batch of known customers and new ones, all of the shared domain.
    for n in range(0, KNOWN, KNOWN // 20):
        identify(client, admin_key, email=f"known{n}@example.com", status="paid")
        identify(client, admin_key, email=f"new{n}@example.com", status="trial")

    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 1000) == 40
    locks = [s for s in sent if s.reads("customers") and "FOR UPDATE" in s.sql]

    assert locks and any("past" in lock.parameters for lock in locks)
    with runtime.db.engine.connect() as conn:
        for lock in locks:
            plan = plan_of(conn, lock.sql, lock.parameters)
            assert "ix_customers_email_trgm" not in plan, plan
            assert "uq_customers_account_id_email" in plan, plan
            if "past" in lock.parameters:  # the new addresses' past holders, in the same statement
                assert "ix_customers_with_past_emails" in plan, plan
    record = customer(client, admin_key, f"known{KNOWN // 20}@example.com")
    assert record["projects"]["default"]["status"] == "paid"


def test_a_batch_plans_its_load_for_the_values_at_hand(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    # psycopg prepares a statement run five times, and PostgreSQL may then choose a generic plan of
    # `email IN (…)` that reads every customer of the account; the batch asks for custom plans for
    # its transaction (workers/batch/state.py, with the lock on its projects).
    if not runtime.db.is_postgres:
        pytest.skip("plan_cache_mode is PostgreSQL's")
    settings: list[str] = []

    def setting_at_the_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FOR UPDATE" in statement and "FROM customers" in statement:
            for name in ("plan_cache_mode", "random_page_cost"):
                settings.append(cursor.connection.execute(f"SHOW {name}").fetchone()[0])

    for n in range(3):
        identify(client, admin_key, email=f"plan{n}@example.com", status="trial")
    with runtime.db.engine.connect() as conn:
        server_default = conn.execute(text("SHOW random_page_cost")).scalar()
    with before_each_statement(runtime.db.engine, setting_at_the_lock):
        assert drain_batch(runtime, 10) == 3

    assert settings == ["force_custom_plan", "1.1"]
    with runtime.db.engine.connect() as conn:  # for the batch's transaction only
        assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
        assert conn.execute(text("SHOW random_page_cost")).scalar() == server_default


def test_a_batchs_writes_are_planned_from_the_plan_cache(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    # The load's custom plans are for its lookups. Left in force for the writes, they also reached
    # the foreign-key checks PostgreSQL runs for each identity written, planned afresh every row
    # (workers/batch/write_back_pg.py `begin_writes`).
    if not runtime.db.is_postgres:
        pytest.skip("plan_cache_mode is PostgreSQL's")
    source_id = create_source(client, admin)
    for i in range(3):
        post_customer_created(client, source_id, "plans", i)
    modes: dict[str, list[str]] = {"load": [], "identities": [], "finish": []}

    def mode_at(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        for step, markers in (
            ("load", ("FROM customers", "FOR UPDATE")),  # the load's lock of the customers
            ("identities", ("INSERT INTO identities",)),
            ("finish", ("INSERT INTO customer_projects",)),
        ):
            if all(marker in statement for marker in markers):
                modes[step].append(cursor.connection.execute("SHOW plan_cache_mode").fetchone()[0])

    with runtime.db.engine.connect() as conn:
        server_default = conn.execute(text("SHOW plan_cache_mode")).scalar()
    with before_each_statement(runtime.db.engine, mode_at):
        assert drain_batch(runtime, 10) == 3

    assert modes["load"] and set(modes["load"]) == {"force_custom_plan"}
    assert modes["identities"] == [server_default] and modes["finish"] == [server_default]
    assert client.get("/v1/customers/plans2@example.com", headers=admin).get_json()["identities"] == [
        {"source": "stripe", "external_id": "cus_plans2"}
    ]


def test_a_batch_reads_a_mid_sized_table_by_address_through_its_index(
    client: FlaskClient, admin_key: str, runtime: Runtime, account_id: str
) -> None:
    """At 30,000 customers and PostgreSQL's default page costs, both reads of a batch of 500 by
    address (its customers, locked; then the addresses nobody holds) were a Seq Scan of the table.
    The plans are taken inside the batch's own transaction, where its settings hold."""
    if not runtime.db.is_postgres:
        pytest.skip("the planner's page costs are PostgreSQL's")
    known = 30_000
    with runtime.db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (id, account_id, email, name, past_emails, clock, created_at,"
                " updated_at) SELECT 'cus_mid' || g, :account, 'mid' || g || '@example.com', NULL,"
                " '[]', '{}', now(), now() FROM generate_series(1, :known) AS g"
            ),
            {"account": account_id, "known": known},
        )
        conn.execute(text("ANALYZE customers"))
    for n in range(0, known, known // 250):
        identify(client, admin_key, email=f"mid{n + 1}@example.com", status="paid")
        identify(client, admin_key, email=f"fresh{n}@example.com", status="trial")
    plans: dict[str, str] = {}

    def plan_in_the_batch(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM customers" in statement and ("FOR UPDATE" in statement or "pg_advisory" in statement):
            explained = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            plans["lock" if "FOR UPDATE" in statement else "unheld"] = "\n".join(r[0] for r in explained)

    with before_each_statement(runtime.db.engine, plan_in_the_batch):
        assert drain_batch(runtime, 500) == 500

    assert plans.keys() == {"lock", "unheld"}
    for plan in plans.values():
        assert "Seq Scan on customers" not in plan, plan
        assert "uq_customers_account_id_email" in plan, plan
    assert customer(client, admin_key, "mid121@example.com")["projects"]["default"]["status"] == "paid"


def test_the_loads_statements_are_the_same_text_at_any_batch_size(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    # As expanding `IN (…)` lists, a batch of 500 sent 12 KB statements with 500 parameters, built
    # by SQLAlchemy and parsed by psycopg anew for every batch (it caches only statements under
    # 4 KB and 50 parameters). Each list is one array parameter on PostgreSQL.
    if not runtime.db.is_postgres:
        pytest.skip("SQLite keeps the expanding form, which it plans by index")
    texts: dict[int, dict[str, set[str]]] = {}
    for size in (2, 60):
        for n in range(size):
            identify(client, admin_key, email=f"size{size}-{n}@example.com", status="trial")
        with statements_sent(runtime) as sent:
            assert drain_batch(runtime, 100) == size
        texts[size] = {
            table: {s.sql for s in sent if s.reads(table)} for table in ("customers", "customer_projects")
        }
        for table, seen in texts[size].items():
            assert seen, table
        assert all(
            len(s.parameters) <= 4 for s in sent if s.reads("customers") or s.reads("customer_projects")
        )
    assert texts[2] == texts[60]


def test_a_batch_reads_its_customers_on_sqlite_through_their_indexes(
    client: FlaskClient, admin_key: str, runtime: Runtime, account_id: str
) -> None:
    # An OR of the batch's arms (addresses, ids, past addresses) made SQLite walk every customer of
    # the account for each batch that met a new address: 12 ms a batch at 16,000 customers.
    if runtime.db.is_postgres:
        pytest.skip("SQLite's plans; PostgreSQL's are the tests above")
    with runtime.db.engine.begin() as conn:
        conn.execute(
            insert(Customer),
            [
                {"account_id": account_id, "email": f"known{n}@example.com", "name": f"Known {n}",
                 "past_emails": [f"was{n}@example.com"] if n % 50 == 0 else [], "clock": {},
                 "created_at": START, "updated_at": START}
                for n in range(500)
            ],
        )  # fmt: skip
    for n in range(0, 500, 25):
        identify(client, admin_key, email=f"known{n}@example.com", status="paid")
        identify(client, admin_key, email=f"new{n}@example.com", status="trial")
    identify(client, admin_key, email="was100@example.com", status="trial")  # someone's past address

    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 1000) == 41
    reads = [s for s in sent if s.sql.lstrip().startswith("SELECT") and "FROM customers" in s.sql]
    assert any("json_each" in read.sql for read in reads)  # the past addresses' arm was asked
    with runtime.db.engine.connect() as conn:
        for read in reads:
            plan = plan_of(conn, read.sql, read.parameters)
            assert walks_the_table(plan, "customers", allowed=("ix_customers_with_past_emails",)) == [], plan
    # Every arm at once, the ids arm too (a batch's customers found through identities).
    every_arm = {"account": account_id, "emails": ["known0@example.com"], "ids": ["c1"], "past": ["x@y.z"]}
    with statements_sent(runtime) as sent, runtime.db.session() as session:
        session.scalars(load_statements.customers(False, True, True, True), every_arm).all()
    with runtime.db.engine.connect() as conn:
        plan = plan_of(conn, sent[-1].sql, sent[-1].parameters)
    assert walks_the_table(plan, "customers", allowed=("ix_customers_with_past_emails",)) == [], plan
    assert "ix_customers_with_past_emails" in plan, plan
    assert customer(client, admin_key, "known25@example.com")["projects"]["default"]["status"] == "paid"
    assert customer(client, admin_key, "new25@example.com")["projects"]["default"]["status"] == "trial"
