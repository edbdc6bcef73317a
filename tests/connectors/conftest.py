"""Connector tests run the public test kit against this suite's database and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe
from flask import Flask

from tributary.app.testing import AppHarness
from tributary.connectors import stripe as stripe_connector
from tributary.runtime.process import Runtime


@pytest.fixture
def tributary_harness(app: Flask, runtime: Runtime) -> AppHarness:
    return AppHarness(app, runtime)


@pytest.fixture
def stripe_api() -> Iterator[None]:
    """Stripe API clients without retries (so no backoff sleeps) for `responses` to answer."""
    stripe_connector.set_client_factory(
        lambda key: stripe.StripeClient(key, http_client=stripe.RequestsClient(), max_network_retries=0)
    )
    yield
    stripe_connector.set_client_factory(None)
