"""A Clerk user's life (on the waitlist by address alone -> created -> organization -> new primary
email -> Clerk Billing subscription -> session -> deleted in the same millisecond), delivered in
any order with redeliveries, ends in the record that in-order delivery gives: through the real
endpoint, the real worker and the retries RQ would run later."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from tests.connectors.lifecycle import deliver, delivery_plans, settle
from tests.connectors.provider_fixtures import fixture, make_source
from tributary.connectors.testkit import svix_headers
from tributary.models import Customer, Event, TimelineEntry
from tributary.runtime.process import Runtime

SECRET = "whsec_" + "QkVJTkcgQUxJVkUgSVMgQSBMT05HIFNUT1JZ"
FIXTURE_USER = "user_2pX9dLrV7kQm3TzW8bN4cHfYs1A"
# The waitlist entry makes the person known by address alone before the user exists: whichever of
# it, the signup and the email change comes first, they end as one customer
# (workers/batch/identity_resolution.py).
LIFECYCLE = [
    "waitlistEntry.created",
    "user.created",
    "organizationMembership.created",
    "user.updated",
    "paymentAttempt.updated",
    "subscriptionItem.active",
    "subscription.active",
    "session.created",
    "user.deleted",
]
PAYLOADS = [fixture(f"clerk/{name}.json") for name in LIFECYCLE]
# Clerk Billing names the payer by the address the user has then: the new primary one.
for payload in PAYLOADS[4:7]:
    for payer in [payload["data"]["payer"], *(i.get("payer") for i in payload["data"].get("items", []))]:
        if payer:
            payer["email"] = "Ada.Lovelace@Example.org"
# Same-millisecond ties: the paid item and the whole subscription report one change; the user is
# deleted while the session starts (an admin deleting a user who is signing in). In either order
# the session reaches the person the deleted id belonged to.
assert PAYLOADS[5]["timestamp"] == PAYLOADS[6]["timestamp"]
PAYLOADS[8]["timestamp"] = PAYLOADS[7]["timestamp"]
assert [p["timestamp"] for p in PAYLOADS] == sorted(p["timestamp"] for p in PAYLOADS)


def _for_person(n: int) -> list[bytes]:
    """Person `n`'s deliveries: its own Clerk user id and addresses."""
    bodies = []
    for payload in PAYLOADS:
        text = json.dumps(payload).replace(FIXTURE_USER, f"user_person{n:04d}")
        text = text.replace("ada@example.com", f"p{n}@example.com")
        text = text.replace("Ada.Lovelace@Example.org", f"P{n}.Lovelace@Example.org")
        bodies.append(text.encode())
    return bodies


def _post(client: FlaskClient, source_id: str, n: int, index: int, body: bytes) -> Any:
    # Signed when sent, as Svix does for every attempt; the message id is stable across attempts.
    headers = svix_headers(body, SECRET, msg_id=f"msg_p{n}_{index}")
    return client.post(
        f"/webhooks/{source_id}", data=body, headers={**headers, "Content-Type": "application/json"}
    )


def _record(client: FlaskClient, admin: dict[str, str], n: int) -> dict[str, Any]:
    response = client.get(f"/v1/customers/p{n}.lovelace@example.org", headers=admin)
    assert response.status_code == 200, response.get_json()
    record: dict[str, Any] = response.get_json()
    # What the events decide; not who ran them or when.
    for key in ("id", "email", "created_at", "updated_at"):
        record.pop(key)
    record["past_emails"] = [e.replace(f"p{n}@", "pN@") for e in record["past_emails"]]
    return record


deliveries = delivery_plans(len(LIFECYCLE), max_redeliveries=3)


def test_any_delivery_order_with_duplicates_converges_to_the_in_order_record(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = make_source(runtime, "clerk", [SECRET])
    people = itertools.count(1)
    baseline_person = next(people)
    for index, body in enumerate(_for_person(baseline_person)):
        assert _post(client, source_id, baseline_person, index, body).status_code == 200
        drain()
    baseline = _record(client, admin, baseline_person)
    assert baseline["name"] == "Augusta Ada King"
    assert baseline["past_emails"] == ["pN@example.com"]
    assert baseline["identities"] == []
    # The signup's `free` is weak; the subscription's `paid` is not.
    assert baseline["projects"]["default"]["status"] == "paid"
    params = baseline["projects"]["default"]["params"]
    assert params["plan"] == "pro" and params["mrr"] == 2000
    assert params["organization:org_2pXA3kLm8Nq1Rt5Vw9Yz2Bc4Df6"] == "org:admin"
    assert baseline["last_activity_at"] == "2024-06-03T10:00:00.530000Z"

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(plan=deliveries)
    def check(plan: tuple[tuple[int, ...], list[tuple[int, int]], list[bool]]) -> None:
        n = next(people)
        bodies = _for_person(n)
        deliver(plan, lambda index: _post(client, source_id, n, index, bodies[index]), drain)
        settle(runtime, drain, rounds=len(LIFECYCLE) + 1)
        assert _record(client, admin, n) == baseline
        with runtime.db.session() as session:
            # One person, one customer: no leftover row for the first address.
            people_rows = session.scalar(
                select(func.count()).select_from(Customer).where(Customer.email.like(f"%p{n}%"))
            )
            assert people_rows == 1
            stored = session.scalars(select(Event.status).where(Event.provider_event_id.like(f"msg_p{n}_%")))
            assert sorted(stored) == ["processed"] * len(LIFECYCLE)
            deletion = session.scalar(
                select(Event.id).where(Event.provider_event_id == f"msg_p{n}_{len(LIFECYCLE) - 1}")
            )
            removed = session.scalars(select(TimelineEntry.data).where(TimelineEntry.event_id == deletion))
            assert {"identity_removed": ["clerk", f"user_person{n:04d}"]} in list(removed)

    check()
