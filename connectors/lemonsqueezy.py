"""Lemon Squeezy: orders, subscriptions and subscription payments.

Docs: https://docs.lemonsqueezy.com/help/webhooks (events, signing),
https://docs.lemonsqueezy.com/help/webhooks/webhook-requests (headers, retries),
https://docs.lemonsqueezy.com/api/subscriptions/the-subscription-object (statuses and fields).

`X-Signature` is the hex HMAC-SHA256 of the raw body, keyed with the webhook's signing secret as
UTF-8. Lemon Squeezy signs no timestamp and sends no event id, so:

- **Event id** (deduplication): `ls_` + the first 40 hex digits of SHA-256 over
  `"<meta.event_name>\\n<data.type>\\n<data.id>\\n<data.attributes.updated_at>"`: one id per state
  of one object per event name. A redelivery (Lemon Squeezy retries three times, and the dashboard
  can resend) repeats all four and is acknowledged as a duplicate; a captured request replayed
  later is a duplicate too, which is the replay defence a signed timestamp would otherwise give.
- **Event time**: `data.attributes.updated_at`, the object's last change.

Every event carries the customer's `user_email`; `customer_id` (a number) becomes the identity
(`lemonsqueezy`, `"<id>"`). Subscriptions carry no price: a source maps variants to prices with
options `price.<variant id>=<minor units>/<interval>` (e.g. `price.84211=900/month`) so `mrr`
and `interval` can be computed; without one, `mrr` is written only as 0 for subscriptions that do
not bill. Options: `status.<subscription status>=<project status>`, `test_mode` (true/false:
events of the other mode are ignored).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar

from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
    option_flag,
)
from tributary.connectors.billing import (
    MONTHS_PER_UNIT,
    iso_z,
    monthly,
    round_minor,
    status_overrides,
    validate_status_option,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import (
    check_event_time,
    clean_email,
    load_object,
    mapping_at,
    parse_time,
    person_change,
    text_at,
)
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.verification import any_matches, hmac_digest

__all__ = ["DEFAULT_STATUS_MAP", "LemonSqueezyConnector", "derived_event_id", "subscription_params"]

DOCS = "https://docs.lemonsqueezy.com/help/webhooks"
SIGNATURE_HEADER = "x-signature"

# https://docs.lemonsqueezy.com/api/subscriptions/the-subscription-object (`status`) -> project status.
# `cancelled` is a subscription in its last paid period (it becomes `expired` at `ends_at`), like
# Stripe's cancel_at_period_end: still paid, with `cancel_at_period_end` true.
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "on_trial": "trial",
    "active": "paid",
    "paused": "free",
    "past_due": "past_due",
    "unpaid": "past_due",
    "cancelled": "paid",
    "expired": "churned",
}
MRR_STATUSES = frozenset({"active", "past_due", "cancelled"})

_PRICE = re.compile(r"^\s*(\d{1,12})\s*/\s*(?:(\d{1,3})\s+)?(day|week|month|year)s?\s*$")


def derived_event_id(event_name: str, data: Mapping[str, Any]) -> str:
    """Lemon Squeezy sends no event id: one derived from what identifies an event's content."""
    attributes = mapping_at(data, "attributes")
    parts = [event_name, str(data.get("type")), str(data.get("id")), str(attributes.get("updated_at"))]
    return "ls_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _identity(attributes: Mapping[str, Any]) -> IdentityRef | None:
    customer = attributes.get("customer_id")
    if isinstance(customer, int) and not isinstance(customer, bool) and customer > 0:
        return IdentityRef("lemonsqueezy", str(customer))
    return None


def _price(options: Mapping[str, Any], variant: Any) -> tuple[Fraction, str, int] | None:
    value = options.get(f"price.{variant}")
    match = _PRICE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    return Fraction(int(match.group(1))), match.group(3), int(match.group(2) or 1)


def _plan(attributes: Mapping[str, Any]) -> str | None:
    """The variant's name, unless it is the product's unnamed `Default` variant: then the product's."""
    variant, product = text_at(attributes, "variant_name"), text_at(attributes, "product_name")
    return variant if variant and variant.lower() != "default" else product or variant


def subscription_params(attributes: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """plan, mrr, interval, currency (from the source's options), subscription_status,
    current_period_end, cancel_at_period_end of a subscription object's attributes."""
    status = attributes.get("status")
    params: dict[str, Any] = {}
    if (plan := _plan(attributes)) is not None:
        params["plan"] = plan
    price = _price(options, attributes.get("variant_id"))
    billing = status in MRR_STATUSES
    if price is not None:
        amount, unit, count = price
        quantity = mapping_at(attributes, "first_subscription_item").get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            quantity = 1
        params["mrr"] = round_minor(monthly(amount, unit, count, quantity)) if billing else 0
        params["interval"] = unit
    elif not billing:
        params["mrr"] = 0
    if isinstance(currency := options.get("currency"), str):
        params["currency"] = currency
    if isinstance(status, str):
        params["subscription_status"] = status
    end = attributes.get("ends_at") or attributes.get("renews_at")
    if (moment := iso_z(end)) is not None:
        params["current_period_end"] = moment
    if isinstance(cancelled := attributes.get("cancelled"), bool):
        params["cancel_at_period_end"] = cancelled
    return params


def _person(envelope: Envelope, attributes: Mapping[str, Any], **fields: Any) -> CustomerChange:
    email = clean_email(attributes.get("user_email"))
    identity = _identity(attributes)
    if email is None and identity is None:
        raise EventIgnored("the Lemon Squeezy event names neither a user_email nor a customer_id")
    # `user_email` is the customer's address at the event time: with the customer id, an email
    # change of that identity (rename or merge), never a second customer.
    return person_change(envelope.occurred_at, email=email, identity=identity, **fields)


def _order(
    envelope: Envelope, attributes: Mapping[str, Any], options: Mapping[str, Any]
) -> list[CustomerChange]:
    """upsert: user_email, user_name, customer id as identity; `last_payment_at` when a paid order
    moved money, `last_refund_at` when it was refunded"""
    params: dict[str, Any] = {}
    total = attributes.get("total")
    if envelope.type == "order_refunded":
        params["last_refund_at"] = iso_z(attributes.get("refunded_at")) or iso_z(envelope.occurred_at)
    elif attributes.get("status") == "paid" and isinstance(total, int) and total > 0:
        params["last_payment_at"] = iso_z(attributes.get("created_at")) or iso_z(envelope.occurred_at)
    if isinstance(currency := attributes.get("currency"), str) and currency:
        params["currency"] = currency.lower()
    return [_person(envelope, attributes, name=text_at(attributes, "user_name"), params=params)]


def _subscription(
    envelope: Envelope, attributes: Mapping[str, Any], options: Mapping[str, Any]
) -> list[CustomerChange]:
    """status (mapped) and params plan, mrr and interval (with a `price.<variant id>` option),
    subscription_status, current_period_end, cancel_at_period_end; user_email, user_name"""
    status_map = {**DEFAULT_STATUS_MAP, **status_overrides(options)}
    ls_status = attributes.get("status")
    return [
        _person(
            envelope,
            attributes,
            name=text_at(attributes, "user_name"),
            status=status_map.get(ls_status) if isinstance(ls_status, str) else None,
            params=subscription_params(attributes, options),
        )
    ]


def _payment(
    envelope: Envelope, attributes: Mapping[str, Any], options: Mapping[str, Any]
) -> list[CustomerChange]:
    """params `last_payment_at` (success, recovered) or `last_payment_failed_at` (failed), and the
    invoice's currency; user_email, identity"""
    key = "last_payment_failed_at" if envelope.type == "subscription_payment_failed" else "last_payment_at"
    params: dict[str, Any] = {key: iso_z(envelope.occurred_at)}
    if isinstance(currency := attributes.get("currency"), str) and currency:
        params["currency"] = currency.lower()
    return [_person(envelope, attributes, params=params)]


Handler = Callable[[Envelope, Mapping[str, Any], Mapping[str, Any]], list[CustomerChange]]

# The executable mapping table: docs/connectors.md lists these (python -m connectors.doc).
_SUBSCRIPTION_EVENTS = ("created", "updated", "cancelled", "resumed", "expired", "paused", "unpaused")
HANDLERS: Mapping[str, Handler] = {
    "order_created": _order,
    "order_refunded": _order,
    **{f"subscription_{kind}": _subscription for kind in _SUBSCRIPTION_EVENTS},
    "subscription_payment_success": _payment,
    "subscription_payment_recovered": _payment,
    "subscription_payment_failed": _payment,
}


class LemonSqueezyConnector(Connector):
    name = "lemonsqueezy"
    title = "Lemon Squeezy orders, subscriptions and subscription payments"
    event_types: ClassVar[Mapping[str, str]] = describe_handlers(HANDLERS)
    stored_headers: ClassVar[tuple[str, ...]] = ("content-type", "user-agent", "x-event-name")

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        cleaned: dict[str, Any] = {}
        for key, value in options.items():
            if key.startswith("status."):
                cleaned[key] = validate_status_option(key, value, DEFAULT_STATUS_MAP)
            elif key.startswith("price."):
                variant = key.removeprefix("price.")
                if not variant.isdigit():
                    raise InvalidOptions(f"{key}: the variant id must be a number")
                if not isinstance(value, str) or _PRICE.match(value) is None:
                    raise InvalidOptions(
                        f"{key} must be `<minor units>/<interval>` with an interval among "
                        f"{', '.join(MONTHS_PER_UNIT)} (e.g. 900/month or 9000/year), got {value!r}"
                    )
                cleaned[key] = value.strip()
            elif key == "currency":
                if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value.strip()):
                    raise InvalidOptions(f"currency must be a three-letter ISO code, got {value!r}")
                cleaned[key] = value.strip().lower()
            elif key == "test_mode":
                cleaned[key] = option_flag(value, "test_mode")
            else:
                raise InvalidOptions(
                    f"unknown option {key!r}; the lemonsqueezy connector takes price.<variant id>, "
                    "currency, test_mode and status.<subscription status>"
                )
        return cleaned

    # -- web process ------------------------------------------------------------------------------

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        header = (request.headers.get(SIGNATURE_HEADER) or "").strip()
        if not header:
            raise VerificationFailed("missing X-Signature header")
        try:
            offered = bytes.fromhex(header)
        except ValueError:
            raise VerificationFailed("X-Signature is not a hex HMAC-SHA256") from None
        keys = [s for s in source.secrets if s]
        if not keys:
            raise VerificationFailed("the source has no signing secret yet")
        matched = False
        for key in keys:
            matched |= any_matches(hmac_digest("sha256", key.encode(), request.body), [offered])
        if not matched:
            raise VerificationFailed("X-Signature does not match the source's signing secret")

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        event_name = text_at(body, "meta", "event_name")
        data = body.get("data")
        if event_name is None or not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
            raise MalformedPayload("a Lemon Squeezy event needs meta.event_name and data.attributes")
        attributes = data["attributes"]
        stamp = attributes.get("updated_at") or attributes.get("created_at")
        occurred_at = check_event_time(parse_time(stamp, "data.attributes.updated_at"))
        email = clean_email(attributes.get("user_email"))
        return [Envelope(derived_event_id(event_name, data), event_name, occurred_at, body, email=email)]

    # -- worker -----------------------------------------------------------------------------------

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"Lemon Squeezy event {envelope.type!r} is not tracked (see {DOCS})")
        options = context.source.options
        test_mode = options.get("test_mode")
        event_test_mode = mapping_at(envelope.payload, "meta").get("test_mode")
        if isinstance(test_mode, bool) and isinstance(event_test_mode, bool) and test_mode != event_test_mode:
            raise EventIgnored(
                f"a {'test' if event_test_mode else 'live'}-mode event on a source configured with "
                f"test_mode={'true' if test_mode else 'false'}"
            )
        return handler(envelope, mapping_at(envelope.payload, "data", "attributes"), options)
