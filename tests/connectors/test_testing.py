"""The public test kit: its signers agree with the providers' own libraries, and its contract suite
runs on a third-party connector installed through an entry point (the example of
docs/connectors.md, so the documented code is the tested code) and catches broken connectors."""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import stripe
from standardwebhooks.webhooks import Webhook

from connectors.base import (
    Connector,
    Envelope,
    InboundRequest,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
)
from connectors.changes import CustomerChange
from connectors.registry import build_registry, use_registry
from connectors.testing import (
    AppHarness,
    ConnectorContract,
    WebhookCase,
    embedded_harness,
    new_standard_secret,
    registered,
    standard_webhook_headers,
    static_secret_headers,
    stripe_headers,
    stripe_signature,
    svix_headers,
    workos_signature,
)
from tests.connectors.fake_dist import fake_distribution

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


def example_connector_source() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- example: acme_connector.py")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, marker)
    assert match is not None
    return match.group(1)


# -- signers ----------------------------------------------------------------------------------------


def test_stripe_signer_is_accepted_by_the_stripe_library() -> None:
    body = b'{"id": "evt_1", "object": "event"}'
    header = stripe_signature(body, "whsec_test", timestamp=int(time.time()))
    assert stripe.WebhookSignature.verify_header(body, header, "whsec_test", tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_other", tolerance=300)
    assert set(stripe_headers(body, "whsec_test")) == {"Stripe-Signature"}


def test_standard_webhook_signer_matches_the_published_vector_and_library() -> None:
    # Svix / Standard Webhooks regression vector (shared/reference/auth-provider-webhooks.md §1.3).
    headers = svix_headers(
        b'{"test": 2432232314}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
    )
    assert headers == {
        "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "svix-timestamp": "1614265330",
        "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = new_standard_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = b'{"type": "user.created"}'
    fresh = standard_webhook_headers(body, secret, msg_id="msg_1")
    assert Webhook(secret).verify(body, fresh) == {"type": "user.created"}


def test_workos_signer_format() -> None:
    header = workos_signature(b"{}", "sk", timestamp_ms=1632409405772)
    assert re.fullmatch(r"t=1632409405772, v1=[0-9a-f]{64}", header)
    assert header != workos_signature(b"{}", "other", timestamp_ms=1632409405772)


def test_static_secret_headers() -> None:
    assert static_secret_headers("s3cret") == {"Authorization": "s3cret"}
    assert static_secret_headers("s3cret", "X-Hook", scheme="Bearer") == {"X-Hook": "Bearer s3cret"}


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


def test_the_embedded_harness_runs_without_the_suite_fixtures(tmp_path: Path) -> None:
    with (
        registered(type("AcmeLocal", (LaxConnector,), {"name": "acme-local"})),
        embedded_harness(tmp_path) as harness,
    ):
        case = type("LocalCase", (AcmeCase,), {"connector": "acme-local"})()
        source_id = harness.create_source("acme-local", secrets=[case.secret])
        status, body = harness.post(source_id, case.delivery())
        assert (status, body) == (200, {"received": 1, "duplicates": 0})
        harness.drain()
        [event] = harness.events(source_id)
        assert (event.status, event.effects) == ("processed", 1)


@pytest.mark.slow
def test_a_third_party_package_runs_the_kit_with_the_plugin_alone(tmp_path: Path) -> None:
    """What a connector author outside this repository does: an app-local connector module named in
    TRIBUTARY_CONNECTOR_MODULES, `pytest_plugins = ["connectors.testing"]`, a case, the suite."""
    (tmp_path / "acme_local.py").write_text(
        example_connector_source() + "\nfrom connectors.registry import register_connector\n"
        "register_connector(AcmeConnector)\n"
    )
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["connectors.testing"]\n')
    case_source = inspect.getsource(AcmeCase)
    (tmp_path / "test_acme.py").write_text(
        "import json\n"
        "from connectors.testing import ConnectorContract, WebhookCase, stripe_signature\n\n\n"
        f"{case_source}\n\n"
        "class TestAcme(ConnectorContract):\n"
        "    case = AcmeCase()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["TRIBUTARY_CONNECTOR_MODULES"] = "acme_local"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1[0-9] passed\b", result.stdout), result.stdout
