"""Paddle Billing: the contract suite, every tracked event from realistic fixtures, the
`Paddle-Signature` scheme (rotation, window, tampering) and bad input."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.connectors.provider_fixtures import FIXTURES, dumps, fixture, make_source, source_config
from tributary.connectors.base import (
    EventIgnored,
    Headers,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    OfflineContext,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, paddle_headers
from tributary.runtime.process import Runtime

SECRET = "pdl_ntfset_01hv8wrsmjy2s7qe9j3kz2b0xw_Q3KnT9fXmW2pLr8vYc4Hs6Jd"
OTHER_SECRET = "pdl_ntfset_01hv8wrsmjy2s7qe9j3kz2b0xx_other0000000000000000000"
CUSTOMER = "ctm_01hv8wt8nffez4p2t6tgt0bqaw"
IDENTITY = IdentityRef("paddle", CUSTOMER)
EMAIL = "ada@example.com"
EVENT_TYPES = sorted(p.stem for p in (FIXTURES / "paddle").glob("*.json"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def delivery(payload: dict[str, Any], secret: str = SECRET, timestamp: int | None = None) -> InboundRequest:
    body = dumps(payload)
    return InboundRequest(body, Headers(paddle_headers(body, secret, timestamp)))


def normalize(payload: dict[str, Any], known: bool = True, **options: Any) -> list[CustomerChange]:
    connector = registry().get("paddle")
    source = source_config("paddle", (SECRET,), **options)
    request = delivery(payload)
    connector.verify(request, source)
    [envelope] = connector.envelopes(request, source)
    return connector.normalize(envelope, OfflineContext(source, {IDENTITY: EMAIL} if known else {}))


class PaddleCase(WebhookCase):
    connector = "paddle"
    secret = SECRET
    other_secret = OTHER_SECRET

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("paddle/customer.created.json")
        payload["event_id"] = event_id
        payload["occurred_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        # One Paddle customer per delivery, so deliveries in one test never touch the same person.
        payload["data"]["id"] = "ctm_" + event_id.removeprefix("evt_").lower()
        payload["data"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("paddle/customer.created.json")
        payload.update(event_id=event_id, event_type="address.created")
        payload["occurred_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        payload["data"] = {
            "id": "add_01hv8wt8nwfm5g0fkb9hwb2nhk",
            "customer_id": CUSTOMER,
            "country_code": "GB",
        }
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return paddle_headers(body, secret, timestamp)

    def malformed_bodies(self) -> list[bytes]:
        good = fixture("paddle/customer.created.json")
        return [
            *super().malformed_bodies(),
            dumps({**good, "event_id": None}),
            dumps({**good, "event_type": ""}),
            dumps({**good, "occurred_at": "yesterday"}),
            dumps({**good, "occurred_at": "2999-01-01T00:00:00Z"}),
            dumps({**good, "data": None}),
            dumps({**good, "event_id": "evt_" + "x" * 300}),
        ]


class TestPaddleContract(ConnectorContract):
    case = PaddleCase()


# -- every event type, offline ------------------------------------------------------------------------

PERIOD_END = "2026-02-15T00:01:03Z"
SINGLE = {
    "plan": "Pro monthly",
    "mrr": 4900,
    "currency": "usd",
    "interval": "month",
    "subscription_status": "active",
    "current_period_end": PERIOD_END,
    "cancel_at_period_end": False,
}
TRIAL = {**SINGLE, "mrr": 0, "subscription_status": "trialing", "current_period_end": "2026-01-15T00:01:00Z"}
# Three seats of $49 a month and a $120 a year add-on: 14700 + 1000.
UPGRADED = {**SINGLE, "mrr": 3 * 4900 + 12000 // 12}

EXPECTED: dict[str, list[CustomerChange]] = {
    "customer.created": [
        CustomerChange(
            at("2026-01-01T00:00:00.412931Z"), EMAIL, IDENTITY, name="Ada Lovelace", email_change=True
        )
    ],
    "customer.updated": [
        CustomerChange(at("2026-01-02T10:00:00Z"), EMAIL, IDENTITY, name="Ada King", email_change=True)
    ],
    "subscription.created": [
        CustomerChange(at("2026-01-01T00:01:00Z"), None, IDENTITY, status="trial", params=TRIAL)
    ],
    "subscription.trialing": [
        CustomerChange(at("2026-01-01T00:01:00Z"), None, IDENTITY, status="trial", params=TRIAL)
    ],
    "subscription.activated": [
        CustomerChange(at("2026-01-15T00:01:03Z"), None, IDENTITY, status="paid", params=SINGLE)
    ],
    "subscription.updated": [
        CustomerChange(at("2026-01-20T09:30:00Z"), None, IDENTITY, status="paid", params=UPGRADED)
    ],
    "subscription.paused": [
        CustomerChange(
            at("2026-01-25T08:00:00Z"),
            None,
            IDENTITY,
            status="free",
            params={**UPGRADED, "mrr": 0, "subscription_status": "paused"},
        )
    ],
    "subscription.resumed": [
        CustomerChange(
            at("2026-01-27T08:00:00Z"),
            None,
            IDENTITY,
            status="paid",
            params={**UPGRADED, "current_period_end": "2026-02-27T08:00:00Z"},
        )
    ],
    "subscription.past_due": [
        CustomerChange(
            at("2026-02-15T00:01:07Z"),
            None,
            IDENTITY,
            status="past_due",
            params={
                **UPGRADED,
                "subscription_status": "past_due",
                "current_period_end": "2026-03-15T00:01:03Z",
            },
        )
    ],
    "subscription.canceled": [
        CustomerChange(
            at("2026-03-01T12:00:00Z"),
            None,
            IDENTITY,
            status="churned",
            params={
                **UPGRADED,
                "mrr": 0,
                "subscription_status": "canceled",
                "current_period_end": "2026-03-15T00:01:03Z",
            },
        )
    ],
    "transaction.completed": [
        CustomerChange(
            at("2026-01-15T00:01:03Z"), None, IDENTITY, params={"last_payment_at": "2026-01-15T00:01:02Z"}
        )
    ],
    "transaction.payment_failed": [
        CustomerChange(
            at("2026-02-15T00:01:07Z"),
            None,
            IDENTITY,
            params={"last_payment_failed_at": "2026-02-15T00:01:07Z"},
        )
    ],
}


def test_every_fixture_has_an_expectation_and_every_tracked_type_a_fixture() -> None:
    assert sorted(EXPECTED) == EVENT_TYPES == sorted(registry().get("paddle").event_types)


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_event_type_maps_to_changes(event_type: str) -> None:
    assert normalize(fixture(f"paddle/{event_type}.json")) == EXPECTED[event_type]


def test_subscription_events_without_a_known_customer_carry_only_the_identity() -> None:
    [change] = normalize(fixture("paddle/subscription.activated.json"), known=False)
    assert change.email is None and change.identity == IDENTITY and change.status == "paid"


def test_status_mapping_is_overridable_per_source() -> None:
    [change] = normalize(fixture("paddle/subscription.past_due.json"), **{"status.past_due": "paid"})
    assert change.status == "paid"
    with pytest.raises(InvalidOptions, match="not a subscription status"):
        registry().get("paddle").validate_options({"status.unknown": "paid"})
    with pytest.raises(InvalidOptions, match="unknown option"):
        registry().get("paddle").validate_options({"api_key": "x"})


def test_customers_without_an_email_and_unknown_types_are_ignored_with_the_reason() -> None:
    payload = fixture("paddle/customer.created.json")
    payload["data"]["email"] = None
    with pytest.raises(EventIgnored, match="no email"):
        normalize(payload)
    payload = fixture("paddle/transaction.completed.json")
    payload["data"]["customer_id"] = None
    with pytest.raises(EventIgnored, match="no ctm_ customer"):
        normalize(payload)


# -- the signature ---------------------------------------------------------------------------------------


def test_any_h1_of_a_rotation_header_verifies_and_the_timestamp_is_signed() -> None:
    connector = registry().get("paddle")
    source = source_config("paddle", (SECRET,))
    body = dumps(fixture("paddle/customer.created.json"))
    ts = int(time.time())
    good = hmac.new(SECRET.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    other = hmac.new(OTHER_SECRET.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    connector.verify(
        InboundRequest(body, Headers({"Paddle-Signature": f"ts={ts};h1={other};h1={good}"})), source
    )
    # The same signature with another timestamp: the timestamp is part of what is signed.
    with pytest.raises(VerificationFailed):
        connector.verify(
            InboundRequest(body, Headers({"Paddle-Signature": f"ts={ts - 1};h1={good}"})), source
        )
    for header in ("", "ts=abc;h1=00", f"ts={ts}", f"h1={good}", f"ts={ts};h1=zz"):
        with pytest.raises(VerificationFailed):
            connector.verify(InboundRequest(body, Headers({"Paddle-Signature": header})), source)


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamps_outside_300_seconds_are_rejected(skew: int) -> None:
    connector = registry().get("paddle")
    request = delivery(fixture("paddle/customer.created.json"), timestamp=int(time.time()) + skew)
    with pytest.raises(VerificationFailed, match="tolerance 300"):
        connector.verify(request, source_config("paddle", (SECRET,)))


def test_envelope_is_the_event_id_type_and_time() -> None:
    request = delivery(fixture("paddle/subscription.created.json"))
    [envelope] = registry().get("paddle").envelopes(request, source_config("paddle", (SECRET,)))
    assert (envelope.event_id, envelope.type, envelope.occurred_at) == (
        "evt_01hv8x2acma2gz1a2kaf0j3xd8",
        "subscription.created",
        at("2026-01-01T00:01:00Z"),
    )
    with pytest.raises(MalformedPayload):
        registry().get("paddle").envelopes(InboundRequest(b'{"event_id": "evt_1"}'), source_config("paddle"))


# -- through the endpoint and the worker ------------------------------------------------------------------


def post(client: FlaskClient, source_id: str, payload: dict[str, Any]) -> Any:
    body = dumps(payload)
    headers = {**paddle_headers(body, SECRET), "Content-Type": "application/json"}
    return client.post(f"/webhooks/{source_id}", data=body, headers=headers)


def test_a_subscription_before_its_customer_waits_then_applies(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = make_source(runtime, "paddle", [SECRET])
    assert post(client, source_id, fixture("paddle/subscription.activated.json")).status_code == 200
    drain()
    assert client.get(f"/v1/customers/{EMAIL}", headers=admin).status_code == 404
    assert post(client, source_id, fixture("paddle/customer.created.json")).status_code == 200
    drain()
    record = client.get(f"/v1/customers/{EMAIL}", headers=admin).get_json()
    assert record["projects"]["default"]["status"] == "paid"
    assert record["projects"]["default"]["params"]["mrr"] == 4900
    assert record["identities"] == [{"source": "paddle", "external_id": CUSTOMER}]
    assert record["name"] == "Ada Lovelace"
