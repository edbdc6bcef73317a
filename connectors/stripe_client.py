"""The Stripe API client the worker uses to look up what an event lacks (a customer's email, a
dispute's charge): one factory, so tests can inject theirs (`set_client_factory`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import stripe

__all__ = ["ClientFactory", "CustomerLookupFailed", "client_for", "set_client_factory"]

ClientFactory = Callable[[str], stripe.StripeClient]


class CustomerLookupFailed(Exception):
    """Stripe's API could not tell a customer's email (network, key or permission problem)."""


@functools.lru_cache(maxsize=16)
def _default_client(api_key: str) -> stripe.StripeClient:
    # A short timeout: the lookup runs inside the worker's batch. One retry for a blip; a longer
    # outage fails the event, and its RQ retry comes back later.
    return stripe.StripeClient(api_key, http_client=stripe.RequestsClient(timeout=10), max_network_retries=1)


_client_factory: ClientFactory = _default_client


def set_client_factory(factory: ClientFactory | None) -> None:
    """Build Stripe clients with `factory` (None: the default)."""
    global _client_factory  # noqa: PLW0603 - one factory per process, swapped by tests
    _client_factory = factory or _default_client


def client_for(api_key: str) -> stripe.StripeClient:
    return _client_factory(api_key)
