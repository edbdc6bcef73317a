"""A subscription's whole life, delivered by Stripe in any order with redeliveries, ends in the record
that in-order delivery gives: through the real endpoint, the real worker and its retries."""

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
from tests.connectors.stripe_helpers import CUSTOMER_ID, create_source, load, post
from tributary.models import Event
from tributary.runtime.process import Runtime

T0 = 1767225600
DAY = 86400
ACTIVE_START = T0 + 14 * DAY + 300


def _lifecycle() -> list[dict[str, Any]]:
    """customer → trial → active → past_due → customer deleted, in event-time order.

    Two same-second ties, as Stripe's whole-second `created` makes common: the first invoice is
    paid in the second the subscription turns active, and deleting the customer cancels its
    subscription in the same second (Stripe's cascade: `customer.subscription.deleted`, then
    `customer.deleted`). Neither tie writes one field twice, so in-order delivery is well defined.
    """
    past_due = copy.deepcopy(load("customer.subscription.updated"))
    past_due["id"] = "evt_lifecycle_past_due"
    past_due["created"] = ACTIVE_START + 31 * DAY + 61
    past_due["data"]["object"]["status"] = "past_due"
    past_due["data"]["previous_attributes"] = {"status": "active"}
    activated = load("customer.subscription.updated")
    paid = load("invoice.paid")
    paid["created"] = activated["created"]
    canceled = load("customer.subscription.deleted")
    deleted = load("customer.deleted")
    deleted["created"] = canceled["created"]
    # A coupon for the first months, and a refund; the coupon's end comes after the customer's
    # deletion, so only the deleted identity's tombstone can say whose it was.
    return [
        load("customer.created"),
        load("customer.subscription.created"),
        load("checkout.session.completed"),
        paid,
        activated,
        load("customer.discount.created"),
        load("charge.refunded"),
        load("invoice.payment_failed"),
        past_due,
        canceled,
        deleted,
        load("customer.discount.deleted"),
    ]


LIFECYCLE = _lifecycle()
assert [e["created"] for e in LIFECYCLE] == sorted(e["created"] for e in LIFECYCLE)


def _for_person(n: int) -> list[bytes]:
    """The lifecycle of person `n`: its own email, Stripe customer id and event ids."""
    bodies = []
    for index, payload in enumerate(LIFECYCLE):
        text = json.dumps(payload).replace(CUSTOMER_ID, f"cus_Person{n:04d}")
        text = text.replace("ada@example.com", f"p{n}@example.com").replace(
            "Ada@Example.com", f"P{n}@example.com"
        )
        data = json.loads(text)
        data["id"] = f"evt_p{n}_{index}"
        bodies.append(json.dumps(data).encode())
    return bodies


def _record(client: FlaskClient, admin: dict[str, str], n: int) -> dict[str, Any]:
    return billing_record(client, admin, f"p{n}@example.com")


deliveries = delivery_plans(len(LIFECYCLE), max_redeliveries=4)


def test_any_delivery_order_with_duplicates_converges_to_the_in_order_record(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    people = itertools.count(1)
    baseline_person = next(people)
    for body in _for_person(baseline_person):
        assert post(client, source_id, body).status_code == 200
        drain()
    baseline = _record(client, admin, baseline_person)
    assert baseline["projects"]["default"]["status"] == "churned"
    assert baseline["projects"]["default"]["params"]["mrr"] == 0
    assert baseline["projects"]["default"]["params"]["last_payment_failed_at"]
    assert baseline["identities"] == []
    assert baseline["projects"]["default"]["params"]["refunded_amount"] == 4900
    assert not any(key.startswith("discount") for key in baseline["projects"]["default"]["params"])

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(plan=deliveries)
    def check(plan: tuple[tuple[int, ...], list[tuple[int, int]], list[bool]]) -> None:
        n = next(people)
        bodies = _for_person(n)
        deliver(plan, lambda index: post(client, source_id, bodies[index]), drain)
        settle(runtime, drain, rounds=len(LIFECYCLE) + 1)
        assert _record(client, admin, n) == baseline
        with runtime.db.session() as session:
            stored = session.scalars(select(Event.status).where(Event.provider_event_id.like(f"evt_p{n}_%")))
            assert sorted(stored) == ["processed"] * len(LIFECYCLE)

    check()
