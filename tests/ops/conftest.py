"""Ops tests reuse the connector tests' Stripe API client fixture."""

from __future__ import annotations

from tests.connectors.conftest import stripe_api

__all__ = ["stripe_api"]
