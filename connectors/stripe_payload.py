"""Reading a Stripe webhook delivery: the event JSON (no NaN or Infinity), its time, its
`data.object`, and the email the object itself states. Pure functions, no network."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connectors import safe_json
from connectors.base import MalformedPayload

__all__ = ["created_time", "data_object", "email_in", "load_event", "text"]


def load_event(body: bytes) -> dict[str, Any]:
    # Strict numbers (NaN, Infinity, 1e400: 400) and text without NUL or lone surrogates.
    try:
        event = safe_json.scrub(safe_json.loads(body))
    except (ValueError, RecursionError):
        raise MalformedPayload("the body is not a JSON document") from None
    if not isinstance(event, dict):
        raise MalformedPayload("a Stripe event is a JSON object")
    return event


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
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def email_in(event_type: str, obj: Mapping[str, Any]) -> str | None:
    """The email the object itself states, if any (`customer.*`, checkout, invoices)."""
    if event_type.startswith("customer.") and not event_type.startswith("customer.subscription."):
        return text(obj.get("email"))
    if event_type.startswith("checkout.session."):
        details = obj.get("customer_details")
        found = text(details.get("email")) if isinstance(details, Mapping) else None
        return found or text(obj.get("customer_email"))
    if event_type.startswith("invoice."):
        return text(obj.get("customer_email"))
    if event_type == "charge.refunded":
        details = obj.get("billing_details")
        found = text(details.get("email")) if isinstance(details, Mapping) else None
        return found or text(obj.get("receipt_email"))
    customer = obj.get("customer")
    return text(customer.get("email")) if isinstance(customer, Mapping) else None
