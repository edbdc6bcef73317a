"""Reading Stripe objects: subscription status and params, plan names, MRR, emails and ids.

Pure functions over the JSON of Stripe API objects (as delivered in `event.data.object`), written
against API version 2026-10-28 and tolerant of older shapes where fields moved:
`current_period_end` moved from the subscription to its items (2025-03-31), an invoice's
subscription moved under `parent.subscription_details` (2025-03-31), and legacy `plan` objects
stand in for prices on old subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from tributary.connectors.billing import MONTHS_PER_UNIT, monthly, round_minor
from tributary.connectors.fields import mapping_at

__all__ = [
    "DEFAULT_STATUS_MAP",
    "MRR_STATUSES",
    "SUBSCRIPTION_STATUSES",
    "customer_id",
    "monthly_amount",
    "net_of_discounts",
    "plan_name",
    "subscription_params",
    "timestamp_iso",
]

# https://docs.stripe.com/api/subscriptions/object#subscription_object-status -> project status
# (SPEC §7). Overridable per source with options `status.<stripe status>=<project status>`.
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "active": "paid",
    "trialing": "trial",
    "past_due": "past_due",
    "unpaid": "past_due",
    "canceled": "churned",
    "incomplete": "free",
    "incomplete_expired": "free",
    "paused": "free",
}
SUBSCRIPTION_STATUSES = frozenset(DEFAULT_STATUS_MAP)

# Statuses whose subscription is billing: the others (trials, canceled, never paid, paused) count
# zero towards MRR, as in Stripe's own billing analytics.
MRR_STATUSES = frozenset({"active", "past_due"})

_CUSTOMER_ID = re.compile(r"^cus_[0-9A-Za-z]{1,250}$")


def customer_id(value: Any) -> str | None:
    """A customer reference: an id string, or an expanded customer object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and _CUSTOMER_ID.match(value) else None


def timestamp_iso(value: Any) -> str | None:
    """Unix seconds to ISO 8601 UTC (`2026-12-01T00:00:00Z`), the API's time format in params."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _items(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = mapping_at(subscription.get("items")).get("data")
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _price(item: Mapping[str, Any]) -> Mapping[str, Any]:
    # Items carry a `price`; subscriptions created before prices existed only a `plan`.
    return mapping_at(item.get("price")) or mapping_at(item.get("plan"))


def plan_name(price: Mapping[str, Any]) -> str | None:
    """The price's lookup_key, else its nickname, else its product's name (when the product is
    expanded), else the price id."""
    for candidate in (
        price.get("lookup_key"),
        price.get("nickname"),
        mapping_at(price.get("product")).get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    price_id = price.get("id")
    return price_id if isinstance(price_id, str) and price_id else None


def _interval(price: Mapping[str, Any]) -> tuple[str | None, int]:
    recurring = mapping_at(price.get("recurring"))
    unit = recurring.get("interval", price.get("interval"))
    count = recurring.get("interval_count", price.get("interval_count")) or 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        count = 1
    return (unit if isinstance(unit, str) else None), count


def _unit_amount(price: Mapping[str, Any]) -> Fraction | None:
    amount = price.get("unit_amount", price.get("amount"))
    if isinstance(amount, int) and not isinstance(amount, bool):
        return Fraction(amount)
    decimal = price.get("unit_amount_decimal")
    if isinstance(decimal, str):
        try:
            return Fraction(Decimal(decimal))
        except (InvalidOperation, ValueError):
            return None
    return None  # tiered prices have no unit amount: their MRR is not knowable from the event


def monthly_amount(item: Mapping[str, Any]) -> Fraction:
    """One subscription item's recurring amount per month, in minor units (quantity times unit
    amount, normalized by interval and interval count). Metered and tiered items count zero."""
    price = _price(item)
    unit, count = _interval(price)
    amount = _unit_amount(price)
    if amount is None:
        return Fraction(0)
    if mapping_at(price.get("recurring")).get("usage_type", price.get("usage_type")) == "metered":
        return Fraction(0)
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        quantity = 1
    return monthly(amount, unit, count, quantity)


def _period_end(subscription: Mapping[str, Any]) -> str | None:
    ends: list[int] = [
        end
        for item in _items(subscription)
        if isinstance(end := item.get("current_period_end"), int) and not isinstance(end, bool)
    ]
    if ends:
        return timestamp_iso(max(ends))
    return timestamp_iso(subscription.get("current_period_end"))


def _discounts(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The subscription's discounts as objects: the legacy `discount`, and `discounts` entries
    when they are expanded (with API versions that send only ids they cannot be read here)."""
    found = [mapping_at(subscription.get("discount"))]
    listed = subscription.get("discounts")
    if isinstance(listed, list):
        found += [mapping_at(entry) for entry in listed]
    return [d for d in found if mapping_at(d.get("coupon"))]


def net_of_discounts(monthly_total: Fraction, subscription: Mapping[str, Any], months: Fraction) -> Fraction:
    """`monthly_total` after the subscription's coupons: `percent_off` takes its share,
    `amount_off` (per invoice, in the subscription's currency) its monthly equivalent
    (`months` per billing period). Never below zero."""
    total = monthly_total
    for discount in _discounts(subscription):
        coupon = mapping_at(discount.get("coupon"))
        percent = coupon.get("percent_off")
        amount = coupon.get("amount_off")
        if isinstance(percent, int | float) and not isinstance(percent, bool) and 0 < percent <= 100:
            total -= total * Fraction(str(percent)) / 100
        elif isinstance(amount, int) and not isinstance(amount, bool) and amount > 0 and months > 0:
            total -= Fraction(amount) / months
    return max(total, Fraction(0))


def subscription_params(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """The params a subscription snapshot sets: plan, mrr, currency, interval,
    subscription_status, current_period_end, cancel_at_period_end (absent values are left out)."""
    items = _items(subscription)
    status = subscription.get("status")
    first = _price(items[0]) if items else {}
    params: dict[str, Any] = {}
    if (plan := plan_name(first)) is not None:
        params["plan"] = plan
    billing = status in MRR_STATUSES
    total = sum((monthly_amount(i) for i in items), Fraction(0))
    unit, count = _interval(first)
    months = MONTHS_PER_UNIT.get(unit, Fraction(0)) * count if unit is not None else Fraction(0)
    total = net_of_discounts(total, subscription, months)
    params["mrr"] = round_minor(total) if billing else 0
    currency = subscription.get("currency") or first.get("currency")
    if isinstance(currency, str) and currency:
        params["currency"] = currency.lower()
    if unit is not None:
        params["interval"] = unit
    if isinstance(status, str):
        params["subscription_status"] = status
    if (end := _period_end(subscription)) is not None:
        params["current_period_end"] = end
    if isinstance(subscription.get("cancel_at_period_end"), bool):
        params["cancel_at_period_end"] = subscription["cancel_at_period_end"]
    return params
