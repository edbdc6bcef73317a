"""Connectors: one module per provider, the connector contract, the registry and the test kit."""

from __future__ import annotations

from tributary.connectors.changes import CustomerChange, IdentityRef

__all__ = ["CustomerChange", "IdentityRef"]
