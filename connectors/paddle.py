"""Paddle Billing: customers, subscriptions and transactions.

Docs: https://developer.paddle.com/webhooks/about/signature-verification (verification),
https://developer.paddle.com/webhooks (event catalogue), https://developer.paddle.com/api-reference/subscriptions/overview
(the subscription entity). Paddle Classic (form-encoded `p_signature` alerts) is not supported.

`Paddle-Signature: ts=<unix seconds>;h1=<hex>`: the hex is HMAC-SHA256, keyed with the
notification destination's secret key (`pdl_ntfset_…`) as UTF-8, over `"<ts>:<raw body>"`. During
a secret rotation Paddle sends several `h1=`; any may match. `ts` must be within ±300 s (SPEC §7).

A delivery is one event: `event_id` (`evt_…`) deduplicates, `occurred_at` orders writes. Customer
ids (`ctm_…`) become identities; subscription and transaction events carry only the customer id,
so they resolve through it (and wait as `deferred` while no customer event has named the person).
Paddle never deletes customers; a subscription ends with `subscription.canceled`.

Source options: `status.<subscription status>=<project status>` overrides the default mapping.
"""

from __future__ import annotations

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
    check_timestamp,
)
from tributary.connectors.billing import (
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
from tributary.connectors.verification import any_matches, hmac_digest, keyed_signature_header

__all__ = ["DEFAULT_STATUS_MAP", "PaddleConnector", "paddle_signature_parts", "subscription_params"]

DOCS = "https://developer.paddle.com/webhooks"
SIGNATURE_HEADER = "paddle-signature"

# https://developer.paddle.com/api-reference/subscriptions/overview (`status`) -> project status.
DEFAULT_STATUS_MAP: Mapping[str, str] = {
    "active": "paid",
    "trialing": "trial",
    "past_due": "past_due",
    "paused": "free",
    "canceled": "churned",
}
# Subscriptions that bill count towards MRR; trials, paused and canceled ones count zero.
MRR_STATUSES = frozenset({"active", "past_due"})

_CUSTOMER_ID = re.compile(r"^ctm_[0-9a-z]{1,64}$")


def paddle_signature_parts(header: str) -> tuple[str, list[str]]:
    """`ts=<s>;h1=<hex>[;h1=<hex>…]` -> (ts, [hex…])."""
    return keyed_signature_header(header, ";", "ts", "h1")


def _customer_identity(value: Any) -> IdentityRef | None:
    return IdentityRef("paddle", value) if isinstance(value, str) and _CUSTOMER_ID.match(value) else None


def _int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def _amount(price: Mapping[str, Any]) -> Fraction | None:
    """`unit_price.amount` is a string of minor units ("3000" is $30.00)."""
    amount = mapping_at(price, "unit_price").get("amount")
    if isinstance(amount, str) and amount.strip().isdigit():
        return Fraction(int(amount.strip()))
    if isinstance(amount, int) and not isinstance(amount, bool):
        return Fraction(amount)
    return None


def _items(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = subscription.get("items")
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _plan(item: Mapping[str, Any]) -> str | None:
    """The price's name, else its product's name, else the price's description, else its id."""
    price = mapping_at(item, "price")
    for candidate in (
        price.get("name"),
        mapping_at(item, "product").get("name"),
        price.get("description"),
        price.get("id"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def subscription_params(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """plan, mrr, currency, interval, subscription_status, current_period_end and
    cancel_at_period_end of a Paddle subscription entity (absent values are left out)."""
    items = _items(subscription)
    status = subscription.get("status")
    params: dict[str, Any] = {}
    if items and (plan := _plan(items[0])) is not None:
        params["plan"] = plan
    total = Fraction(0)
    for item in items:
        price = mapping_at(item, "price")
        cycle = mapping_at(price, "billing_cycle")
        amount = _amount(price)
        if amount is None or not cycle:  # a one-time charge on the subscription is not recurring
            continue
        unit = cycle.get("interval")
        total += monthly(
            amount,
            unit if isinstance(unit, str) else None,
            _int(cycle.get("frequency"), 1),
            _int(item.get("quantity"), 1),
        )
    params["mrr"] = round_minor(total) if status in MRR_STATUSES else 0
    currency = subscription.get("currency_code")
    if isinstance(currency, str) and currency:
        params["currency"] = currency.lower()
    interval = mapping_at(subscription, "billing_cycle").get("interval")
    if isinstance(interval, str):
        params["interval"] = interval
    if isinstance(status, str):
        params["subscription_status"] = status
    if (end := iso_z(mapping_at(subscription, "current_billing_period").get("ends_at"))) is not None:
        params["current_period_end"] = end
    scheduled = mapping_at(subscription, "scheduled_change")
    params["cancel_at_period_end"] = scheduled.get("action") == "cancel"
    return params


def _customer(envelope: Envelope, data: Mapping[str, Any], context: NormalizeContext) -> list[CustomerChange]:
    """upsert: email and name; the Paddle customer id (`ctm_…`) linked as identity; a changed
    email renames (or merges) the person"""
    identity = _customer_identity(data.get("id"))
    email = clean_email(data.get("email"))
    if identity is None or email is None:
        raise EventIgnored("the Paddle customer has no ctm_ id or no email")
    return [person_change(envelope.occurred_at, email=email, identity=identity, name=text_at(data, "name"))]


def _subscription(
    envelope: Envelope, data: Mapping[str, Any], context: NormalizeContext
) -> list[CustomerChange]:
    """status (mapped) and params plan, mrr, currency, interval, subscription_status,
    current_period_end, cancel_at_period_end"""
    identity = _customer_identity(data.get("customer_id"))
    if identity is None:
        raise EventIgnored("the subscription names no ctm_ customer")
    status_map = {**DEFAULT_STATUS_MAP, **status_overrides(context.source.options)}
    paddle_status = data.get("status")
    return [
        CustomerChange(
            occurred_at=envelope.occurred_at,
            email=None,
            identity=identity,
            status=status_map.get(paddle_status) if isinstance(paddle_status, str) else None,
            params=subscription_params(data),
        )
    ]


def _transaction(
    envelope: Envelope, data: Mapping[str, Any], context: NormalizeContext
) -> list[CustomerChange]:
    """params: `last_payment_at` (completed) or `last_payment_failed_at` (payment failed)"""
    identity = _customer_identity(data.get("customer_id"))
    if identity is None:
        raise EventIgnored("the transaction names no ctm_ customer yet")
    key = "last_payment_failed_at" if envelope.type == "transaction.payment_failed" else "last_payment_at"
    when = iso_z(data.get("billed_at")) if key == "last_payment_at" else None
    return [
        CustomerChange(
            occurred_at=envelope.occurred_at,
            email=None,
            identity=identity,
            params={key: when or iso_z(envelope.occurred_at)},
        )
    ]


Handler = Callable[[Envelope, Mapping[str, Any], NormalizeContext], list[CustomerChange]]

# The executable mapping table: docs/connectors.md lists these (python -m connectors.doc).
_SUBSCRIPTION_EVENTS = (
    "created",
    "updated",
    "activated",
    "trialing",
    "past_due",
    "paused",
    "resumed",
    "canceled",
)
HANDLERS: Mapping[str, Handler] = {
    "customer.created": _customer,
    "customer.updated": _customer,
    **{f"subscription.{kind}": _subscription for kind in _SUBSCRIPTION_EVENTS},
    "transaction.completed": _transaction,
    "transaction.payment_failed": _transaction,
}


class PaddleConnector(Connector):
    name = "paddle"
    title = "Paddle Billing customers, subscriptions and transactions"
    event_types: ClassVar[Mapping[str, str]] = describe_handlers(HANDLERS)
    stored_headers: ClassVar[tuple[str, ...]] = ("content-type", "user-agent")

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        cleaned: dict[str, Any] = {}
        for key, value in options.items():
            if not key.startswith("status."):
                raise InvalidOptions(
                    f"unknown option {key!r}; the paddle connector takes status.<subscription status>"
                )
            cleaned[key] = validate_status_option(key, value, DEFAULT_STATUS_MAP)
        return cleaned

    # -- web process ------------------------------------------------------------------------------

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise VerificationFailed("missing Paddle-Signature header")
        timestamp, signatures = paddle_signature_parts(header)
        if not timestamp.isdigit() or len(timestamp) > 12 or not signatures:
            raise VerificationFailed("Paddle-Signature must look like `ts=<seconds>;h1=<hex>`")
        check_timestamp(int(timestamp))
        keys = [s for s in source.secrets if s]
        if not keys:
            raise VerificationFailed(
                "the source has no secret key yet: add the destination's pdl_ntfset_… key"
            )
        offered: list[bytes] = []
        for signature in signatures:
            try:
                offered.append(bytes.fromhex(signature))
            except ValueError:
                continue
        message = timestamp.encode() + b":" + request.body
        matched = False
        for key in keys:
            matched |= any_matches(hmac_digest("sha256", key.encode(), message), offered)
        if not matched:
            raise VerificationFailed("Paddle-Signature does not match the source's secret key")

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        event_id, event_type = text_at(body, "event_id"), text_at(body, "event_type")
        data = body.get("data")
        if event_id is None or event_type is None or not isinstance(data, dict):
            raise MalformedPayload("a Paddle event needs `event_id`, `event_type` and an object `data`")
        if len(event_id) > 255:
            raise MalformedPayload("the event_id is longer than 255 characters")
        occurred_at = check_event_time(parse_time(body.get("occurred_at"), "occurred_at"))
        email = clean_email(data.get("email")) if event_type.startswith("customer.") else None
        return [Envelope(event_id, event_type, occurred_at, body, email=email)]

    # -- worker -----------------------------------------------------------------------------------

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"Paddle event {envelope.type!r} is not tracked (see {DOCS})")
        data = envelope.payload.get("data")
        if not isinstance(data, Mapping):
            raise MalformedPayload("the stored Paddle event has no data object")
        return handler(envelope, data, context)
