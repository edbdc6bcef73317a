"""Source options for reading a provider's user list (`tributary import <connector>`): `api_key`
and `api_url`. Shared by the auth-provider connectors, whose webhooks need neither."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from tributary.connectors.base import InvalidOptions

__all__ = ["API_OPTIONS", "validate_api_options"]

API_OPTIONS = frozenset({"api_key", "api_url"})


def validate_api_options(connector: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check `api_key` (a non-empty secret) and `api_url` (an http(s) base URL) if present."""
    cleaned: dict[str, Any] = {}
    if "api_key" in options:
        key = options["api_key"]
        if not isinstance(key, str) or not key.strip() or len(key) > 2048 or any(c in key for c in "\r\n"):
            raise InvalidOptions(f"api_key must be the {connector} secret key (one line of text)")
        cleaned["api_key"] = key.strip()
    if "api_url" in options:
        url = options["api_url"]
        parsed = urlparse(url.strip()) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidOptions("api_url must be an http(s) URL such as https://api.example.com")
        cleaned["api_url"] = url.strip().rstrip("/")
    return cleaned
