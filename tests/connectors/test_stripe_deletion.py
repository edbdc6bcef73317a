"""Stripe's deletion cascade: deleting a customer cancels its subscriptions, and the two events
arrive in the same second or a second apart, in either order. Whatever the order, the person ends
`churned` with `mrr` 0 and without the Stripe identity (issue #12, defect 1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.connectors.stripe_helpers import EMAIL, create_source, event, event_by_provider_id, load, post
from tributary.runtime.process import Runtime

ACTIVE = load("customer.subscription.updated")


def _setup(client: FlaskClient, admin: dict[str, str], drain: Callable[[], None]) -> str:
    source_id = create_source(client, admin)
    for body in (load("customer.created"), ACTIVE):
        assert post(client, source_id, body).status_code == 200
    drain()
    return source_id


@pytest.mark.parametrize("one_batch", [False, True], ids=["two-batches", "one-batch"])
@pytest.mark.parametrize("gap", [0, 1, 3600], ids=["same-second", "a-second-later", "an-hour-later"])
def test_a_cancellation_applied_after_the_customer_deletion_still_churns_the_person(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    gap: int,
    one_batch: bool,
) -> None:
    source_id = _setup(client, admin, drain)
    deleted_at = ACTIVE["created"] + 86400
    deletion = event("customer.deleted", event_id="evt_cascade_deleted", created=deleted_at)
    cancellation = event(
        "customer.subscription.deleted", event_id="evt_cascade_canceled", created=deleted_at + gap
    )
    assert post(client, source_id, deletion).status_code == 200
    if not one_batch:
        drain()
    assert post(client, source_id, cancellation).status_code == 200
    drain()
    assert event_by_provider_id(runtime, "evt_cascade_canceled").status == "processed"
    record = client.get(f"/v1/customers/{EMAIL}", headers=admin).get_json()
    assert record["projects"]["default"]["status"] == "churned"
    assert record["projects"]["default"]["params"]["mrr"] == 0
    # The tombstone routed the cancellation: it never linked the deleted identity again.
    assert record["identities"] == []
