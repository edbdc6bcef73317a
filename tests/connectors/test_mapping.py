"""`mapping`: JMESPath mappings and declarative verification. Contract suites for three
verification set-ups, every option checked at source creation, and the mapped changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from flask.testing import FlaskClient

from tests.connectors.provider_fixtures import (
    dumps,
    envelopes,
    fixture,
    make_source,
    normalize,
    source_config,
)
from tests.helpers import auth, customer
from tributary.connectors.base import (
    Headers,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    VerificationFailed,
)
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, static_secret_headers
from tributary.runtime.process import Runtime

SECRET = "app-hook-secret-Nw3Gk8Vd1Qs6"
FIELDS = {
    "email": "account.owner.email",
    "name": "account.owner.full_name",
    "status": "account.lifecycle",
    "params": "{plan: account.plan.name, seats: account.plan.seats, coupon: account.plan.coupon}",
    "event_id": "id",
    "event_type": "type",
    "occurred_at": "created_at",
    "events": "subscription.*,user.*",
}
HMAC_OPTIONS = {
    **FIELDS,
    "verify": "hmac-sha256",
    "signature_header": "X-Acme-Signature",
    "signature_prefix": "sha256=",
}


def sign(
    body: bytes,
    secret: str,
    *,
    algorithm: str = "sha256",
    encoding: str = "hex",
    message: bytes | None = None,
) -> str:
    digest = hmac.new(
        secret.encode(), body if message is None else message, getattr(hashlib, algorithm)
    ).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


class MappingCase(WebhookCase):
    connector = "mapping"
    secret = SECRET
    other_secret = "app-hook-secret-other-Yb2Jm"
    options: ClassVar[dict[str, Any]] = HMAC_OPTIONS
    signed_timestamps = False

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("mapping/subscription.upgraded.json")
        payload["id"] = event_id
        payload["created_at"] = datetime.fromtimestamp(timestamp, UTC).isoformat()
        payload["account"]["owner"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("mapping/invoice.created.json")
        payload["id"] = event_id
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return {"X-Acme-Signature": "sha256=" + sign(body, secret)}


class TestMappingHmacContract(ConnectorContract):
    case = MappingCase()


class TimestampedCase(MappingCase):
    """HMAC-SHA1, base64, over `<timestamp>.<body>`: the signed timestamp is held to ±300 s."""

    options: ClassVar[dict[str, Any]] = {
        **FIELDS,
        "verify": "hmac-sha1",
        "signature_header": "X-Signature",
        "signature_encoding": "base64",
        "signed_payload": "timestamp.body",
        "timestamp_header": "X-Timestamp",
    }
    signed_timestamps = True

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        signature = sign(
            body, secret, algorithm="sha1", encoding="base64", message=f"{timestamp}.".encode() + body
        )
        return {"X-Signature": signature, "X-Timestamp": str(timestamp)}


class TestMappingTimestampedContract(ConnectorContract):
    case = TimestampedCase()


class SecretHeaderCase(MappingCase):
    options: ClassVar[dict[str, Any]] = {**FIELDS, "verify": "secret-header", "secret_header": "X-Hook-Token"}
    signs_body = False

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return static_secret_headers(secret, header="X-Hook-Token")


class TestMappingSecretHeaderContract(ConnectorContract):
    case = SecretHeaderCase()


def request(path: str, **overrides: Any) -> InboundRequest:
    payload = fixture(path)
    payload.update(overrides)
    body = dumps(payload)
    return InboundRequest(body, Headers({"X-Acme-Signature": "sha256=" + sign(body, SECRET)}))


def hmac_source(**options: Any) -> Any:
    return source_config("mapping", (SECRET,), **{**HMAC_OPTIONS, **options})


# -- the mapped changes ----------------------------------------------------------------------------


def test_fields_come_from_the_expressions() -> None:
    source = hmac_source()
    [envelope] = envelopes("mapping", request("mapping/subscription.upgraded.json"), source)
    assert (envelope.event_id, envelope.type, envelope.email) == (
        "whevt_7f3k2m9q",
        "subscription.upgraded",
        "alan@example.com",
    )
    assert envelope.occurred_at == datetime(2024, 6, 1, 9, tzinfo=UTC)
    [change] = normalize("mapping", envelope, source)
    assert (change.email, change.name, change.status) == ("alan@example.com", "Alan Turing", "paid")
    # A null selected value cannot be stored (SPEC §4): it is left out, not written.
    assert change.params == {"plan": "pro", "seats": 3} and change.activity


def test_the_events_filter_and_missing_emails_ignore_events() -> None:
    source = hmac_source()
    [envelope] = envelopes("mapping", request("mapping/invoice.created.json"), source)
    assert "events filter" in ignored_reason_for(envelope, source)
    [envelope] = envelopes("mapping", request("mapping/user.logged_in.json", account={}), source)
    assert "no email" in ignored_reason_for(envelope, source)


def ignored_reason_for(envelope: Any, source: Any) -> str:
    from tributary.connectors.base import EventIgnored

    with pytest.raises(EventIgnored) as caught:
        normalize("mapping", envelope, source)
    return str(caught.value)


def test_without_an_event_id_identical_bodies_are_one_event_and_time_is_receipt() -> None:
    source = hmac_source(event_id=None, occurred_at=None)
    first = envelopes("mapping", request("mapping/user.logged_in.json"), source)[0]
    again = envelopes("mapping", request("mapping/user.logged_in.json"), source)[0]
    assert first.event_id == again.event_id and first.event_id.startswith("sha256:")
    assert abs(first.occurred_at.timestamp() - time.time()) < 60


def test_activity_can_be_switched_off_and_statuses_must_be_slugs() -> None:
    source = hmac_source(activity="false")
    [envelope] = envelopes("mapping", request("mapping/subscription.upgraded.json"), source)
    assert not normalize("mapping", envelope, source)[0].activity
    payload = fixture("mapping/subscription.upgraded.json")
    payload["account"]["lifecycle"] = "Paid Annually!"
    body = dumps(payload)
    bad = InboundRequest(body, Headers({"X-Acme-Signature": "sha256=" + sign(body, SECRET)}))
    [envelope] = envelopes("mapping", bad, source)
    with pytest.raises(MalformedPayload, match="slug"):
        normalize("mapping", envelope, source)


def test_expressions_that_fail_on_a_payload_are_reported() -> None:
    source = hmac_source(name="length(account.nickname)")  # length(null) is a type error
    [envelope] = envelopes("mapping", request("mapping/user.logged_in.json"), source)
    with pytest.raises(MalformedPayload, match="name expression"):
        normalize("mapping", envelope, source)
    with pytest.raises(MalformedPayload, match="event_id"):
        envelopes("mapping", request("mapping/user.logged_in.json", id=None), hmac_source())


# -- verification ----------------------------------------------------------------------------------


def test_prefix_encoding_and_algorithm_are_enforced() -> None:
    mapping = registry().get("mapping")
    body = dumps(fixture("mapping/user.logged_in.json"))
    source = hmac_source()
    mapping.verify(
        InboundRequest(body, Headers({"X-Acme-Signature": "sha256=" + sign(body, SECRET)})), source
    )
    for value in (
        sign(body, SECRET),  # no prefix
        "sha256=" + sign(body, SECRET, encoding="base64"),
        "sha256=" + sign(body, SECRET, algorithm="sha1"),
        "sha256=" + sign(body + b" ", SECRET),
        "sha256=zz",
    ):
        with pytest.raises(VerificationFailed):
            mapping.verify(InboundRequest(body, Headers({"X-Acme-Signature": value})), source)


# -- options, checked when the source is created ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({**HMAC_OPTIONS, "email": "account.[owner"}, "email is not a valid JMESPath"),
        ({**HMAC_OPTIONS, "name": "nosuchfn(account)"}, "name"),
        ({**HMAC_OPTIONS, "status": "length(a, b)"}, "status"),
        ({**HMAC_OPTIONS, "verify": "hmac-md5"}, "unknown algorithm"),
        ({**HMAC_OPTIONS, "verify": None}, "verify must be one of"),
        ({**HMAC_OPTIONS, "signature_header": ""}, "signature_header is required"),
        ({**HMAC_OPTIONS, "signature_header": "X Bad"}, "header name"),
        ({**HMAC_OPTIONS, "signature_encoding": "hexadecimal"}, "hex or base64"),
        ({**HMAC_OPTIONS, "signed_payload": "body.timestamp"}, "signed_payload"),
        ({**HMAC_OPTIONS, "signed_payload": "timestamp.body"}, "timestamp_header is required"),
        ({**HMAC_OPTIONS, "timestamp_header": "X-Ts"}, "only applies"),
        ({**HMAC_OPTIONS, "secret_header": "X-Token"}, "only applies"),
        ({**FIELDS, "verify": "secret-header"}, "secret_header is required"),
        (
            {**FIELDS, "verify": "secret-header", "secret_header": "X-T", "signature_header": "X-S"},
            "only apply",
        ),
        ({k: v for k, v in HMAC_OPTIONS.items() if k != "email"}, "email is required"),
        ({**HMAC_OPTIONS, "emial": "x"}, "unknown option"),
        ({**HMAC_OPTIONS, "events": ""}, "events is empty"),
        ({**HMAC_OPTIONS, "events": [1]}, "events must be"),
        ({**HMAC_OPTIONS, "activity": "sometimes"}, "activity"),
        ({**HMAC_OPTIONS, "email": "a" * 1001}, "longer than"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidOptions, match=reason):
        registry().get("mapping").validate_options(options)


def test_options_arrive_as_cli_strings_and_are_normalized() -> None:
    cleaned = registry().get("mapping").validate_options({**HMAC_OPTIONS, "activity": "no"})
    assert cleaned["events"] == ["subscription.*", "user.*"] and cleaned["activity"] is False
    assert cleaned["signature_encoding"] == "hex" and cleaned["signed_payload"] == "body"


def test_bad_options_are_a_400_when_creating_a_source(client: FlaskClient, admin_key: str) -> None:
    response = client.post(
        "/v1/sources",
        json={
            "connector": "mapping",
            "project": "default",
            "options": {**HMAC_OPTIONS, "verify": "hmac-md5"},
        },
        headers=auth(admin_key),
    )
    assert response.status_code == 400, response.get_json()
    assert "unknown algorithm" in response.get_json()["error"]["message"]


def test_a_custom_app_end_to_end(client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any) -> None:
    source_id = make_source(runtime, "mapping", [SECRET], **HMAC_OPTIONS)
    for path in (
        "mapping/user.logged_in.json",
        "mapping/subscription.upgraded.json",
        "mapping/invoice.created.json",
    ):
        signed = request(path)
        response = client.post(f"/webhooks/{source_id}", data=signed.body, headers=dict(signed.headers))
        assert response.status_code == 200, response.get_json()
    drain()
    record = customer(client, admin_key, "alan@example.com")
    assert record["name"] == "Alan Turing"
    assert record["projects"]["default"]["status"] == "paid"
    assert record["projects"]["default"]["params"] == {"plan": "pro", "seats": 3}
    assert record["last_activity_at"] == "2024-06-02T09:00:00.000000Z"
