"""Shared reading of billing providers' subscriptions (Paddle, Lemon Squeezy): status mapping
options, monthly amounts and the time format of params. Pure functions, no network.

Every billing connector maps its provider's subscription statuses to project statuses with a
default table that a source can override per status (`status.<provider status>=<project status>`),
and writes the same params as Stripe's (SPEC §7): `plan`, `mrr` (monthly, minor units, 0 unless
the subscription is billing), `currency` (lower case), `interval`, `subscription_status`,
`current_period_end`, `cancel_at_period_end`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from fractions import Fraction
from typing import Any

from tributary.connectors.base import InvalidOptions, MalformedPayload
from tributary.connectors.fields import parse_time

__all__ = [
    "MONTHS_PER_UNIT",
    "iso_z",
    "monthly",
    "round_minor",
    "status_overrides",
    "validate_status_option",
]

# Average month length of each billing interval unit.
MONTHS_PER_UNIT: Mapping[str, Fraction] = {
    "day": Fraction(12, 365),
    "week": Fraction(12, 52),
    "month": Fraction(1),
    "year": Fraction(12),
}

_STATUS_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def validate_status_option(key: str, value: Any, statuses: Collection[str]) -> str:
    """Check one `status.<provider status>` option and return its value."""
    provider_status = key.removeprefix("status.")
    if provider_status not in statuses:
        raise InvalidOptions(
            f"{key}: {provider_status!r} is not a subscription status ({', '.join(sorted(statuses))})"
        )
    if not isinstance(value, str) or not _STATUS_SLUG.match(value):
        raise InvalidOptions(f"{key} must be a status slug such as paid, got {value!r}")
    return value


def status_overrides(options: Mapping[str, Any]) -> dict[str, str]:
    return {k.removeprefix("status."): v for k, v in options.items() if k.startswith("status.")}


def monthly(amount: Fraction, unit: str | None, count: int = 1, quantity: int = 1) -> Fraction:
    """A recurring amount per month; zero for an interval unit we do not know."""
    months = MONTHS_PER_UNIT.get(unit) if unit is not None else None
    if months is None or count < 1:
        return Fraction(0)
    return amount * quantity / (months * count)


def round_minor(total: Fraction) -> int:
    """Half-up rounding to whole minor units (round() would round half to even)."""
    return math.floor(total + Fraction(1, 2))


def iso_z(value: Any) -> str | None:
    """A provider time as the API's format (`2026-12-01T00:00:00Z`), or None if it is not one."""
    if value is None:
        return None
    try:
        moment = value if isinstance(value, datetime) else parse_time(value)
    except MalformedPayload:
        return None
    return moment.isoformat().replace("+00:00", "Z")
