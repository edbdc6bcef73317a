"""The contract suite runs on a third-party connector installed through an entry point (the
example of docs/connectors.md, so the documented code is the tested code) and catches broken
connectors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.connectors.fake_dist import fake_distribution
from tributary.app.testing import AppHarness
from tributary.connectors.base import (
    Connector,
    Envelope,
    InboundRequest,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import build_registry, use_registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, registered, stripe_signature

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


def example_connector_source() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- example: acme_connector.py")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, marker)
    assert match is not None
    return match.group(1)


# -- the contract on a third-party connector ---------------------------------------------------------


class AcmeCase(WebhookCase):
    connector = "acme"
    secret = "acme_secret_one"
    other_secret = "acme_secret_two"

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        user = {"id": "u_1", "email": "Ada@Example.com", "name": "Ada"}
        return json.dumps(
            {"id": event_id, "type": "user.signed_up", "created": timestamp, "user": user}
        ).encode()

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        return json.dumps({"id": event_id, "type": "billing.changed", "created": timestamp}).encode()

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return {"Acme-Signature": stripe_signature(body, secret, timestamp)}


@pytest.fixture(scope="module")
def acme_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The docs' example, installed as a third-party distribution with an entry point."""
    with (
        fake_distribution(
            tmp_path_factory.mktemp("site"),
            "tributary-acme",
            "0.3.0",
            entry_points={"acme": "tributary_acme:AcmeConnector"},
            modules={"tributary_acme": example_connector_source()},
        ),
        use_registry(build_registry(modules=[], disabled=[])) as reg,
    ):
        registration = reg.registration("acme")
        assert (registration.origin, registration.distribution, registration.version) == (
            "entry_point",
            "tributary-acme",
            "0.3.0",
        )
        yield


@pytest.mark.usefixtures("acme_installed")
class TestThirdPartyConnectorContract(ConnectorContract):
    case = AcmeCase()


@pytest.mark.usefixtures("acme_installed")
def test_third_party_connector_end_to_end(
    tributary_harness: AppHarness, client: Any, admin: dict[str, str]
) -> None:
    case = AcmeCase()
    source_id = tributary_harness.create_source("acme", secrets=[case.secret])
    status, body = tributary_harness.post(source_id, case.delivery(event_id="ev_signup"))
    assert (status, body) == (200, {"received": 1, "duplicates": 0})
    tributary_harness.drain()
    record = client.get("/v1/customers/ada@example.com", headers=admin).get_json()
    assert record["name"] == "Ada"
    assert record["projects"]["default"]["status"] == "free"
    assert record["identities"] == [{"source": "acme", "external_id": "u_1"}]


# -- the contract has teeth ----------------------------------------------------------------------------


class LaxConnector(Connector):
    """Checks the HMAC but not the timestamp, and fails on unknown types instead of ignoring them."""

    name = "lax"

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        header = request.headers.get("acme-signature", "")
        timestamp = header.partition("t=")[2].partition(",")[0]
        if not timestamp or stripe_signature(request.body, source.secrets[0], int(timestamp)) != header:
            raise VerificationFailed("bad signature")

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        from datetime import UTC, datetime

        event = json.loads(request.body)
        return [Envelope(event["id"], event["type"], datetime.fromtimestamp(event["created"], UTC), event)]

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        user = envelope.payload["user"]
        return [CustomerChange(occurred_at=envelope.occurred_at, email=user["email"])]


class LaxCase(AcmeCase):
    connector = "lax"


class LaxContract(ConnectorContract):
    case: ClassVar[WebhookCase] = LaxCase()


@pytest.mark.parametrize(
    "test_name",
    [
        "test_stale_timestamp_is_rejected",
        "test_future_timestamp_is_rejected",
        "test_unknown_type_is_stored_and_ignored",
        "test_malformed_bodies_are_rejected",
        "test_either_of_two_active_secrets_verifies",
    ],
)
def test_the_contract_catches_a_lax_connector(tributary_harness: AppHarness, test_name: str) -> None:
    with registered(LaxConnector), pytest.raises(AssertionError):
        getattr(LaxContract(), test_name)(tributary_harness)
