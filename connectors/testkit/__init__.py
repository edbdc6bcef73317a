"""The public connector test kit: signers for every scheme Tributary verifies
(`tributary.connectors.testkit.signers`) and the contract suite every connector passes
(`tributary.connectors.testkit.contract`). A connector author writes a small `WebhookCase` and inherits the
suite::

    from tributary.connectors.testkit import ConnectorContract, WebhookCase, new_standard_secret

    class AcmeCase(WebhookCase):
        connector = "acme"
        secret = new_standard_secret()
        ...

    class TestAcmeContract(ConnectorContract):
        case = AcmeCase()

and adds `pytest_plugins = ["tributary.app.testing"]` to its `conftest.py` for the harness the suite runs
on (a throwaway Tributary: the app layer's `tributary.app.testing`). docs/connectors.md, "Testing it".
"""

from __future__ import annotations

from tributary.connectors.testkit.contract import (
    ConnectorContract,
    Harness,
    StoredEvent,
    WebhookCase,
    registered,
)
from tributary.connectors.testkit.signers import (
    lemonsqueezy_headers,
    new_standard_secret,
    paddle_headers,
    paddle_signature,
    standard_webhook_headers,
    static_secret_headers,
    stripe_headers,
    stripe_signature,
    svix_headers,
    workos_headers,
    workos_signature,
)

__all__ = [
    "ConnectorContract",
    "Harness",
    "StoredEvent",
    "WebhookCase",
    "lemonsqueezy_headers",
    "new_standard_secret",
    "paddle_headers",
    "paddle_signature",
    "registered",
    "standard_webhook_headers",
    "static_secret_headers",
    "stripe_headers",
    "stripe_signature",
    "svix_headers",
    "workos_headers",
    "workos_signature",
]
