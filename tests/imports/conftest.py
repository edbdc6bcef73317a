from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from tributary.connectors import stripe as stripe_connector


@pytest.fixture
def stripe_api() -> Iterator[None]:
    """Stripe clients without the library's own retries, so only the importer's backoff (with
    no sleeping in tests) handles 429s and 500s."""
    stripe_connector.set_client_factory(
        lambda key: stripe.StripeClient(key, http_client=stripe.RequestsClient(), max_network_retries=0)
    )
    yield
    stripe_connector.set_client_factory(None)
