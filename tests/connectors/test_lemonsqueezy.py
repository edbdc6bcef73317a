"""Lemon Squeezy: the contract suite, every tracked event from realistic fixtures, `X-Signature`
verification, the derived event id, price options and bad input."""

from __future__ import annotations

import hashlib
import hmac
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
from tributary.connectors.lemonsqueezy import derived_event_id
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, lemonsqueezy_headers
from tributary.runtime.process import Runtime

SECRET = "lsq_whsec_7Hq2Lm9Xv4Tz"
OTHER_SECRET = "lsq_whsec_other_0000"
IDENTITY = IdentityRef("lemonsqueezy", "1984312")
EMAIL = "ada@example.com"
OPTIONS = {"price.84211": "900/month", "currency": "USD"}
EVENT_TYPES = sorted(p.stem for p in (FIXTURES / "lemonsqueezy").glob("*.json"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def delivery(payload: dict[str, Any], secret: str = SECRET) -> InboundRequest:
    body = dumps(payload)
    return InboundRequest(body, Headers(lemonsqueezy_headers(body, secret, payload["meta"]["event_name"])))


def normalize(payload: dict[str, Any], **options: Any) -> list[CustomerChange]:
    connector = registry().get("lemonsqueezy")
    source = source_config("lemonsqueezy", (SECRET,), **options)
    request = delivery(payload)
    connector.verify(request, source)
    [envelope] = connector.envelopes(request, source)
    return connector.normalize(envelope, OfflineContext(source))


class LemonSqueezyCase(WebhookCase):
    connector = "lemonsqueezy"
    secret = SECRET
    other_secret = OTHER_SECRET
    options = OPTIONS
    # Lemon Squeezy signs no timestamp: a replayed body is a duplicate of its stored event instead.
    signed_timestamps = False

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("lemonsqueezy/order_created.json")
        attributes = payload["data"]["attributes"]
        attributes["updated_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        # One customer per delivery (the event id is derived from the content, so it differs too).
        attributes["customer_id"] = int(hashlib.sha256(event_id.encode()).hexdigest()[:12], 16)
        attributes["user_email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("lemonsqueezy/order_created.json")
        payload["meta"]["event_name"] = "license_key_created"
        payload["data"]["type"] = "license-keys"
        payload["data"]["attributes"]["updated_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return lemonsqueezy_headers(body, secret)

    def malformed_bodies(self) -> list[bytes]:
        good = fixture("lemonsqueezy/order_created.json")
        no_time = fixture("lemonsqueezy/order_created.json")
        no_time["data"]["attributes"].update(updated_at=None, created_at=None)
        return [
            *super().malformed_bodies(),
            dumps({**good, "meta": {}}),
            dumps({**good, "data": {"type": "orders", "id": "1"}}),
            dumps(no_time),
        ]


class TestLemonSqueezyContract(ConnectorContract):
    case = LemonSqueezyCase()


# -- every event type, offline ------------------------------------------------------------------------

ACTIVE = {
    "plan": "Pro monthly",
    "mrr": 3 * 900,
    "interval": "month",
    "currency": "usd",
    "subscription_status": "active",
    "current_period_end": "2026-02-15T00:00:05Z",
    "cancel_at_period_end": False,
}
TRIAL = {**ACTIVE, "mrr": 0, "subscription_status": "on_trial", "current_period_end": "2026-01-15T00:00:02Z"}


def person(when: str, **fields: Any) -> CustomerChange:
    return CustomerChange(at(when), EMAIL, IDENTITY, email_change=True, **fields)


EXPECTED: dict[str, list[CustomerChange]] = {
    "order_created": [
        person(
            "2026-01-01T00:00:01Z",
            name="Ada Lovelace",
            params={"last_payment_at": "2026-01-01T00:00:00Z", "currency": "usd"},
        )
    ],
    "order_refunded": [
        person(
            "2026-01-03T12:00:00Z",
            name="Ada Lovelace",
            params={"last_refund_at": "2026-01-03T12:00:00Z", "currency": "usd"},
        )
    ],
    "subscription_created": [
        person("2026-01-01T00:00:02Z", name="Ada Lovelace", status="trial", params=TRIAL)
    ],
    "subscription_updated": [
        person("2026-01-15T00:00:05Z", name="Ada Lovelace", status="paid", params=ACTIVE)
    ],
    "subscription_paused": [
        person(
            "2026-01-20T10:00:00Z",
            name="Ada Lovelace",
            status="free",
            params={**ACTIVE, "mrr": 0, "subscription_status": "paused"},
        )
    ],
    "subscription_unpaused": [
        person("2026-01-25T10:00:00Z", name="Ada Lovelace", status="paid", params=ACTIVE)
    ],
    "subscription_cancelled": [
        person(
            "2026-02-20T16:30:00Z",
            name="Ada Lovelace",
            status="paid",
            params={
                **ACTIVE,
                "subscription_status": "cancelled",
                "current_period_end": "2026-03-15T00:00:05Z",
                "cancel_at_period_end": True,
            },
        )
    ],
    "subscription_resumed": [
        person(
            "2026-02-22T09:00:00Z",
            name="Ada Lovelace",
            status="paid",
            params={**ACTIVE, "current_period_end": "2026-03-15T00:00:05Z"},
        )
    ],
    "subscription_expired": [
        person(
            "2026-04-15T00:00:05Z",
            name="Ada Lovelace",
            status="churned",
            params={
                **ACTIVE,
                "mrr": 0,
                "subscription_status": "expired",
                "current_period_end": "2026-04-15T00:00:05Z",
                "cancel_at_period_end": True,
            },
        )
    ],
    "subscription_payment_success": [
        person("2026-01-15T00:00:05Z", params={"last_payment_at": "2026-01-15T00:00:05Z", "currency": "usd"})
    ],
    "subscription_payment_recovered": [
        person("2026-02-18T00:00:09Z", params={"last_payment_at": "2026-02-18T00:00:09Z", "currency": "usd"})
    ],
    "subscription_payment_failed": [
        person(
            "2026-02-15T00:00:09Z",
            params={"last_payment_failed_at": "2026-02-15T00:00:09Z", "currency": "usd"},
        )
    ],
}


def test_every_fixture_has_an_expectation_and_every_tracked_type_a_fixture() -> None:
    assert sorted(EXPECTED) == EVENT_TYPES == sorted(registry().get("lemonsqueezy").event_types)


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_event_type_maps_to_changes(event_type: str) -> None:
    assert normalize(fixture(f"lemonsqueezy/{event_type}.json"), **OPTIONS) == EXPECTED[event_type]


def test_without_a_price_option_mrr_is_written_only_when_it_is_zero() -> None:
    [active] = normalize(fixture("lemonsqueezy/subscription_updated.json"))
    assert "mrr" not in active.params and "interval" not in active.params
    [paused] = normalize(fixture("lemonsqueezy/subscription_paused.json"))
    assert paused.params["mrr"] == 0


def test_yearly_prices_are_monthly_in_mrr_and_statuses_are_overridable() -> None:
    [change] = normalize(
        fixture("lemonsqueezy/subscription_updated.json"),
        **{"price.84211": "9000/year", "status.active": "pro"},
    )
    assert (change.status, change.params["mrr"], change.params["interval"]) == ("pro", 3 * 750, "year")


@pytest.mark.parametrize(
    "options",
    [
        {"price.abc": "900/month"},
        {"price.1": "nine/month"},
        {"price.1": "900/fortnight"},
        {"currency": "dollars"},
        {"test_mode": "maybe"},
        {"status.gone": "paid"},
        {"api_key": "x"},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptions):
        registry().get("lemonsqueezy").validate_options(options)


def test_events_of_the_other_mode_are_ignored_when_test_mode_is_set() -> None:
    with pytest.raises(EventIgnored, match="test-mode event"):
        normalize(fixture("lemonsqueezy/order_created.json"), test_mode="false")
    assert normalize(fixture("lemonsqueezy/order_created.json"), test_mode="true")


def test_the_derived_event_id_is_stable_per_event_and_distinct_across_events() -> None:
    first = fixture("lemonsqueezy/subscription_updated.json")
    again = fixture("lemonsqueezy/subscription_updated.json")
    # A redelivery re-signs expiring URLs: what identifies the event is unchanged.
    again["data"]["attributes"]["urls"]["customer_portal"] += "&again=1"
    ids = {derived_event_id(p["meta"]["event_name"], p["data"]) for p in (first, again)}
    assert len(ids) == 1 and next(iter(ids)).startswith("ls_")
    payment = fixture("lemonsqueezy/subscription_payment_success.json")
    assert derived_event_id("subscription_payment_success", payment["data"]) not in ids


def test_signature_is_the_hex_hmac_of_the_raw_body() -> None:
    connector = registry().get("lemonsqueezy")
    source = source_config("lemonsqueezy", (SECRET,))
    body = dumps(fixture("lemonsqueezy/order_created.json"))
    good = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    connector.verify(InboundRequest(body, Headers({"X-Signature": good})), source)
    connector.verify(InboundRequest(body, Headers({"X-Signature": good.upper()})), source)
    for header in ("", "zz", good[:-2], "00" * 32):
        with pytest.raises(VerificationFailed):
            connector.verify(InboundRequest(body, Headers({"X-Signature": header})), source)
    with pytest.raises(VerificationFailed):
        connector.verify(InboundRequest(body + b" ", Headers({"X-Signature": good})), source)
    with pytest.raises(MalformedPayload):
        connector.envelopes(InboundRequest(b'{"meta": {"event_name": "order_created"}}'), source)


# -- through the endpoint and the worker ------------------------------------------------------------------


def test_a_redelivery_is_a_duplicate_and_a_payment_sets_the_params(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = make_source(runtime, "lemonsqueezy", [SECRET], **OPTIONS)
    request = delivery(fixture("lemonsqueezy/subscription_updated.json"))
    headers = {**request.headers, "Content-Type": "application/json"}
    first = client.post(f"/webhooks/{source_id}", data=request.body, headers=headers)
    again = client.post(f"/webhooks/{source_id}", data=request.body, headers=headers)
    assert (first.get_json(), again.get_json()) == (
        {"received": 1, "duplicates": 0},
        {"received": 0, "duplicates": 1},
    )
    drain()
    record = client.get(f"/v1/customers/{EMAIL}", headers=admin).get_json()
    assert record["projects"]["default"]["status"] == "paid"
    assert record["projects"]["default"]["params"]["mrr"] == 2700
    assert record["identities"] == [{"source": "lemonsqueezy", "external_id": "1984312"}]
