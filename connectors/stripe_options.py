"""The Stripe connector's source options: `api_key` (for lookups), `livemode`, and
`status.<subscription status>` overrides of the default status mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tributary.connectors.base import InvalidOptions, option_flag
from tributary.connectors.billing import validate_status_option
from tributary.connectors.stripe_mapping import SUBSCRIPTION_STATUSES

__all__ = ["validate_stripe_options"]

_API_KEY = re.compile(r"^(sk|rk)_(test|live)_[0-9A-Za-z_]{8,247}$")
_API_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")


def _api_key_problem(value: object) -> str:
    """What is wrong with an `api_key` option, without echoing the key."""
    rule = "api_key must be a Stripe secret or restricted key: sk_test_, sk_live_, rk_test_ or rk_live_"
    if not isinstance(value, str):
        return f"{rule} followed by 8 to 247 letters, digits or underscores (got a {type(value).__name__})"
    stripped = value.strip()
    prefix = next((p for p in _API_KEY_PREFIXES if stripped.startswith(p)), None)
    if prefix is None:
        return f"{rule}, then 8 to 247 letters, digits or underscores; this value has none of those prefixes"
    rest = stripped.removeprefix(prefix)
    if len(rest) < 8:
        return f"api_key is too short: {len(rest)} characters after {prefix!r}, at least 8 are needed"
    if len(rest) > 247:
        return f"api_key is too long: {len(rest)} characters after {prefix!r}, at most 247"
    return f"api_key may only hold letters, digits and underscores after {prefix!r}"


def validate_stripe_options(options: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in options.items():
        if key == "api_key":
            if not isinstance(value, str) or not _API_KEY.match(value.strip()):
                raise InvalidOptions(_api_key_problem(value))
            cleaned[key] = value.strip()
        elif key == "livemode":
            cleaned[key] = option_flag(value, "livemode")
        elif key.startswith("status."):
            cleaned[key] = validate_status_option(key, value, SUBSCRIPTION_STATUSES)
        else:
            raise InvalidOptions(
                f"unknown option {key!r}; the stripe connector takes api_key, livemode and "
                "status.<subscription status>"
            )
    api_key, livemode = cleaned.get("api_key"), cleaned.get("livemode")
    if api_key is not None and livemode is not None and ("_live_" in api_key) != livemode:
        raise InvalidOptions(
            f"api_key is a {'live' if '_live_' in api_key else 'test'} key but livemode is {livemode}"
        )
    return cleaned
