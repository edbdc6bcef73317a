"""Clerk's executable mapping table: `{event type: handler}`, each handler's docstring saying what
Tributary does with the event (docs/connectors.md lists them, `python -m tributary.connectors.doc`).

Payloads: https://clerk.com/docs/guides/development/webhooks/syncing (users, sessions),
https://clerk.com/docs/guides/development/webhooks/billing (Clerk Billing: subscriptions, their
items, payment attempts), https://clerk.com/docs/reference/backend/types/backend-organization-membership
and the waitlist's `waitlistEntry.created`. Billing payloads name the paying user in `payer`
(`user_id`, `email`, names); a subscription billed to an organization has no person and is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from tributary.connectors.base import Envelope, EventIgnored
from tributary.connectors.billing import iso_z, monthly, round_minor
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import clean_email, full_name, mapping_at, person_change, text_at

__all__ = ["HANDLERS", "primary_email"]

SIGNUP_STATUS = "free"
WAITLIST_STATUS = "waitlist"
NAME = "clerk"

# A Clerk Billing item's status -> project status. `canceled` keeps its plan to the period's end.
ITEM_STATUS_MAP: Mapping[str, str] = {
    "active": "paid",
    "canceled": "paid",
    "past_due": "past_due",
    "ended": "churned",
}
_INTERVALS = {"month": "month", "annual": "year", "year": "year"}


def primary_email(user: Mapping[str, Any]) -> str | None:
    """The address whose id is `primary_email_address_id` (Clerk users may have several)."""
    primary_id = user.get("primary_email_address_id")
    addresses = user.get("email_addresses")
    if not isinstance(addresses, list):
        return None
    for address in addresses:
        if isinstance(address, Mapping) and address.get("id") == primary_id and primary_id:
            return clean_email(address.get("email_address"))
    return None


def _user(kind: str) -> Callable[[Envelope, Mapping[str, Any]], list[CustomerChange]]:
    signup = kind == "user.created"

    def handler(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
        identity = IdentityRef(NAME, str(data.get("id")))
        email = primary_email(data)
        if email is None and signup:
            raise EventIgnored("the Clerk user has no primary email address")
        return [
            person_change(
                envelope.occurred_at,
                email=email,
                identity=identity,
                name=full_name(data.get("first_name"), data.get("last_name")),
                status_if_absent=SIGNUP_STATUS if signup else None,
            )
        ]

    handler.__doc__ = (
        "signup: email, name; status `free` unless the customer has one in the project"
        if signup
        else "name; a new primary email address is an email change (rename or merge)"
    )
    return handler


def _user_deleted(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """the Clerk user id is removed from the customer, who is kept; recorded on the timeline"""
    # Clerk sends only the id: the identity link is the only way to the person.
    identity = IdentityRef(NAME, str(data.get("id")))
    return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, forget_identity=True)]


def _session(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """activity (last_activity_at moves forward)"""
    identity = IdentityRef(NAME, str(data.get("user_id")))
    return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, activity=True)]


def _waitlist(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """a person with the weak status `waitlist` (written only while they have no status)"""
    email = clean_email(data.get("email_address"))
    if email is None:
        raise EventIgnored("the waitlist entry has no email address")
    return [CustomerChange(occurred_at=envelope.occurred_at, email=email, status_if_absent=WAITLIST_STATUS)]


def _membership(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """params `organization:<org id>` = the member's role (`org:admin`, …); removed when the
    membership is deleted. Email from public_user_data.identifier when it is an address"""
    member = mapping_at(data, "public_user_data")
    user_id = text_at(member, "user_id")
    org_id = text_at(data, "organization", "id")
    if user_id is None or org_id is None:
        raise EventIgnored("the organization membership names no user or no organization")
    key = f"organization:{org_id}"
    identity = IdentityRef(NAME, user_id)
    email = clean_email(member.get("identifier"))
    if envelope.type == "organizationMembership.deleted":
        return [person_change(envelope.occurred_at, email=email, identity=identity, params_unset=(key,))]
    role = text_at(data, "role") or "member"
    return [person_change(envelope.occurred_at, email=email, identity=identity, params={key: role})]


def _payer(data: Mapping[str, Any]) -> tuple[str | None, IdentityRef]:
    """The paying user's address (at the event time) and Clerk id. Names stay with the user
    events: the payer's copy would compete with them."""
    payer = mapping_at(data, "payer")
    user_id = text_at(payer, "user_id")
    if user_id is None:
        raise EventIgnored("the Clerk Billing payer is not a user (an organization, or none)")
    return clean_email(payer.get("email")), IdentityRef(NAME, user_id)


def _paid_plan(plan: Mapping[str, Any]) -> bool:
    amount = plan.get("amount")
    return isinstance(amount, int) and not isinstance(amount, bool) and amount > 0


def _item_params(item: Mapping[str, Any]) -> dict[str, Any]:
    plan = mapping_at(item, "plan")
    status = item.get("status")
    params: dict[str, Any] = {}
    if (name := text_at(plan, "slug") or text_at(plan, "name")) is not None:
        params["plan"] = name
    interval = _INTERVALS.get(str(item.get("interval") or item.get("plan_period") or "month"), "month")
    amount = plan.get("amount")
    billing = status in ("active", "past_due", "canceled")
    if isinstance(amount, int) and not isinstance(amount, bool) and billing:
        params["mrr"] = round_minor(monthly(Fraction(amount), interval))
    else:
        params["mrr"] = 0
    if isinstance(currency := plan.get("currency"), str) and currency:
        params["currency"] = currency.lower()
    params["interval"] = interval
    if isinstance(status, str):
        params["subscription_status"] = status
    if (end := iso_z(item.get("period_end"))) is not None:
        params["current_period_end"] = end
    params["cancel_at_period_end"] = status == "canceled"
    return params


def _subscription_item(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """status (item `active`/`canceled` on a paid plan: paid, `past_due`: past_due, `ended` on a
    paid plan: churned; free plans: `free` only while the person has no status) and params plan,
    mrr, currency, interval, subscription_status, current_period_end, cancel_at_period_end"""
    email, identity = _payer(data)
    status = data.get("status")
    paid = _paid_plan(mapping_at(data, "plan"))
    mapped = ITEM_STATUS_MAP.get(status) if isinstance(status, str) else None
    strong = mapped if paid or mapped == "past_due" else None
    weak = SIGNUP_STATUS if not paid and status == "active" else None
    return [
        person_change(
            envelope.occurred_at,
            email=email,
            identity=identity,
            status=strong,
            status_if_absent=weak,
            params=_item_params(data) if paid or status == "active" else {},
        )
    ]


def _subscription(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """status from the whole subscription (`past_due`: past_due; an active paid item: paid; only
    free items: `free` unless the person has a status) and the params of its main item (the active
    paid one), as subscriptionItem events"""
    email, identity = _payer(data)
    items = [i for i in data.get("items") or [] if isinstance(i, Mapping)]
    live = [i for i in items if i.get("status") in ("active", "past_due", "canceled")]
    main = max(live, key=lambda i: mapping_at(i, "plan").get("amount") or 0, default=None)
    paid = main is not None and _paid_plan(mapping_at(main, "plan"))
    status = "past_due" if data.get("status") == "past_due" else ("paid" if paid else None)
    return [
        person_change(
            envelope.occurred_at,
            email=email,
            identity=identity,
            status=status,
            status_if_absent=SIGNUP_STATUS if status is None else None,
            params=_item_params(main) if main is not None else {},
        )
    ]


def _payment_attempt(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """params `last_payment_at` (status paid, at paid_at) or `last_payment_failed_at` (failed)"""
    email, identity = _payer(data)
    status = data.get("status")
    if status == "paid":
        params = {"last_payment_at": iso_z(data.get("paid_at")) or iso_z(envelope.occurred_at)}
    elif status == "failed":
        params = {"last_payment_failed_at": iso_z(data.get("failed_at")) or iso_z(envelope.occurred_at)}
    else:
        raise EventIgnored(f"a payment attempt with status {status!r} moved no money yet")
    return [person_change(envelope.occurred_at, email=email, identity=identity, params=params)]


Handler = Callable[[Envelope, Mapping[str, Any]], list[CustomerChange]]

_ITEM_EVENTS = (
    "created",
    "updated",
    "active",
    "canceled",
    "upcoming",
    "ended",
    "abandoned",
    "incomplete",
    "pastDue",
    "past_due",
)
HANDLERS: Mapping[str, Handler] = {
    "user.created": _user("user.created"),
    "user.updated": _user("user.updated"),
    "user.deleted": _user_deleted,
    "session.created": _session,
    "waitlistEntry.created": _waitlist,
    "organizationMembership.created": _membership,
    "organizationMembership.updated": _membership,
    "organizationMembership.deleted": _membership,
    # Clerk's catalogue spells past due both ways (`pastDue` in the docs, `past_due` at launch).
    **{
        f"subscription.{kind}": _subscription
        for kind in ("created", "updated", "active", "pastDue", "past_due")
    },
    **{f"subscriptionItem.{kind}": _subscription_item for kind in _ITEM_EVENTS},
    "paymentAttempt.created": _payment_attempt,
    "paymentAttempt.updated": _payment_attempt,
}
