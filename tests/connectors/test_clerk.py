"""Clerk: the contract suite, every tracked event from realistic fixtures, Svix verification
(including the published Standard Webhooks vector with frozen time) and bad input."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.connectors.provider_fixtures import (
    FIXTURES,
    dumps,
    envelopes,
    fixture,
    ignored_reason,
    make_source,
    normalize,
    source_config,
)
from tests.helpers import customer
from tributary.connectors.base import Headers, InboundRequest, MalformedPayload, VerificationFailed
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, new_standard_secret, svix_headers
from tributary.runtime.process import Runtime

USER = "user_2pX9dLrV7kQm3TzW8bN4cHfYs1A"
IDENTITY = IdentityRef("clerk", USER)

# The Standard Webhooks / Svix regression vector (shared/reference/auth-provider-webhooks.md §1.3).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class ClerkCase(WebhookCase):
    connector = "clerk"
    secret = new_standard_secret()
    other_secret = new_standard_secret()

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("clerk/user.created.json")
        payload["timestamp"] = timestamp * 1000
        # One Clerk user per delivery, so deliveries in one test never touch the same person.
        payload["data"]["id"] = f"user_{event_id}"
        payload["data"]["email_addresses"][0]["email_address"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("clerk/email.created.json")
        payload["timestamp"] = timestamp * 1000
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return svix_headers(body, secret, msg_id=event_id, timestamp=timestamp)


class TestClerkContract(ConnectorContract):
    case = ClerkCase()


def delivery(payload: Any, msg_id: str = "msg_1", secret: str = ClerkCase.secret) -> InboundRequest:
    body = dumps(payload)
    return InboundRequest(body, Headers(svix_headers(body, secret, msg_id=msg_id)))


def changes_for(path: str) -> list[CustomerChange]:
    [envelope] = envelopes("clerk", delivery(fixture(path)))
    return normalize("clerk", envelope)


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


# -- every tracked event ---------------------------------------------------------------------------


def test_user_created_is_a_signup_with_name_and_a_free_status_if_none() -> None:
    [change] = changes_for("clerk/user.created.json")
    assert change == CustomerChange(
        occurred_at=ms(1717236000412),
        email="ada@example.com",
        identity=IDENTITY,
        name="Ada Lovelace",
        status_if_absent="free",
        email_change=True,
    )


def test_user_updated_takes_the_primary_address_and_the_new_name() -> None:
    [change] = changes_for("clerk/user.updated.json")
    # Two addresses: the primary one (by primary_email_address_id) is the second, lower-cased.
    assert change.email == "ada.lovelace@example.org" and change.email_change
    assert change.name == "Augusta Ada King" and change.status_if_absent is None
    assert change.identity == IDENTITY and not change.activity


def test_user_deleted_forgets_the_identity_only() -> None:
    [change] = changes_for("clerk/user.deleted.json")
    assert change == CustomerChange(occurred_at=ms(1717495200118), identity=IDENTITY, forget_identity=True)


def test_session_created_is_activity_through_the_identity() -> None:
    [change] = changes_for("clerk/session.created.json")
    assert change == CustomerChange(occurred_at=ms(1717408800530), identity=IDENTITY, activity=True)


def test_unknown_events_are_ignored_with_a_reason() -> None:
    [envelope] = envelopes("clerk", delivery(fixture("clerk/email.created.json")))
    assert "email.created" in ignored_reason("clerk", envelope)


def test_a_user_without_primary_email_is_ignored_on_signup() -> None:
    payload = fixture("clerk/user.created.json")
    payload["data"]["primary_email_address_id"] = None
    [envelope] = envelopes("clerk", delivery(payload))
    assert "no primary email" in ignored_reason("clerk", envelope)


def test_the_envelope_carries_the_svix_id_the_event_time_and_the_email() -> None:
    [envelope] = envelopes("clerk", delivery(fixture("clerk/user.created.json"), msg_id="msg_abc"))
    assert (envelope.event_id, envelope.type, envelope.email) == (
        "msg_abc",
        "user.created",
        "ada@example.com",
    )
    assert envelope.occurred_at == ms(1717236000412)


@pytest.mark.parametrize(
    ("path", "edit"),
    [
        ("clerk/user.deleted.json", lambda p: p["data"].pop("id")),
        ("clerk/session.created.json", lambda p: p["data"].pop("user_id")),
        ("clerk/user.created.json", lambda p: p.pop("type")),
        ("clerk/user.created.json", lambda p: p.update(data=[])),
        ("clerk/user.created.json", lambda p: p.update(timestamp="yesterday")),
        ("clerk/user.created.json", lambda p: p.update(timestamp=int(time.time() * 1000) + 3_600_000)),
    ],
)
def test_malformed_events_are_refused_at_the_door(path: str, edit: Any) -> None:
    payload = fixture(path)
    edit(payload)
    with pytest.raises(MalformedPayload):
        envelopes("clerk", delivery(payload))


# -- verification ----------------------------------------------------------------------------------


def test_the_published_vector_verifies_with_frozen_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tributary.connectors.base.time.time", lambda: VECTOR_TIMESTAMP + 1.0)
    headers = Headers(
        {"svix-id": VECTOR_ID, "svix-timestamp": str(VECTOR_TIMESTAMP), "svix-signature": VECTOR_SIGNATURE}
    )
    source = source_config("clerk", (VECTOR_SECRET,))
    registry().get("clerk").verify(InboundRequest(VECTOR_BODY, headers), source)
    # The same vector, one byte changed, or read 301 s later, fails.
    with pytest.raises(VerificationFailed):
        registry().get("clerk").verify(InboundRequest(VECTOR_BODY.replace(b"2", b"3"), headers), source)
    monkeypatch.setattr("tributary.connectors.base.time.time", lambda: VECTOR_TIMESTAMP + 301.0)
    with pytest.raises(VerificationFailed, match="old"):
        registry().get("clerk").verify(InboundRequest(VECTOR_BODY, headers), source)


def test_webhook_prefixed_headers_are_accepted_too() -> None:
    body = dumps(fixture("clerk/user.created.json"))
    headers = svix_headers(body, ClerkCase.secret, msg_id="msg_1")
    renamed = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    request = InboundRequest(body, Headers(renamed))
    registry().get("clerk").verify(request, source_config("clerk", (ClerkCase.secret,)))
    assert envelopes("clerk", request)[0].event_id == "msg_1"


def test_a_rotated_signature_list_verifies_if_any_entry_matches() -> None:
    body = dumps(fixture("clerk/user.created.json"))
    headers = svix_headers(body, ClerkCase.secret, msg_id="msg_1")
    headers["svix-signature"] = f"v1a,AAAA v1,not-base64!! v1,{'A' * 44} {headers['svix-signature']}"
    registry().get("clerk").verify(
        InboundRequest(body, Headers(headers)), source_config("clerk", (ClerkCase.secret,))
    )


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h.update({"svix-timestamp": "soon"}),
        lambda h: h.update({"svix-timestamp": "1e10"}),
        lambda h: h.update({"svix-signature": "v1"}),
        lambda h: h.update({"svix-signature": "v2,abc"}),
        lambda h: h.pop("svix-id"),
        lambda h: h.update({"svix-id": ""}),
    ],
)
def test_bad_signature_headers_fail_verification(mangle: Any) -> None:
    body = dumps(fixture("clerk/user.created.json"))
    headers = svix_headers(body, ClerkCase.secret, msg_id="msg_1")
    mangle(headers)
    with pytest.raises(VerificationFailed):
        registry().get("clerk").verify(
            InboundRequest(body, Headers(headers)), source_config("clerk", (ClerkCase.secret,))
        )


# -- through the endpoint --------------------------------------------------------------------------


def test_a_signup_through_the_endpoint(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    source_id = make_source(runtime, "clerk", [ClerkCase.secret])
    request = delivery(fixture("clerk/user.created.json"))
    response = client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers))
    assert response.status_code == 200 and response.get_json() == {"received": 1, "duplicates": 0}
    drain()
    record = customer(client, admin_key, "ada@example.com")
    assert record["name"] == "Ada Lovelace"
    assert record["projects"]["default"]["status"] == "free"
    assert record["identities"] == [{"source": "clerk", "external_id": USER}]


# -- issue #12: waitlist, organizations and Clerk Billing ------------------------------------------------

PRO = {
    "plan": "pro",
    "mrr": 2000,
    "currency": "usd",
    "interval": "month",
    "subscription_status": "active",
    "current_period_end": "2024-07-02T10:30:00Z",
    "cancel_at_period_end": False,
}


def test_a_waitlist_entry_is_a_person_with_the_weak_status_waitlist() -> None:
    assert changes_for("clerk/waitlistEntry.created.json") == [
        CustomerChange(ms(1717149600250), "ada@example.com", status_if_absent="waitlist")
    ]


def test_organization_memberships_are_params_per_organization() -> None:
    key = "organization:org_2pXA3kLm8Nq1Rt5Vw9Yz2Bc4Df6"
    assert changes_for("clerk/organizationMembership.created.json") == [
        CustomerChange(
            ms(1717239600310), "ada@example.com", IDENTITY, params={key: "org:admin"}, email_change=True
        )
    ]
    assert changes_for("clerk/organizationMembership.deleted.json") == [
        CustomerChange(ms(1717930800120), "ada@example.com", IDENTITY, params_unset=(key,), email_change=True)
    ]


def test_billing_items_map_to_status_and_plan_params_like_stripe() -> None:
    # The payer's address is the user's at that time (an email change, as user.updated's).
    assert changes_for("clerk/subscriptionItem.active.json") == [
        CustomerChange(
            ms(1717324200420), "ada@example.com", IDENTITY, status="paid", params=PRO, email_change=True
        )
    ]
    [past_due] = changes_for("clerk/subscriptionItem.pastDue.json")
    assert past_due.status == "past_due" and past_due.params["mrr"] == 2000
    assert past_due.params["subscription_status"] == "past_due"
    [ended] = changes_for("clerk/subscriptionItem.ended.json")
    assert ended.status == "churned" and ended.params["mrr"] == 0
    # The subscription as a whole: its paid item decides, the ended free default plan does not.
    [subscription] = changes_for("clerk/subscription.active.json")
    assert (subscription.status, subscription.params) == ("paid", PRO)


def test_a_free_default_plan_is_a_weak_free_status() -> None:
    payload = fixture("clerk/subscriptionItem.active.json")
    payload["data"]["plan"].update(amount=0, slug="free_user", is_default=True)
    [envelope] = envelopes("clerk", delivery(payload))
    [change] = normalize("clerk", envelope)
    assert (change.status, change.status_if_absent, change.params["mrr"]) == (None, "free", 0)


def test_payment_attempts_record_payments_and_failures() -> None:
    [paid] = changes_for("clerk/paymentAttempt.updated.json")
    assert paid.params == {"last_payment_at": "2024-06-02T10:29:59Z"} and paid.identity == IDENTITY
    [failed] = changes_for("clerk/paymentAttempt.created.json")
    assert failed.params == {"last_payment_failed_at": "2024-07-02T10:30:58Z"}


def test_billing_for_an_organization_is_ignored_with_the_reason() -> None:
    payload = fixture("clerk/subscriptionItem.active.json")
    payload["data"]["payer"].update(user_id=None, organization_id="org_2pXA3kLm8Nq1Rt5Vw9Yz2Bc4Df6")
    [envelope] = envelopes("clerk", delivery(payload))
    assert "not a user" in ignored_reason("clerk", envelope)


def test_every_clerk_fixture_is_a_tracked_type_or_the_untracked_example() -> None:
    tracked = set(registry().get("clerk").event_types)
    names = {p.stem for p in (FIXTURES / "clerk").glob("*.json")}
    assert names - tracked == {"email.created"}
