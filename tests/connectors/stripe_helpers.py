"""Stripe test helpers: fixtures on disk, signed deliveries, sources through the admin API."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from tributary.connectors.testkit import stripe_headers
from tributary.models import Event
from tributary.runtime.process import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
SECRET = "whsec_test_5Qm2Zt8bXc1LkdIwHu7ixPa9sD4hJ6gC"
OTHER_SECRET = "whsec_test_other_0000000000000000000000"
CUSTOMER_ID = "cus_TQ8cZ3XbWm2kLp"
EMAIL = "ada@example.com"
API_KEY = "sk_test_51SRZwvLkdIwHu7ixTestKey000000"

EVENT_TYPES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(event_type: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / f"{event_type}.json").read_text())
    return event


def event(
    event_type: str, *, event_id: str | None = None, created: int | None = None, **data: Any
) -> dict[str, Any]:
    """A fixture event with its id, time, or `data.object` fields replaced."""
    body = copy.deepcopy(load(event_type))
    if event_id is not None:
        body["id"] = event_id
    if created is not None:
        body["created"] = created
    body["data"]["object"].update(data)
    return body


def post(
    client: FlaskClient,
    source_id: str,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    **kwargs: Any,
) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **stripe_headers(raw, secret, **kwargs)}
    return client.post(f"/webhooks/{source_id}", data=raw, headers=headers)


def post_customer_created(client: FlaskClient, source_id: str, tag: str, i: int) -> None:
    """A signed `customer.created` for `<tag><i>@example.com` (customer `cus_<tag><i>`), accepted."""
    body = event(
        "customer.created", event_id=f"evt_{tag}{i}", id=f"cus_{tag}{i}", email=f"{tag}{i}@example.com"
    )
    assert post(client, source_id, body).status_code == 200


def create_source(client: FlaskClient, admin: dict[str, str], **options: Any) -> str:
    response = client.post(
        "/v1/sources", json={"connector": "stripe", "secrets": [SECRET], "options": options}, headers=admin
    )
    assert response.status_code == 201, response.get_json()
    source_id: str = response.get_json()["id"]
    return source_id


def events(runtime: Runtime) -> list[Event]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def event_by_provider_id(runtime: Runtime, provider_event_id: str) -> Event:
    with runtime.db.session() as session:
        found = session.scalar(select(Event).where(Event.provider_event_id == provider_event_id))
    assert found is not None, provider_event_id
    return found
