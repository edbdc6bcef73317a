"""The Stripe connector: mapping of every event type, verification, email resolution, ordering,
duplicates and bad input, through the real endpoint and worker where it matters."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient

from tests.connectors.stripe_helpers import (
    API_KEY,
    CUSTOMER_ID,
    EMAIL,
    EVENT_TYPES,
    FIXTURES,
    OTHER_SECRET,
    SECRET,
    create_source,
    event,
    event_by_provider_id,
    events,
    load,
    post,
)
from tests.helpers import customer
from tributary.connectors.base import (
    EventIgnored,
    Headers,
    InboundRequest,
    InvalidOptions,
    OfflineContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.stripe import StripeConnector
from tributary.connectors.stripe_mapping import monthly_amount, plan_name, subscription_params
from tributary.connectors.testkit import ConnectorContract, WebhookCase, stripe_headers
from tributary.runtime.process import Runtime

T0 = 1767225600  # the fixtures' 2026-01-01T00:00:00Z
ACTIVE_START = T0 + 14 * 86400 + 300
IDENTITY = IdentityRef("stripe", CUSTOMER_ID)


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def stripe_connector() -> StripeConnector:
    connector = registry().get("stripe")
    assert isinstance(connector, StripeConnector)
    return connector


def normalize(payload: dict[str, Any], *, known: bool = True, **options: Any) -> list[CustomerChange]:
    connector = stripe_connector()
    source = SourceConfig("src_x", "stripe", "default", (SECRET,), connector.validate_options(options))
    raw = json.dumps(payload).encode()
    request = InboundRequest(raw, Headers(stripe_headers(raw, SECRET)))
    connector.verify(request, source)
    [envelope] = connector.envelopes(request, source)
    return connector.normalize(envelope, OfflineContext(source, {IDENTITY: EMAIL} if known else {}))


# -- the contract ------------------------------------------------------------------------------------


class StripeCase(WebhookCase):
    connector = "stripe"
    secret = SECRET
    other_secret = OTHER_SECRET

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        return json.dumps(event("customer.created", event_id=event_id, created=timestamp)).encode()

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        charge = {"id": "ch_3SRa", "object": "charge", "amount": 4900, "customer": CUSTOMER_ID}
        payload = {
            **load("customer.created"),
            "id": event_id,
            "created": timestamp,
            "type": "charge.captured",
        }
        payload["data"] = {"object": charge}
        return json.dumps(payload).encode()

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return stripe_headers(body, secret, timestamp)

    def malformed_bodies(self) -> list[bytes]:
        good = load("customer.created")
        return [
            *super().malformed_bodies(),
            json.dumps({**good, "id": None}).encode(),
            json.dumps({**good, "type": ""}).encode(),
            json.dumps({**good, "created": "yesterday"}).encode(),
            json.dumps({**good, "created": 10**20}).encode(),
            json.dumps({**good, "data": {"object": None}}).encode(),
            json.dumps(good).replace('"balance": 0', '"balance": NaN').encode(),
            b"[" * 100_000,
        ]


class TestStripeContract(ConnectorContract):
    case = StripeCase()


# -- every event type, offline ------------------------------------------------------------------------

ACTIVE_PARAMS = {
    "plan": "pro_monthly",
    "mrr": 3 * 4900 + 12000 // 12,
    "currency": "usd",
    "interval": "month",
    "subscription_status": "active",
    "current_period_end": iso(ACTIVE_START + 365 * 86400),
    "cancel_at_period_end": False,
}
TRIAL_PARAMS = {
    **ACTIVE_PARAMS,
    "mrr": 0,
    "subscription_status": "trialing",
    "current_period_end": iso(ACTIVE_START),
}

EXPECTED: dict[str, list[CustomerChange]] = {
    "customer.created": [CustomerChange(at(T0), EMAIL, IDENTITY, name="Ada Lovelace")],
    "customer.updated": [CustomerChange(at(T0 + 2 * 86400), EMAIL, IDENTITY, name="Ada King")],
    "customer.deleted": [CustomerChange(at(T0 + 90 * 86400), identity=IDENTITY, forget_identity=True)],
    "checkout.session.completed": [
        CustomerChange(at(T0 + 310), "Ada@Example.com", IDENTITY, name="Ada Lovelace", activity=True)
    ],
    "customer.subscription.created": [
        CustomerChange(at(T0 + 300), None, IDENTITY, status="trial", params=TRIAL_PARAMS)
    ],
    "customer.subscription.trial_will_end": [
        CustomerChange(at(T0 + 11 * 86400 + 300), None, IDENTITY, status="trial", params=TRIAL_PARAMS)
    ],
    "customer.subscription.updated": [
        CustomerChange(at(ACTIVE_START + 5), None, IDENTITY, status="paid", params=ACTIVE_PARAMS)
    ],
    "customer.subscription.paused": [
        CustomerChange(
            at(ACTIVE_START + 2),
            None,
            IDENTITY,
            status="free",
            params={**TRIAL_PARAMS, "subscription_status": "paused"},
        )
    ],
    "customer.subscription.resumed": [
        CustomerChange(at(ACTIVE_START + 3 * 86400), None, IDENTITY, status="paid", params=ACTIVE_PARAMS)
    ],
    "customer.subscription.deleted": [
        CustomerChange(
            at(T0 + 60 * 86400),
            None,
            IDENTITY,
            status="churned",
            params={**ACTIVE_PARAMS, "mrr": 0, "subscription_status": "canceled"},
        )
    ],
    # The invoice's customer_name (Stripe copies the customer's name when it finalizes the invoice)
    # is written too: it names customers whose customer object never had a name (defect 3).
    "invoice.paid": [
        CustomerChange(
            at(ACTIVE_START + 4),
            EMAIL,
            IDENTITY,
            name="Ada King",
            params={"last_payment_at": iso(ACTIVE_START + 3)},
        )
    ],
    "invoice.payment_failed": [
        CustomerChange(
            at(ACTIVE_START + 31 * 86400 + 60),
            EMAIL,
            IDENTITY,
            name="Ada King",
            params={"last_payment_failed_at": iso(ACTIVE_START + 31 * 86400 + 60)},
        )
    ],
    "invoice.payment_action_required": [
        CustomerChange(
            at(ACTIVE_START + 31 * 86400 + 30),
            EMAIL,
            IDENTITY,
            name="Ada King",
            params={"last_payment_action_required_at": iso(ACTIVE_START + 31 * 86400 + 30)},
        )
    ],
    "charge.refunded": [
        CustomerChange(
            at(ACTIVE_START + 20 * 86400),
            EMAIL,
            IDENTITY,
            params={"last_refund_at": iso(ACTIVE_START + 20 * 86400), "refunded_amount": 4900},
        )
    ],
    # Opened: the dispute carries only the charge id; the test's api_key lookup is below.
    "charge.dispute.closed": [
        CustomerChange(at(ACTIVE_START + 70 * 86400), EMAIL, params={"dispute_status": "won"})
    ],
    "customer.discount.created": [
        CustomerChange(
            at(ACTIVE_START + 10),
            None,
            IDENTITY,
            params={
                "discount": "Launch 20%",
                "discount_percent_off": 20,
                "discount_end": iso(ACTIVE_START + 10 + 92 * 86400),
            },
            params_unset=("discount_amount_off",),
        )
    ],
    "customer.discount.deleted": [
        CustomerChange(
            at(ACTIVE_START + 10 + 92 * 86400),
            None,
            IDENTITY,
            params_unset=("discount", "discount_percent_off", "discount_amount_off", "discount_end"),
        )
    ],
}
UNTESTED_OFFLINE = {"charge.dispute.created"}


def test_every_fixture_has_an_expectation_and_every_tracked_type_a_fixture() -> None:
    assert sorted({*EXPECTED, *UNTESTED_OFFLINE}) == EVENT_TYPES == sorted(StripeConnector.event_types)


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_event_type_maps_to_changes(event_type: str) -> None:
    payload = load(event_type)
    # Checkout's email is as the customer typed it; the worker lower-cases emails centrally.
    assert normalize(payload) == EXPECTED[event_type]


def test_checkout_falls_back_to_customer_email_and_payment_mode_without_customer() -> None:
    payload = event(
        "checkout.session.completed", customer=None, customer_details=None, customer_email="b@x.io"
    )
    [change] = normalize(payload)
    assert (change.email, change.identity, change.activity) == ("b@x.io", None, True)
    nobody = event("checkout.session.completed", customer=None, customer_details=None, customer_email=None)
    with pytest.raises(EventIgnored, match="neither an email nor a customer"):
        normalize(nobody)


def test_customer_without_email_is_ignored_and_email_change_is_flagged() -> None:
    with pytest.raises(EventIgnored, match="has no email"):
        normalize(event("customer.created", email=None))
    changed = load("customer.updated")
    changed["data"]["object"]["email"] = "ada.king@example.com"
    changed["data"]["previous_attributes"]["email"] = "ada@example.com"
    [change] = normalize(changed)
    assert change.email_change and change.email == "ada.king@example.com" and change.identity == IDENTITY
    # An email added where there was none is no change of address.
    added = load("customer.updated")
    added["data"]["previous_attributes"]["email"] = None
    assert not normalize(added)[0].email_change


def test_deletion_names_only_the_identity_even_when_it_is_not_known_yet() -> None:
    # Dropping it would let a deletion that overtook the customer's creation be lost.
    assert normalize(load("customer.deleted"), known=False) == EXPECTED["customer.deleted"]
    with pytest.raises(EventIgnored, match="no cus_ id"):
        normalize(event("customer.deleted", id=None))


def test_subscription_without_known_email_names_only_the_identity() -> None:
    [change] = normalize(load("customer.subscription.updated"), known=False)
    assert change.email is None and change.identity == IDENTITY and change.status == "paid"


def test_expanded_customer_object_gives_the_email() -> None:
    payload = event("customer.subscription.updated", customer={"id": CUSTOMER_ID, "email": "exp@example.com"})
    [change] = normalize(payload, known=False)
    assert (change.email, change.identity) == ("exp@example.com", IDENTITY)


def test_status_mapping_is_overridable_per_source() -> None:
    past_due = event("customer.subscription.updated", status="past_due")
    assert normalize(past_due)[0].status == "past_due"
    assert normalize(past_due, **{"status.past_due": "paid"})[0].status == "paid"
    for stripe_status, expected in [
        ("unpaid", "past_due"),
        ("incomplete", "free"),
        ("incomplete_expired", "free"),
    ]:
        assert normalize(event("customer.subscription.updated", status=stripe_status))[0].status == expected
    future_status = normalize(event("customer.subscription.updated", status="frozen"))[0]
    assert future_status.status is None and future_status.params["subscription_status"] == "frozen"


def test_livemode_mismatch_is_ignored_with_the_reason() -> None:
    with pytest.raises(EventIgnored, match="test-mode event on a source configured with livemode=true"):
        normalize(load("customer.created"), livemode="true")
    assert normalize(load("customer.created"), livemode="false")


def test_unknown_and_thin_events_are_ignored() -> None:
    thin = {
        "id": "evt_test_65R9",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2026-01-05T10:00:00.000Z",
        "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"},
    }
    with pytest.raises(EventIgnored, match="not tracked"):
        normalize(thin)


# -- mapping helpers ----------------------------------------------------------------------------------


def _item(unit_amount: Any, interval: str, count: int = 1, quantity: Any = 1, **price: Any) -> dict[str, Any]:
    recurring = {
        "interval": interval,
        "interval_count": count,
        "usage_type": price.pop("usage_type", "licensed"),
    }
    return {
        "quantity": quantity,
        "price": {"id": "price_1", "unit_amount": unit_amount, "recurring": recurring, **price},
    }


@pytest.mark.parametrize(
    ("item", "monthly"),
    [
        (_item(1000, "month"), 1000),
        (_item(1000, "month", quantity=3), 3000),
        (_item(1000, "month", count=3), 1000 / 3),
        (_item(12000, "year"), 1000),
        (_item(12000, "year", count=2), 500),
        (_item(100, "week"), 100 * 52 / 12),
        (_item(10, "day"), 10 * 365 / 12),
        (_item(None, "month", unit_amount_decimal="1234.5"), 1234.5),
        (_item(None, "month"), 0),  # tiered: unknowable
        (_item(1000, "month", usage_type="metered"), 0),
        (_item(1000, "month", quantity=0), 0),
        (
            {
                "quantity": 2,
                "plan": {"id": "plan_1", "amount": 700, "interval": "month", "interval_count": 1},
            },
            1400,
        ),
        ({"quantity": 1}, 0),
    ],
)
def test_monthly_amount(item: dict[str, Any], monthly: float) -> None:
    assert float(monthly_amount(item)) == pytest.approx(monthly)


def test_plan_name_precedence() -> None:
    price: dict[str, Any] = {
        "id": "price_9",
        "lookup_key": "pro",
        "nickname": "Pro",
        "product": {"name": "Pro plan"},
    }
    assert plan_name(price) == "pro"
    assert plan_name({**price, "lookup_key": None}) == "Pro"
    assert plan_name({**price, "lookup_key": None, "nickname": " "}) == "Pro plan"
    assert plan_name({**price, "lookup_key": None, "nickname": None, "product": "prod_1"}) == "price_9"


def test_subscription_params_round_mrr_and_read_old_shapes() -> None:
    subscription = {
        "status": "active",
        "currency": "EUR",
        "cancel_at_period_end": True,
        "current_period_end": T0,  # before 2025-03-31 the period lived on the subscription
        "items": {"data": [_item(1000, "month", count=3)]},
    }
    assert subscription_params(subscription) == {
        "plan": "price_1",
        "mrr": 333,
        "currency": "eur",
        "interval": "month",
        "subscription_status": "active",
        "current_period_end": iso(T0),
        "cancel_at_period_end": True,
    }
    assert (
        subscription_params({"status": "active", "items": {"data": [_item(1, "month", quantity=1)]}})["mrr"]
        == 1
    )
    assert subscription_params({"items": "garbage"}) == {"mrr": 0}


# -- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"api_key": "pk_test_123456789"}, "secret or restricted key"),
        ({"api_key": 42}, "secret or restricted key"),
        ({"livemode": "maybe"}, "livemode must be true or false"),
        ({"status.trialing": "Paid Plan"}, "status slug"),
        ({"status.frozen": "paid"}, "not a subscription status"),
        ({"webhook_secret": "x"}, "unknown option 'webhook_secret'"),
        (
            {"api_key": "sk_live_51SRZwvLkdIwHu7ixLive00", "livemode": "false"},
            "live key but livemode is False",
        ),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        stripe_connector().validate_options(options)


def test_options_are_normalized_idempotently() -> None:
    connector = stripe_connector()
    cleaned = connector.validate_options(
        {"api_key": f" {API_KEY} ", "livemode": "No", "status.past_due": "paid"}
    )
    assert cleaned == {"api_key": API_KEY, "livemode": False, "status.past_due": "paid"}
    assert connector.validate_options(cleaned) == cleaned


def test_invalid_options_are_a_400_with_the_reason(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/v1/sources", json={"connector": "stripe", "options": {"livemode": "maybe"}}, headers=admin
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_options",
        "message": "livemode must be true or false, got 'maybe'",
    }


# -- verification -------------------------------------------------------------------------------------


def _verify(raw: bytes, header: str | None, secrets: tuple[str, ...] = (SECRET,)) -> None:
    headers = Headers({"Stripe-Signature": header} if header is not None else {})
    stripe_connector().verify(
        InboundRequest(raw, headers), SourceConfig("src_x", "stripe", "default", secrets)
    )


def test_verification_accepts_either_secret_and_rejects_the_rest() -> None:
    raw = json.dumps(load("customer.created")).encode()
    now = int(time.time())
    header = stripe_headers(raw, SECRET, now)["Stripe-Signature"]
    _verify(raw, header)
    _verify(raw, header, (OTHER_SECRET, SECRET))
    # Stripe lists several v1 signatures while the endpoint's own secret is being rolled.
    rolled = header + ",v1=" + "0" * 64
    _verify(raw, rolled)
    cases: list[tuple[bytes, str | None, tuple[str, ...], str]] = [
        (raw, None, (SECRET,), "missing Stripe-Signature"),
        (raw, "", (SECRET,), "missing Stripe-Signature"),
        (raw, header, (), "no signing secret"),
        (raw, header, (OTHER_SECRET,), "No signatures found matching"),
        (raw + b" ", header, (SECRET,), "No signatures found matching"),
        (raw, "t=abc,v1=00", (SECRET,), "no timestamp"),
        (raw, f"t={now}", (SECRET,), "No signatures found with expected scheme"),
        (b"\xff" + raw, header, (SECRET,), "not UTF-8"),
        (raw, stripe_headers(raw, SECRET, now - 301)["Stripe-Signature"], (SECRET,), "tolerance"),
        (raw, stripe_headers(raw, SECRET, now + 301)["Stripe-Signature"], (SECRET,), "in the future"),
    ]
    for body, value, secrets, message in cases:
        with pytest.raises(VerificationFailed, match=message):
            _verify(body, value, secrets)


# -- through the endpoint and the worker ------------------------------------------------------------


def test_full_fixture_sequence_builds_the_record(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    order = [
        "customer.created",
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.trial_will_end",
        "customer.updated",
        "customer.subscription.paused",
        "invoice.paid",
        "customer.subscription.updated",
        "customer.subscription.resumed",
        "invoice.payment_failed",
        "customer.subscription.deleted",
        "customer.deleted",
    ]
    for event_type in order:
        response = post(client, source_id, load(event_type))
        assert response.get_json() == {"received": 1, "duplicates": 0}, event_type
        drain()
    statuses = {e.type: (e.status, e.last_error) for e in events(runtime)}
    assert statuses == {t: ("processed", None) for t in order}
    [stored] = [e for e in events(runtime) if e.type == "invoice.paid"]
    assert stored.channel == "stripe" and stored.source_id == source_id and stored.email == EMAIL
    assert stored.payload == load("invoice.paid") and json.loads(stored.body) == load("invoice.paid")
    # The connector's stored_headers only: never the signature.
    assert set(stored.headers) == {"content-type", "user-agent"}
    assert stored.headers["content-type"] == "application/json"
    record = customer(client, admin["Authorization"].split()[1], EMAIL)
    assert record["name"] == "Ada King"
    assert record["identities"] == []  # customer.deleted dropped the link, the person stays
    project = record["projects"]["default"]
    assert project["status"] == "churned"
    assert project["params"] == {
        **ACTIVE_PARAMS,
        "mrr": 0,
        "subscription_status": "canceled",
        "last_payment_at": iso(ACTIVE_START + 3),
        "last_payment_failed_at": iso(ACTIVE_START + 31 * 86400 + 60),
    }
    assert record["last_activity_at"] == "2026-01-01T00:05:10.000000Z"  # the checkout


def test_late_older_update_does_not_undo_a_deletion(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    post(client, source_id, load("customer.created"))
    post(client, source_id, load("customer.subscription.deleted"))
    drain()
    post(client, source_id, load("customer.subscription.updated"))  # created earlier, delivered late
    drain()
    project = customer(client, admin["Authorization"].split()[1], EMAIL)["projects"]["default"]
    assert project["status"] == "churned" and project["params"]["subscription_status"] == "canceled"
    late = event_by_provider_id(runtime, load("customer.subscription.updated")["id"])
    assert late.status == "processed"
    assert late.changes is not None and late.changes[0]["stale"]["status"] == "paid"


def test_duplicate_delivery_is_acknowledged_and_applied_once(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    payload = load("customer.created")
    assert post(client, source_id, payload).get_json() == {"received": 1, "duplicates": 0}
    drain()
    # Stripe retries with a fresh signature timestamp; the event id is what deduplicates.
    again = post(client, source_id, payload, timestamp=int(time.time()) + 5)
    assert (again.status_code, again.get_json()) == (200, {"received": 0, "duplicates": 1})
    drain()
    [stored] = events(runtime)
    assert stored.attempts == 1 and stored.status == "processed"
    # The same provider id on another source is another event.
    other = create_source(client, admin)
    assert post(client, other, payload).get_json() == {"received": 1, "duplicates": 0}


def test_livemode_mismatch_is_stored_and_ignored(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin, livemode="true")
    assert post(client, source_id, load("customer.created")).status_code == 200
    drain()
    [stored] = events(runtime)
    assert stored.status == "ignored" and "livemode=true" in (stored.last_error or "")
    assert client.get(f"/v1/customers/{EMAIL}", headers=admin).status_code == 404


def test_subscription_resolves_through_the_identity_table_without_the_api(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], stripe_api: None
) -> None:
    source_id = create_source(client, admin, api_key=API_KEY)
    post(client, source_id, load("customer.created"))
    drain()
    with responses.RequestsMock():  # any call to Stripe's API would fail the event
        post(client, source_id, load("customer.subscription.created"))
        drain()
    assert {e.status for e in events(runtime)} == {"processed"}
    assert (
        customer(client, admin["Authorization"].split()[1], EMAIL)["projects"]["default"]["status"] == "trial"
    )


def test_subscription_before_the_customer_fetches_the_email_from_stripe(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], stripe_api: None
) -> None:
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        lookup = api.get(
            f"https://api.stripe.com/v1/customers/{CUSTOMER_ID}",
            json={
                "id": CUSTOMER_ID,
                "object": "customer",
                "email": "Ada@Example.com",
                "name": "Ada Lovelace",
            },
        )
        post(client, source_id, load("customer.subscription.updated"))
        drain()
        assert lookup.call_count == 1
        assert api.calls[0].request.headers["Authorization"] == f"Bearer {API_KEY}"
    [stored] = events(runtime)
    assert stored.status == "processed", stored.last_error
    record = customer(client, admin["Authorization"].split()[1], EMAIL)
    assert record["projects"]["default"]["status"] == "paid"
    assert record["identities"] == [{"source": "stripe", "external_id": CUSTOMER_ID}]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            {
                "status": 401,
                "json": {"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}},
            },
            "AuthenticationError: Invalid API Key provided",
        ),
        (
            {
                "status": 404,
                "json": {
                    "error": {
                        "message": "No such customer: 'cus_TQ8cZ3XbWm2kLp'",
                        "code": "resource_missing",
                        "type": "invalid_request_error",
                    }
                },
            },
            "InvalidRequestError: No such customer",
        ),
        ({"body": ConnectionError("connection refused")}, "APIConnectionError"),
    ],
)
def test_stripe_api_failures_fail_the_event_with_the_reason(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    answer: dict[str, Any],
    error: str,
) -> None:
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(f"https://api.stripe.com/v1/customers/{CUSTOMER_ID}", **answer)
        post(client, source_id, load("customer.subscription.updated"))
        drain()
    [stored] = events(runtime)
    assert stored.status == "failed"
    assert f"looking up stripe customer {CUSTOMER_ID} for its email failed" in (stored.last_error or "")
    assert error in (stored.last_error or "")


def test_unknown_customer_waits_deferred_and_is_applied_once_known(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], stripe_api: None
) -> None:
    # With an api_key, Stripe answers that the customer was deleted: no email anywhere.
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(
            f"https://api.stripe.com/v1/customers/{CUSTOMER_ID}",
            json={"id": CUSTOMER_ID, "object": "customer", "deleted": True},
        )
        post(client, source_id, load("customer.subscription.updated"))
        drain()
    [stored] = events(runtime)
    assert (stored.status, stored.awaiting) == ("deferred", f"stripe:{CUSTOMER_ID}")
    assert f"no customer is known for stripe id '{CUSTOMER_ID}' yet" in (stored.last_error or "")
    # Not a failure: nothing is in RQ's failed registry and no retry is scheduled.
    assert runtime.queue.failed_job_registry.count == 0
    assert runtime.queue.scheduled_job_registry.count == 0
    post(client, source_id, load("customer.created"))
    drain()
    assert event_by_provider_id(runtime, stored.provider_event_id or "").status == "processed"
    assert (
        customer(client, admin["Authorization"].split()[1], EMAIL)["projects"]["default"]["status"] == "paid"
    )


def test_without_api_key_unknown_customers_wait_for_an_event_with_the_email(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    post(client, source_id, load("customer.subscription.created"))
    drain()
    [waiting] = events(runtime)
    assert waiting.status == "deferred" and "carries no email" in (waiting.last_error or "")
    # An invoice carries the email and the customer id: it links the identity and wakes the event.
    post(client, source_id, load("invoice.paid"))
    drain()
    assert event_by_provider_id(runtime, waiting.provider_event_id or "").status == "processed"
    project = customer(client, admin["Authorization"].split()[1], EMAIL)["projects"]["default"]
    assert project["status"] == "trial"


def test_a_linking_event_earlier_in_the_same_batch_resolves_the_identity(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    post(client, source_id, load("customer.created"))
    post(client, source_id, load("customer.subscription.created"))
    drain()
    assert {e.status for e in events(runtime)} == {"processed"}


# -- bad input ------------------------------------------------------------------------------------------


def _signed(raw: bytes, **kwargs: Any) -> dict[str, str]:
    return {"Content-Type": "application/json", **stripe_headers(raw, SECRET, **kwargs)}


GOOD = json.dumps(load("customer.created")).encode()
BAD_DELIVERIES: list[tuple[str, bytes, Callable[[bytes], dict[str, str]], str]] = [
    ("no signature", GOOD, lambda raw: {"Content-Type": "application/json"}, "invalid_signature"),
    ("wrong secret", GOOD, lambda raw: stripe_headers(raw, OTHER_SECRET), "invalid_signature"),
    ("garbage header", GOOD, lambda raw: {"Stripe-Signature": "hello"}, "invalid_signature"),
    ("stale", GOOD, lambda raw: _signed(raw, timestamp=int(time.time()) - 400), "invalid_signature"),
    ("future", GOOD, lambda raw: _signed(raw, timestamp=int(time.time()) + 400), "invalid_signature"),
    ("tampered", GOOD.replace(b"Ada", b"Eve"), lambda raw: _signed(GOOD), "invalid_signature"),
    ("not utf-8", b"\xff\xfe" + GOOD, _signed, "invalid_signature"),
    ("not json", b"<xml/>", _signed, "malformed_body"),
    ("array", b"[]", _signed, "malformed_body"),
    ("no id", json.dumps({**load("customer.created"), "id": ""}).encode(), _signed, "malformed_body"),
    (
        "long id",
        json.dumps({**load("customer.created"), "id": "e" * 300}).encode(),
        _signed,
        "malformed_body",
    ),
    ("no data", json.dumps({**load("customer.created"), "data": []}).encode(), _signed, "malformed_body"),
    (
        "future event",
        json.dumps({**load("customer.created"), "created": int(time.time()) + 3600}).encode(),
        _signed,
        "timestamp_in_future",
    ),
    # Numbers JSON cannot carry (1e400 overflows a double); NUL in text is scrubbed instead, see
    # tests/connectors/test_hostile_payloads.py.
    *(
        (
            f"number {token}",
            GOOD.replace(b'"livemode": false', b'"livemode": ' + token),
            _signed,
            "malformed_body",
        )
        for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400")
    ),
]


@pytest.mark.parametrize(
    ("why", "raw", "headers", "code"), BAD_DELIVERIES, ids=[b[0] for b in BAD_DELIVERIES]
)
def test_bad_deliveries_are_refused_and_nothing_is_stored(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    why: str,
    raw: bytes,
    headers: Callable[[bytes], dict[str, str]],
    code: str,
) -> None:
    source_id = create_source(client, admin)
    response = client.post(f"/webhooks/{source_id}", data=raw, headers=headers(raw))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert events(runtime) == []


def test_oversize_unknown_and_deleted_sources(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    big = json.dumps({**load("customer.created"), "padding": "x" * (1024 * 1024)}).encode()
    response = client.post(f"/webhooks/{source_id}", data=big, headers=_signed(big))
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert post(client, "src_" + "x" * 24, load("customer.created")).status_code == 404
    assert post(client, "nope", load("customer.created")).status_code == 404
    assert client.delete(f"/v1/sources/{source_id}", headers=admin).status_code == 200
    gone = post(client, source_id, load("customer.created"))
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "source_not_found"
    assert events(runtime) == []


# -- issue #12: more event types, discounts and variants ----------------------------------------------


def variant(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / "variants" / f"{name}.json").read_text())
    return loaded


def test_a_past_due_subscription_is_past_due_and_still_counts_towards_mrr() -> None:
    [change] = normalize(variant("customer.subscription.updated.past_due"))
    assert change.status == "past_due"
    assert change.params == {**ACTIVE_PARAMS, "subscription_status": "past_due"}


def test_discounts_on_the_subscription_reduce_mrr() -> None:
    [change] = normalize(variant("customer.subscription.updated.discounted"))
    assert change.params["mrr"] == round(ACTIVE_PARAMS["mrr"] * 0.8)  # type: ignore[operator]
    amount_off = variant("customer.subscription.updated.discounted")
    coupon = amount_off["data"]["object"]["discounts"][0]["coupon"]
    coupon.update(percent_off=None, amount_off=1000, currency="usd")
    [change] = normalize(amount_off)
    assert change.params["mrr"] == ACTIVE_PARAMS["mrr"] - 1000  # type: ignore[operator]


def test_an_opened_dispute_is_attributed_through_its_charge_with_the_api_key(stripe_api: None) -> None:
    payload = load("charge.dispute.created")
    with pytest.raises(EventIgnored, match="api_key"):
        normalize(payload, known=False)
    with responses.RequestsMock() as api:
        api.get(
            "https://api.stripe.com/v1/charges/ch_3SRa2bLkdIwHu7ix0qZ1Refd",
            json={"id": "ch_3SRa2bLkdIwHu7ix0qZ1Refd", "object": "charge", "customer": CUSTOMER_ID},
        )
        [change] = normalize(payload, api_key=API_KEY)
    # The charge's customer is known here: the worker resolves the person through the link.
    assert change == CustomerChange(
        at(ACTIVE_START + 40 * 86400),
        None,
        IDENTITY,
        params={"dispute_status": "needs_response", "last_dispute_at": iso(ACTIVE_START + 40 * 86400)},
    )


def test_a_discount_deleted_before_it_was_created_stays_deleted(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)
    for name in ("customer.created", "customer.discount.deleted", "customer.discount.created"):
        assert post(client, source_id, load(name)).status_code == 200
        drain()
    params = customer(client, admin["Authorization"].split()[1], EMAIL)["projects"]["default"]["params"]
    assert not any(key.startswith("discount") for key in params)
