"""A Paddle subscription's whole life, delivered in any order with redeliveries, ends in the record
that in-order delivery gives: through the real endpoint, the real worker and deferred events.

Same-second ties, as Paddle sends them: `subscription.created` and `subscription.trialing` for one
change; the payment (`transaction.completed`) and `subscription.activated`; the failed payment
and `subscription.past_due`; and the end, `subscription.canceled` with the `subscription.updated`
that reports the same change. Paddle never deletes customers: cancellation is the end."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from tests.connectors.lifecycle import billing_record, deliver, delivery_plans, settle
from tests.connectors.provider_fixtures import dumps, fixture, make_source
from tributary.connectors.testkit import paddle_headers
from tributary.models import Event
from tributary.runtime.process import Runtime

SECRET = "pdl_ntfset_01hv8wrsmjy2s7qe9j3kz2b0xw_Q3KnT9fXmW2pLr8vYc4Hs6Jd"
CUSTOMER = "ctm_01hv8wt8nffez4p2t6tgt0bqaw"


def _lifecycle() -> list[dict[str, Any]]:
    canceled = fixture("paddle/subscription.canceled.json")
    reported = copy.deepcopy(canceled)
    reported.update(event_id="evt_01j0m1n2p3q4r5s6t7u8v9w0x2", event_type="subscription.updated")
    return [
        fixture("paddle/customer.created.json"),
        fixture("paddle/subscription.created.json"),
        fixture("paddle/subscription.trialing.json"),
        fixture("paddle/customer.updated.json"),
        fixture("paddle/transaction.completed.json"),
        fixture("paddle/subscription.activated.json"),
        fixture("paddle/subscription.updated.json"),
        fixture("paddle/transaction.payment_failed.json"),
        fixture("paddle/subscription.past_due.json"),
        canceled,
        reported,
    ]


LIFECYCLE = _lifecycle()
assert [e["occurred_at"] for e in LIFECYCLE] == sorted(e["occurred_at"] for e in LIFECYCLE)


def _for_person(n: int) -> list[bytes]:
    bodies = []
    for index, payload in enumerate(LIFECYCLE):
        text = (
            json.dumps(payload)
            .replace(CUSTOMER, f"ctm_person{n:04d}")
            .replace("ada@example.com", f"p{n}@example.com")
        )
        data = json.loads(text)
        data["event_id"] = f"evt_p{n}_{index}"
        bodies.append(dumps(data))
    return bodies


def _post(client: FlaskClient, source_id: str, body: bytes) -> Any:
    headers = {**paddle_headers(body, SECRET), "Content-Type": "application/json"}
    return client.post(f"/webhooks/{source_id}", data=body, headers=headers)


def _record(client: FlaskClient, admin: dict[str, str], n: int) -> dict[str, Any]:
    return billing_record(client, admin, f"p{n}@example.com")


deliveries = delivery_plans(len(LIFECYCLE), max_redeliveries=4)


def test_any_delivery_order_with_duplicates_converges_to_the_in_order_record(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = make_source(runtime, "paddle", [SECRET])
    people = itertools.count(1)
    baseline_person = next(people)
    for body in _for_person(baseline_person):
        assert _post(client, source_id, body).status_code == 200
        drain()
    baseline = _record(client, admin, baseline_person)
    project = baseline["projects"]["default"]
    assert (baseline["name"], project["status"], project["params"]["mrr"]) == ("Ada King", "churned", 0)
    assert project["params"]["last_payment_failed_at"] == "2026-02-15T00:01:07Z"
    assert baseline["identities"] == ["paddle"]

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(plan=deliveries)
    def check(plan: tuple[tuple[int, ...], list[tuple[int, int]], list[bool]]) -> None:
        n = next(people)
        bodies = _for_person(n)
        deliver(plan, lambda index: _post(client, source_id, bodies[index]), drain)
        settle(runtime, drain, rounds=len(LIFECYCLE) + 1)
        assert _record(client, admin, n) == baseline
        with runtime.db.session() as session:
            stored = session.scalars(select(Event.status).where(Event.provider_event_id.like(f"evt_p{n}_%")))
            assert sorted(stored) == ["processed"] * len(LIFECYCLE)

    check()
