"""Stripe: customers, checkout, subscriptions and invoices.

Signatures are checked by the `stripe` library (`Stripe-Signature: t=…,v1=…`, 300 s tolerance) on
the raw body; the library accepts future timestamps, so those are checked here too. A delivery is
one event; its `created` (Unix seconds) is the event time that orders writes, so a late, older
`customer.subscription.updated` never undoes a newer `customer.subscription.deleted`.

Subscription events carry no email. The worker finds the person through the Stripe customer id
(an identity linked by any earlier event that had an email), else asks Stripe's API with the
source's `api_key` option (`Customer.retrieve`). If neither knows, the event waits as `deferred`
and is applied as soon as an event with the email arrives (workers/deferred.py). A deleted
customer's identity keeps routing its events, however late, to the person it belonged to.

Source options: `api_key` (sk_… or rk_…, for email lookups), `livemode` (true/false: events from
the other mode are ignored), `status.<subscription status>=<project status>` (override the
default status mapping of SPEC §7, e.g. `status.past_due=paid`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import stripe

# Bound once: the stripe package resolves each top-level name lazily, through `importlib` on every
# access (a webhook's check paid that lookup per request).
from stripe import SignatureVerificationError, WebhookSignature

from tributary.connectors.base import (
    TIMESTAMP_TOLERANCE_SECONDS,
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
    check_timestamp,
)
from tributary.connectors.billing import status_overrides
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import load_object, mapping_at, text_at
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.stripe_client import CustomerLookupFailed, client_for, set_client_factory
from tributary.connectors.stripe_mapping import (
    DEFAULT_STATUS_MAP,
    customer_id,
    subscription_params,
    timestamp_iso,
)
from tributary.connectors.stripe_options import validate_stripe_options
from tributary.connectors.stripe_payload import created_time, data_object, email_in

__all__ = ["CustomerLookupFailed", "StripeConnector", "client_for", "set_client_factory"]


class StripeConnector(Connector):
    name = "stripe"
    title = "Stripe customers, checkout, subscriptions and invoices"
    # The mapping table is `HANDLERS` below (https://docs.stripe.com/api/events/types); what each
    # event does is its handler's docstring, listed in docs/connectors.md by `python -m connectors.doc`.
    stored_headers: ClassVar[tuple[str, ...]] = ("content-type", "user-agent")
    secret_options: ClassVar[frozenset[str]] = frozenset({"api_key"})

    # -- sources ----------------------------------------------------------------------------------

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return validate_stripe_options(options)

    # -- web process ------------------------------------------------------------------------------

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        header = request.headers.get("stripe-signature")
        if not header:
            raise VerificationFailed("missing Stripe-Signature header")
        if not source.secrets:
            raise VerificationFailed(
                "the source has no signing secret yet: add the endpoint's whsec_… secret"
            )
        try:
            payload = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationFailed("the body is not UTF-8, so it cannot be what Stripe signed") from None
        timestamp = re.search(r"(?:^|,)\s*t=(\d{1,12})(?:,|$)", header)
        if timestamp is None:
            raise VerificationFailed("Stripe-Signature has no timestamp")
        reason = "no signature matches"
        for secret in source.secrets:
            try:
                WebhookSignature.verify_header(payload, header, secret, tolerance=TIMESTAMP_TOLERANCE_SECONDS)
            except SignatureVerificationError as exc:
                reason = str(exc.user_message or exc)
                continue
            # The library rejects only old timestamps; a future one is as much a replay risk.
            check_timestamp(int(timestamp.group(1)))
            return
        raise VerificationFailed(f"Stripe signature rejected: {reason}")

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        event = load_object(request.body)
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedPayload("the event has no id")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedPayload("the event has no type")
        occurred_at = created_time(event.get("created"))
        if event.get("object") == "event" and not data_object(event):
            raise MalformedPayload("the event has no data.object")
        email = email_in(event_type, data_object(event))
        return [Envelope(event_id, event_type, occurred_at, event, email=email)]

    # -- worker -----------------------------------------------------------------------------------

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"stripe event type {envelope.type!r} is not tracked")
        livemode = context.source.options.get("livemode")
        event_livemode = envelope.payload.get("livemode")
        if isinstance(livemode, bool) and isinstance(event_livemode, bool) and livemode != event_livemode:
            raise EventIgnored(
                f"a {'live' if event_livemode else 'test'}-mode event on a source configured with "
                f"livemode={'true' if livemode else 'false'}"
            )
        return handler(self, envelope, data_object(envelope.payload), context)

    def _identity(self, obj: Mapping[str, Any], field: str = "customer") -> IdentityRef | None:
        found = customer_id(obj.get(field))
        return IdentityRef(self.name, found) if found else None

    def _email_for(self, identity: IdentityRef, context: NormalizeContext) -> str | None:
        """An email for an event that names only the customer id: None when the id is linked
        already (the worker resolves through the link; an address read back from our own table
        asserts nothing new, and must not link a deleted id again when the batch that deletes it
        is the one applying this event), else Stripe's answer (with the source's `api_key`), else
        None: the worker resolves through the identity or its tombstone, or the event waits."""
        if context.email_for(identity):
            return None
        api_key = context.source.options.get("api_key")
        if not isinstance(api_key, str):
            return None
        try:
            customer = client_for(api_key).v1.customers.retrieve(identity.external_id)
        except stripe.StripeError as exc:
            raise CustomerLookupFailed(
                f"looking up stripe customer {identity.external_id} for its email failed: "
                f"{type(exc).__name__}: {exc.user_message or exc}"
            ) from None
        # A deleted customer comes back as {"id", "deleted": true}, without an email.
        if getattr(customer, "deleted", False):
            return None
        return text_at(getattr(customer, "email", None))

    def _customer(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """upsert: email, name; the Stripe customer id linked as identity; an email changed in
        `previous_attributes` is an email change of the identity (rename or merge)"""
        identity = self._identity(obj, "id")
        email = text_at(obj, "email")
        if identity is None:
            raise EventIgnored("the customer object has no cus_ id")
        if email is None:
            raise EventIgnored(f"stripe customer {identity.external_id} has no email")
        old_email = text_at(envelope.payload, "data", "previous_attributes", "email")
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at,
                email=email,
                identity=identity,
                name=text_at(obj, "name"),
                email_change=old_email is not None and old_email.lower() != email.lower(),
            )
        ]

    def _customer_deleted(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """identity removal (the person is kept); later events about the id, such as the
        cancellations of Stripe's deletion cascade, still reach the person"""
        identity = self._identity(obj, "id")
        if identity is None:
            raise EventIgnored("the deleted customer object has no cus_ id")
        # Identity only, even when the object still shows an email: a deletion must never create
        # a person. If the link is not known yet (the deletion overtook the customer's creation),
        # the worker deals with it in event-time order rather than this event being dropped.
        return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, forget_identity=True)]

    def _checkout(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """upsert: customer_details.email (else customer_email), name, identity; activity"""
        identity = self._identity(obj)
        email = envelope.email or email_in(envelope.type, obj)
        if email is None and identity is not None:
            email = self._email_for(identity, context)
        if email is None and identity is None:
            raise EventIgnored("the checkout session names neither an email nor a customer")
        name = text_at(obj, "customer_details", "name")
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at, email=email, identity=identity, name=name, activity=True
            )
        ]

    def _subscription(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """status: `active` → paid, `trialing` → trial, `past_due`/`unpaid` → past_due, `canceled` →
        churned, `incomplete`/`incomplete_expired`/`paused` → free (a source's `status.<stripe
        status>` options override these); params `plan` (price lookup_key, else nickname, else
        product name, else price id), `mrr` (minor units per month over all items, net of expanded
        discounts, 0 unless active or past_due), `currency`, `interval`, `subscription_status`,
        `current_period_end`, `cancel_at_period_end`"""
        identity = self._identity(obj)
        if identity is None:
            raise EventIgnored("the subscription names no customer")
        email = email_in(envelope.type, obj) or self._email_for(identity, context)
        status_map = {**DEFAULT_STATUS_MAP, **status_overrides(context.source.options)}
        stripe_status = obj.get("status")
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at,
                email=email,
                identity=identity,
                # A status Stripe adds later maps to nothing: params still record it.
                status=status_map.get(stripe_status) if isinstance(stripe_status, str) else None,
                params=subscription_params(obj),
            )
        ]

    def _invoice(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """upsert: customer_email, customer_name, identity; params `last_payment_at` (paid, when
        money moved: not for a trial's $0 invoice), `last_payment_failed_at` (payment failed) or
        `last_payment_action_required_at` (the customer must authenticate the payment)"""
        identity = self._identity(obj)
        email = email_in(envelope.type, obj)
        if email is None and identity is not None:
            email = self._email_for(identity, context)
        if email is None and identity is None:
            raise EventIgnored("the invoice names neither an email nor a customer")
        params: dict[str, Any] = {}
        if envelope.type == "invoice.paid":
            amount = obj.get("amount_paid")
            # A trial's $0 invoice is "paid" too, but no payment happened.
            if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
                paid_at = mapping_at(obj, "status_transitions").get("paid_at")
                params["last_payment_at"] = timestamp_iso(paid_at) or timestamp_iso(
                    envelope.payload.get("created")
                )
        elif envelope.type == "invoice.payment_action_required":
            params["last_payment_action_required_at"] = timestamp_iso(envelope.payload.get("created"))
        else:
            params["last_payment_failed_at"] = timestamp_iso(envelope.payload.get("created"))
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at,
                email=email,
                identity=identity,
                # Stripe copies the customer's name onto the invoice when it finalizes it; for a
                # customer created without one (a checkout that only collected billing details)
                # it is the only name there is.
                name=text_at(obj, "customer_name"),
                params={k: v for k, v in params.items() if v is not None},
            )
        ]

    def _charge_refunded(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """params `last_refund_at` and `refunded_amount` (minor units, the charge's total
        refunded so far); billing_details.email (else receipt_email), identity"""
        identity = self._identity(obj)
        email = email_in(envelope.type, obj)
        if email is None and identity is not None:
            email = self._email_for(identity, context)
        if email is None and identity is None:
            raise EventIgnored("the refunded charge names neither an email nor a customer")
        params: dict[str, Any] = {"last_refund_at": timestamp_iso(envelope.payload.get("created"))}
        refunded = obj.get("amount_refunded")
        if isinstance(refunded, int) and not isinstance(refunded, bool):
            params["refunded_amount"] = refunded
        return [
            CustomerChange(occurred_at=envelope.occurred_at, email=email, identity=identity, params=params)
        ]

    def _dispute(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """params `dispute_status` (the dispute's status: needs_response, won, lost, …) and, when
        opened, `last_dispute_at`; the person from evidence.customer_email_address, else the
        disputed charge's customer (looked up with the source's `api_key`)"""
        email = text_at(obj, "evidence", "customer_email_address")
        identity: IdentityRef | None = None
        charge_id = obj.get("charge")
        if isinstance(charge_id, Mapping):
            identity = self._identity(charge_id)
            charge_id = charge_id.get("id")
        api_key = context.source.options.get("api_key")
        if email is None and identity is None and isinstance(charge_id, str) and isinstance(api_key, str):
            try:
                charge = client_for(api_key).v1.charges.retrieve(charge_id)
            except stripe.StripeError as exc:
                raise CustomerLookupFailed(
                    f"looking up charge {charge_id} of a dispute failed: {type(exc).__name__}: "
                    f"{exc.user_message or exc}"
                ) from None
            found = customer_id(getattr(charge, "customer", None))
            identity = IdentityRef(self.name, found) if found else None
        if email is None and identity is None:
            raise EventIgnored(
                "the dispute names no customer: Stripe disputes carry only the charge id; give the "
                "source an api_key so the charge's customer can be looked up"
            )
        if email is None and identity is not None:
            email = self._email_for(identity, context)
        params: dict[str, Any] = {}
        if isinstance(status := obj.get("status"), str):
            params["dispute_status"] = status
        if envelope.type == "charge.dispute.created":
            params["last_dispute_at"] = timestamp_iso(envelope.payload.get("created"))
        return [
            CustomerChange(occurred_at=envelope.occurred_at, email=email, identity=identity, params=params)
        ]

    def _discount(
        self, envelope: Envelope, obj: Mapping[str, Any], context: NormalizeContext
    ) -> list[CustomerChange]:
        """params `discount` (the coupon's name, else id), `discount_percent_off` or
        `discount_amount_off`, `discount_end`; removed again by `customer.discount.deleted`.
        The subscription events Stripe sends with them carry the net mrr"""
        identity = self._identity(obj)
        if identity is None:
            raise EventIgnored("the discount names no customer")
        email = self._email_for(identity, context)
        keys = ("discount", "discount_percent_off", "discount_amount_off", "discount_end")
        if envelope.type == "customer.discount.deleted":
            return [
                CustomerChange(
                    occurred_at=envelope.occurred_at, email=email, identity=identity, params_unset=keys
                )
            ]
        coupon = mapping_at(obj, "coupon")
        params: dict[str, Any] = {"discount": text_at(coupon, "name") or text_at(coupon, "id")}
        percent, amount = coupon.get("percent_off"), coupon.get("amount_off")
        if isinstance(percent, int | float) and not isinstance(percent, bool):
            params["discount_percent_off"] = percent
        if isinstance(amount, int) and not isinstance(amount, bool):
            params["discount_amount_off"] = amount
        params["discount_end"] = timestamp_iso(obj.get("end"))
        present = {k: v for k, v in params.items() if v is not None}
        absent = tuple(k for k in keys if k not in present)
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at,
                email=email,
                identity=identity,
                params=present,
                params_unset=absent,
            )
        ]


Handler = Callable[[StripeConnector, Envelope, Mapping[str, Any], NormalizeContext], list[CustomerChange]]

_SUBSCRIPTION_EVENTS = ("created", "updated", "deleted", "paused", "resumed", "trial_will_end")
HANDLERS: dict[str, Handler] = {
    "customer.created": StripeConnector._customer,
    "customer.updated": StripeConnector._customer,
    "customer.deleted": StripeConnector._customer_deleted,
    "checkout.session.completed": StripeConnector._checkout,
    **{f"customer.subscription.{kind}": StripeConnector._subscription for kind in _SUBSCRIPTION_EVENTS},
    "invoice.paid": StripeConnector._invoice,
    "invoice.payment_failed": StripeConnector._invoice,
    "invoice.payment_action_required": StripeConnector._invoice,
    "charge.refunded": StripeConnector._charge_refunded,
    "charge.dispute.created": StripeConnector._dispute,
    "charge.dispute.closed": StripeConnector._dispute,
    "customer.discount.created": StripeConnector._discount,
    "customer.discount.deleted": StripeConnector._discount,
}
StripeConnector.event_types = describe_handlers(HANDLERS)
