"""A batch looks up its identities by (source, external id) pairs (models/sql.py `pairs_in`): the
same rows as the row-value IN it replaced, on both backends, and on PostgreSQL a plan that matches
each source's ids with one `= ANY(...)` instead of testing every row against every pair."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from tests.connectors.stripe_helpers import create_source, post_customer_created
from tests.helpers import plan_of, statements_sent
from tributary.models import Customer, Identity
from tributary.models.sql import pairs_in
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch

START = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = ("stripe", "paddle", "clerk")


def test_pairs_in_finds_exactly_the_named_pairs(runtime: Runtime, account_id: str) -> None:
    # The same external ids under several sources: a match needs both halves of a pair.
    stored = {(source, f"id{n}") for source in SOURCES for n in range(8)}
    with runtime.db.engine.begin() as conn:
        conn.execute(
            insert(Customer),
            [{"id": "cus_pairs", "account_id": account_id, "email": "pairs@example.com",
              "past_emails": [], "clock": {}, "created_at": START, "updated_at": START}],
        )  # fmt: skip
        conn.execute(
            insert(Identity),
            [{"account_id": account_id, "source": s, "external_id": x, "customer_id": "cus_pairs",
              "created_at": START} for s, x in sorted(stored)],
        )  # fmt: skip
    asked = [("stripe", "id1"), ("stripe", "id2"), ("paddle", "id2"), ("clerk", "nope"), ("other", "id1")]

    with runtime.db.session() as session:
        rows = session.execute(
            select(Identity.source, Identity.external_id).where(
                Identity.account_id == account_id, pairs_in(Identity.source, Identity.external_id, asked)
            )
        )
        found = {(source, external_id) for source, external_id in rows}
        nothing = session.scalars(
            select(Identity.id).where(pairs_in(Identity.source, Identity.external_id, []))
        )
        assert list(nothing) == []

    assert found == {("stripe", "id1"), ("stripe", "id2"), ("paddle", "id2")}


def test_a_batch_matches_each_sources_ids_in_one_condition(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("the plan is PostgreSQL's")
    source_id = create_source(client, admin)
    for i in range(12):
        post_customer_created(client, source_id, "look", i)

    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 1000) == 12
    lookups = [s for s in sent if s.reads("identities")]

    assert lookups
    with runtime.db.engine.connect() as conn:
        for lookup in lookups:
            plan = plan_of(conn, lookup.sql, lookup.parameters)
            # One source: its twelve ids in one array, not twelve (source AND id) terms ORed.
            assert "ANY" in plan and " OR " not in plan, plan
    assert client.get("/v1/customers/look3@example.com", headers=admin).get_json()["identities"] == [
        {"source": "stripe", "external_id": "cus_look3"}
    ]
