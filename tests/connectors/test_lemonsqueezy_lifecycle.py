"""A Lemon Squeezy subscription's whole life, delivered in any order with redeliveries, ends in the
record that in-order delivery gives, through the real endpoint and worker.

Same-second ties, as Lemon Squeezy sends them: each specific subscription event comes with a
`subscription_updated` for the same change (the renewal payment with the subscription turning
active; the expiry that ends the subscription with its `subscription_updated`). Lemon Squeezy
never deletes customers: `subscription_expired` is the end."""

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
from tributary.connectors.lemonsqueezy import derived_event_id
from tributary.connectors.testkit import lemonsqueezy_headers
from tributary.models import Event
from tributary.runtime.process import Runtime

SECRET = "lsq_whsec_7Hq2Lm9Xv4Tz"
OPTIONS = {"price.84211": "900/month", "currency": "usd"}
NAMES = [
    "order_created",
    "subscription_created",
    "subscription_payment_success",
    "subscription_updated",
    "subscription_paused",
    "subscription_unpaused",
    "subscription_payment_failed",
    "subscription_payment_recovered",
    "subscription_cancelled",
    "subscription_expired",
]


def _lifecycle() -> list[dict[str, Any]]:
    payloads = [fixture(f"lemonsqueezy/{name}.json") for name in NAMES]
    expired_update = copy.deepcopy(payloads[-1])
    expired_update["meta"]["event_name"] = "subscription_updated"
    return [*payloads, expired_update]


LIFECYCLE = _lifecycle()
assert [p["data"]["attributes"]["updated_at"] for p in LIFECYCLE] == sorted(
    p["data"]["attributes"]["updated_at"] for p in LIFECYCLE
)


def _for_person(n: int) -> list[dict[str, Any]]:
    people = []
    for payload in LIFECYCLE:
        data = json.loads(json.dumps(payload).replace("ada@example.com", f"p{n}@example.com"))
        data["data"]["id"] = f"{n}{data['data']['id']}"
        data["data"]["attributes"]["customer_id"] = 1_000_000 * n + 1984312
        people.append(data)
    return people


def _post(client: FlaskClient, source_id: str, payload: dict[str, Any]) -> Any:
    body = dumps(payload)
    headers = {
        **lemonsqueezy_headers(body, SECRET, payload["meta"]["event_name"]),
        "Content-Type": "application/json",
    }
    return client.post(f"/webhooks/{source_id}", data=body, headers=headers)


def _record(client: FlaskClient, admin: dict[str, str], n: int) -> dict[str, Any]:
    return billing_record(client, admin, f"p{n}@example.com")


deliveries = delivery_plans(len(LIFECYCLE), max_redeliveries=4)


def test_any_delivery_order_with_duplicates_converges_to_the_in_order_record(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = make_source(runtime, "lemonsqueezy", [SECRET], **OPTIONS)
    people = itertools.count(1)
    baseline_person = next(people)
    for payload in _for_person(baseline_person):
        assert _post(client, source_id, payload).status_code == 200
        drain()
    baseline = _record(client, admin, baseline_person)
    project = baseline["projects"]["default"]
    assert (project["status"], project["params"]["mrr"], project["params"]["subscription_status"]) == (
        "churned",
        0,
        "expired",
    )
    assert project["params"]["last_payment_at"] == "2026-02-18T00:00:09Z"

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(plan=deliveries)
    def check(plan: tuple[tuple[int, ...], list[tuple[int, int]], list[bool]]) -> None:
        n = next(people)
        payloads = _for_person(n)
        deliver(plan, lambda index: _post(client, source_id, payloads[index]), drain)
        settle(runtime, drain, rounds=len(LIFECYCLE) + 1)
        assert _record(client, admin, n) == baseline
        ids = [derived_event_id(p["meta"]["event_name"], p["data"]) for p in payloads]
        with runtime.db.session() as session:
            stored = session.scalars(select(Event.status).where(Event.provider_event_id.in_(ids)))
            assert sorted(stored) == ["processed"] * len(LIFECYCLE)

    check()
