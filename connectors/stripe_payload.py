"""Reading a Stripe webhook delivery: its time, its `data.object`, and the email the object itself
states. Pure functions, no network; the generic readers are connectors/fields.py's."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tributary.connectors.base import MalformedPayload
from tributary.connectors.fields import mapping_at, text_at

__all__ = ["created_time", "data_object", "email_in"]


def created_time(value: Any) -> datetime:
    """`created`: Unix seconds (v1 events) or ISO 8601 (v2 thin events)."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (OverflowError, OSError, ValueError):
        pass
    raise MalformedPayload("the event's `created` is not a timestamp")


def data_object(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping_at(payload, "data", "object")


def email_in(event_type: str, obj: Mapping[str, Any]) -> str | None:
    """The email the object itself states, if any (`customer.*`, checkout, invoices)."""
    if event_type.startswith("customer.") and not event_type.startswith("customer.subscription."):
        return text_at(obj, "email")
    if event_type.startswith("checkout.session."):
        return text_at(obj, "customer_details", "email") or text_at(obj, "customer_email")
    if event_type.startswith("invoice."):
        return text_at(obj, "customer_email")
    if event_type == "charge.refunded":
        return text_at(obj, "billing_details", "email") or text_at(obj, "receipt_email")
    return text_at(obj, "customer", "email")
