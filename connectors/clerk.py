"""Clerk: user lifecycle and sign-ins, delivered by Svix.

Docs: https://clerk.com/docs/guides/development/webhooks/overview (delivery, Svix headers) and
https://clerk.com/docs/guides/development/webhooks/syncing (payloads). Verification is Svix's
scheme, which is Standard Webhooks with `svix-` header names: the HMAC comes from the
`standardwebhooks` library (connectors/verification.py). The source secret is the endpoint's
`whsec_…` signing secret.

Clerk user ids (`user_…`) become identities, so the events that carry no email (`user.deleted`,
`session.created`) still find their customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.api_options import API_OPTIONS, validate_api_options
from connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
)
from connectors.changes import CustomerChange, IdentityRef
from connectors.fields import (
    check_event_time,
    clean_email,
    full_name,
    load_object,
    parse_time,
    person_change,
    text_at,
)
from connectors.verification import verify_standard_webhook

__all__ = ["ClerkConnector"]

DOCS = "https://clerk.com/docs/guides/development/webhooks/syncing"

# Clerk event -> what Tributary does. Payload fields: https://clerk.com/docs/reference/backend/types/backend-user
EVENT_TYPES: Mapping[str, str] = {
    "user.created": "signup: email, name; status `free` unless the customer has one in the project",
    "user.updated": "name; a new primary email address is an email change (rename or merge)",
    "user.deleted": "the Clerk user id is removed from the customer, who is kept; recorded on the timeline",
    "session.created": "activity (last_activity_at moves forward)",
}

SIGNUP_STATUS = "free"


def _primary_email(user: Mapping[str, Any]) -> str | None:
    """The address whose id is `primary_email_address_id` (Clerk users may have several)."""
    primary_id = user.get("primary_email_address_id")
    addresses = user.get("email_addresses")
    if not isinstance(addresses, list):
        return None
    for address in addresses:
        if isinstance(address, Mapping) and address.get("id") == primary_id and primary_id:
            return clean_email(address.get("email_address"))
    return None


class ClerkConnector(Connector):
    name = "clerk"
    title = "Clerk (users and sessions, signed by Svix)"
    event_types = EVENT_TYPES
    stored_headers = ("content-type", "user-agent", "svix-id", "svix-timestamp")
    secret_options = frozenset({"api_key"})

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        # Only `tributary import clerk` reads them: the Backend API's secret key and base URL.
        if unknown := sorted(set(options) - API_OPTIONS):
            raise InvalidOptions(
                f"unknown option(s) for clerk: {', '.join(unknown)} (known: api_key, api_url)"
            )
        return validate_api_options(self.name, options)

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        # Svix names its headers `svix-*`; deliveries through Standard Webhooks tooling use
        # `webhook-*`. Both carry the same signature, so either set is accepted.
        prefix = "svix" if "svix-signature" in request.headers else "webhook"
        verify_standard_webhook(request.body, request.headers, source.secrets, prefix=prefix)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        event_type = body.get("type")
        data = body.get("data")
        if not isinstance(event_type, str) or not event_type or not isinstance(data, dict):
            raise MalformedPayload("a Clerk event needs a string `type` and an object `data`")
        message_id = request.headers.get("svix-id") or request.headers.get("webhook-id")
        if not message_id:
            raise MalformedPayload("missing svix-id header")
        stamp = body.get("timestamp")
        if stamp is None:  # the body's time is in milliseconds; the signed header's is close enough
            stamp = request.headers.get("svix-timestamp") or request.headers.get("webhook-timestamp")
        occurred_at = check_event_time(parse_time(stamp, "timestamp"))
        if event_type in ("user.created", "user.updated", "user.deleted") and not text_at(data, "id"):
            raise MalformedPayload(f"{event_type} without data.id")
        if event_type == "session.created" and not text_at(data, "user_id"):
            raise MalformedPayload("session.created without data.user_id")
        email = _primary_email(data) if event_type.startswith("user.") else None
        return [Envelope(message_id, event_type, occurred_at, body, email=email)]

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        data = envelope.payload.get("data")
        if not isinstance(data, Mapping):
            raise MalformedPayload("the stored Clerk event has no data object")
        kind = envelope.type
        if kind in ("user.created", "user.updated"):
            identity = IdentityRef(self.name, str(data.get("id")))
            email = _primary_email(data)
            if email is None and kind == "user.created":
                raise EventIgnored("the Clerk user has no primary email address")
            return [
                person_change(
                    envelope.occurred_at,
                    email=email,
                    identity=identity,
                    name=full_name(data.get("first_name"), data.get("last_name")),
                    status_if_absent=SIGNUP_STATUS if kind == "user.created" else None,
                )
            ]
        if kind == "user.deleted":
            # Clerk sends only the id: the identity link is the only way to the person.
            identity = IdentityRef(self.name, str(data.get("id")))
            return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, forget_identity=True)]
        if kind == "session.created":
            identity = IdentityRef(self.name, str(data.get("user_id")))
            return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, activity=True)]
        raise EventIgnored(f"Clerk event {kind!r} is not tracked (see {DOCS})")
