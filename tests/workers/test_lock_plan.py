"""A batch finds its customers by email through the unique (account_id, email) index on PostgreSQL.

pg_trgm's operator class answers equality too; with the email's trigram index on the bare column,
the planner chose it for the batch's `email IN (...)` lock once the table held a few thousand
addresses of one domain, statistics or not, and a batch took a quarter of a second there
(migration 0012). No timings here: the statements a real batch sends are read with EXPLAIN.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, text

from tests.helpers import customer, identify, plan_of, statements_sent
from tributary.models import Customer
from tributary.runtime.process import Runtime
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

    assert locks
    with runtime.db.engine.connect() as conn:
        for lock in locks:
            plan = plan_of(conn, lock.sql, lock.parameters)
            assert "ix_customers_email_trgm" not in plan, plan
            assert "uq_customers_account_id_email" in plan, plan
    record = customer(client, admin_key, f"known{KNOWN // 20}@example.com")
    assert record["projects"]["default"]["status"] == "paid"
