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

from tributary.connectors.api_options import API_OPTIONS, validate_api_options
from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.clerk_events import HANDLERS, primary_email
from tributary.connectors.fields import (
    load_object,
    text_at,
)
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.svix import read_message, verify_svix

__all__ = ["ClerkConnector"]

DOCS = "https://clerk.com/docs/guides/development/webhooks/syncing"
PREFIXES = ("svix", "webhook")


class ClerkConnector(Connector):
    name = "clerk"
    title = "Clerk (users, sessions, organizations, waitlist and Clerk Billing, signed by Svix)"
    event_types = describe_handlers(HANDLERS)
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
        verify_svix(request, source.secrets, PREFIXES)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        message = read_message(
            body,
            request.headers,
            prefixes=PREFIXES,
            shape="a Clerk event needs a string `type` and an object `data`",
        )
        event_type, data = message.type, message.data
        if event_type in ("user.created", "user.updated", "user.deleted") and not text_at(data, "id"):
            raise MalformedPayload(f"{event_type} without data.id")
        if event_type == "session.created" and not text_at(data, "user_id"):
            raise MalformedPayload("session.created without data.user_id")
        email = primary_email(data) if event_type.startswith("user.") else None
        return [Envelope(message.message_id, event_type, message.occurred_at, body, email=email)]

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        data = envelope.payload.get("data")
        if not isinstance(data, Mapping):
            raise MalformedPayload("the stored Clerk event has no data object")
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"Clerk event {envelope.type!r} is not tracked (see {DOCS})")
        return handler(envelope, data)
