"""WorkOS: the contract suite, the SDK's published signature vector, the header's variants, and
every tracked event (AuthKit users and sessions, Directory Sync users)."""

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
from tributary.connectors.base import (
    EventIgnored,
    Headers,
    InboundRequest,
    MalformedPayload,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, workos_headers, workos_signature
from tributary.connectors.workos import parse_signature_header, verify_workos_signature
from tributary.runtime.process import Runtime

SECRET = "wos-endpoint-secret-Jc8Nq3Vx6Rt1"
USER = IdentityRef("workos", "user_01HZQ3M8K5T7V2X9B4N6R1C0DE")
DIRECTORY_USER = IdentityRef("workos", "directory_user_01HZR4N6P8Q0R2S4T6V8W0X2Y4")

# The WorkOS Python SDK's test vector (shared/reference/auth-provider-webhooks.md §5).
SDK_SECRET = "1lyKDzhJjuCkIscIWqkSe4YsQ"
SDK_HEADER = "t=1632409405772, v1=67612f0e74f008b436a13b00266f90ef5c13f9cbcf6262206f5f4a539ff61702"
SDK_TIME = 1632409405.772


class WorkOSCase(WebhookCase):
    connector = "workos"
    secret = SECRET
    other_secret = "wos-endpoint-secret-other-Pz4Kd"

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("workos/user.created.json")
        payload["id"] = event_id
        payload["created_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        payload["data"]["id"] = f"user_{event_id}"
        payload["data"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("workos/organization.created.json")
        payload["id"] = event_id
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return workos_headers(body, secret, timestamp * 1000)


class TestWorkOSContract(ConnectorContract):
    case = WorkOSCase()


def signed(payload: Any) -> InboundRequest:
    body = dumps(payload)
    return InboundRequest(body, Headers(workos_headers(body, SECRET)))


def changes_for(name: str) -> list[CustomerChange]:
    [envelope] = envelopes("workos", signed(fixture(f"workos/{name}.json")))
    return normalize("workos", envelope)


# -- the SDK vector and the header -----------------------------------------------------------------


def test_the_sdk_vector_verifies_with_frozen_time() -> None:
    body = (FIXTURES / "workos" / "sdk_vector.body").read_bytes()
    verify_workos_signature(body, SDK_HEADER, [SDK_SECRET], now=SDK_TIME)
    with pytest.raises(VerificationFailed, match="old"):
        verify_workos_signature(body, SDK_HEADER, [SDK_SECRET], now=SDK_TIME + 301)
    with pytest.raises(VerificationFailed, match="does not match"):
        verify_workos_signature(body + b" ", SDK_HEADER, [SDK_SECRET], now=SDK_TIME)


def test_the_sdk_vector_through_the_connector_with_a_monkeypatched_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tributary.connectors.base.time.time", lambda: SDK_TIME)
    body = (FIXTURES / "workos" / "sdk_vector.body").read_bytes()
    request = InboundRequest(body, Headers({"WorkOS-Signature": SDK_HEADER}))
    source = source_config("workos", (SDK_SECRET,))
    registry().get("workos").verify(request, source)
    monkeypatch.setattr("tributary.connectors.base.time.time", lambda: SDK_TIME - 301)
    with pytest.raises(VerificationFailed, match="future"):
        registry().get("workos").verify(request, source)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("t=1, v1=ab", ("1", ["ab"])),
        ("t=1,v1=ab,v1=cd", ("1", ["ab", "cd"])),
        (" v1=ab ,  t=2 ", ("2", ["ab"])),
        ("v1=ab", ("", ["ab"])),
        ("garbage", ("", [])),
    ],
)
def test_the_signature_header_parses_loosely(header: str, expected: tuple[str, list[str]]) -> None:
    assert parse_signature_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=abc", "t=soon, v1=abc", "t=1632409405772", "t=1632409405772, v1=zz", "t=-5, v1=ab"],
)
def test_bad_headers_fail(header: str | None) -> None:
    body = (FIXTURES / "workos" / "sdk_vector.body").read_bytes()
    with pytest.raises(VerificationFailed):
        verify_workos_signature(body, header, [SDK_SECRET], now=SDK_TIME)


def test_the_timestamp_is_in_milliseconds_and_checked_both_ways() -> None:
    body = dumps(fixture("workos/user.created.json"))
    now = time.time()
    for skew, ok in ((-299, True), (299, True), (-301, False), (301, False)):
        header = workos_signature(body, SECRET, int((now + skew) * 1000))
        if ok:
            verify_workos_signature(body, header, [SECRET], now=now)
        else:
            with pytest.raises(VerificationFailed):
                verify_workos_signature(body, header, [SECRET], now=now)


# -- every tracked event ---------------------------------------------------------------------------


def test_user_created_is_a_signup() -> None:
    [change] = changes_for("user.created")
    assert (change.email, change.identity, change.name, change.status_if_absent) == (
        "marie@example.com",
        USER,
        "Marie Curie",
        "free",
    )


def test_user_updated_with_a_new_address_is_an_email_change() -> None:
    [change] = changes_for("user.updated")
    assert change.email == "marie.sklodowska@example.org" and change.email_change
    assert change.name == "Marie Skłodowska-Curie" and change.status_if_absent is None


def test_user_deleted_forgets_the_identity() -> None:
    [change] = changes_for("user.deleted")
    assert change == CustomerChange(occurred_at=change.occurred_at, identity=USER, forget_identity=True)


def test_session_created_is_activity_at_the_session_start() -> None:
    [change] = changes_for("session.created")
    assert change.activity and change.identity == USER and change.email is None
    assert change.occurred_at.isoformat() == "2024-06-03T07:45:00.850000+00:00"


def test_directory_users_use_the_primary_email() -> None:
    [created] = changes_for("dsync.user.created")
    assert (created.email, created.identity, created.status_if_absent) == (
        "rosalind@kings.example",
        DIRECTORY_USER,
        "free",
    )
    [updated] = changes_for("dsync.user.updated")
    assert (updated.email, updated.name) == ("r.franklin@kings.example", "Rosalind Elsie Franklin")
    [deleted] = changes_for("dsync.user.deleted")
    assert deleted.forget_identity and deleted.identity == DIRECTORY_USER


def test_other_events_are_ignored() -> None:
    [envelope] = envelopes("workos", signed(fixture("workos/organization.created.json")))
    assert "organization.created" in ignored_reason("workos", envelope)


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.pop("id"),
        lambda p: p.pop("event"),
        lambda p: p.update(data="x"),
        lambda p: p.update(created_at=None),
        lambda p: p["data"].pop("id"),
    ],
)
def test_malformed_events_are_refused(edit: Any) -> None:
    payload = fixture("workos/user.created.json")
    edit(payload)
    with pytest.raises(MalformedPayload):
        envelopes("workos", signed(payload))


def test_a_user_life_end_to_end(client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any) -> None:
    source_id = make_source(runtime, "workos", [SECRET])
    for name in ("user.updated", "session.created", "user.created", "user.deleted"):
        request = signed(fixture(f"workos/{name}.json"))
        response = client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers))
        assert response.status_code == 200, response.get_json()
        drain()
    record = customer(client, admin_key, "marie.sklodowska@example.org")
    assert record["past_emails"] == ["marie@example.com"] and record["name"] == "Marie Skłodowska-Curie"
    assert record["projects"]["default"]["status"] == "free" and record["identities"] == []
    assert record["last_activity_at"] == "2024-06-03T07:45:00.850000Z"


# -- issue #12: memberships, invitations and sign-ins ------------------------------------------------------


def iso_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_organization_memberships_are_params_per_organization() -> None:
    key = "organization:org_01HZQ2K7J4S6U1W8A3M5P0B9CD"
    assert changes_for("organization_membership.created") == [
        CustomerChange(iso_at("2024-06-01T09:05:00.120Z"), identity=USER, params={key: "admin"})
    ]
    assert changes_for("organization_membership.deleted") == [
        CustomerChange(iso_at("2024-06-20T16:00:00.210Z"), identity=USER, params_unset=(key,))
    ]


def test_an_accepted_invitation_is_a_signup_with_activity() -> None:
    assert changes_for("invitation.accepted") == [
        CustomerChange(
            iso_at("2024-06-01T09:00:00.300Z"),
            "ada@example.com",
            USER,
            status_if_absent="free",
            activity=True,
        )
    ]


@pytest.mark.parametrize("method", ["password", "oauth", "sso", "magic_auth", "passkey", "mfa"])
def test_successful_authentications_are_activity(method: str) -> None:
    payload = fixture("workos/authentication.password_succeeded.json")
    payload["event"] = f"authentication.{method}_succeeded"
    payload["data"]["type"] = method
    [envelope] = envelopes("workos", signed(payload))
    assert normalize("workos", envelope) == [
        CustomerChange(iso_at("2024-06-03T07:45:00.700Z"), "ada@example.com", USER, activity=True)
    ]


def test_a_failed_authentication_is_not_tracked() -> None:
    payload = fixture("workos/authentication.password_succeeded.json")
    payload["event"] = "authentication.password_failed"
    [envelope] = envelopes("workos", signed(payload))
    with pytest.raises(EventIgnored):
        normalize("workos", envelope)
