"""`standard`: identify and ping from your own app, signed with Standard Webhooks.

Spec: https://www.standardwebhooks.com/ (signature scheme); the body is Tributary's own canonical
payload, documented in docs/standard-webhooks.md:

    {"type": "identify" | "ping", "timestamp": "<ISO 8601>", "data": {…identify or ping fields…}}

`data` takes exactly the fields of `POST /v1/identify` (`email`, `name`, `status`, `params`,
`params_once`, `params_unset`) or `POST /v1/ping` (`email`), validated by the same schemas, so a
custom app can move between the API and webhooks without changing what it sends. The project is
the source's; the delivery id (`webhook-id`) deduplicates, as `message_id` does on the API.
Signatures are checked by the `standardwebhooks` library (connectors/verification.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.fields import load_object
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.identify import IdentifyRequest, PingRequest, identify_change
from tributary.connectors.safe_json import problem
from tributary.connectors.svix import read_message, verify_svix

__all__ = ["StandardConnector"]

DOCS = "docs/standard-webhooks.md"

# Fields of the API requests that the envelope or the source supplies instead.
_NOT_IN_DATA = ("project", "timestamp", "message_id")


def _validate(kind: str, data: Mapping[str, Any]) -> PingRequest:
    """The API's own request models, so both paths accept exactly the same fields."""
    model: type[PingRequest] = IdentifyRequest if kind == "identify" else PingRequest
    misplaced = [key for key in _NOT_IN_DATA if key in data]
    if misplaced:
        raise MalformedPayload(
            f"data.{misplaced[0]} is not accepted: the project is the source's, the time is the "
            "top-level `timestamp` and webhook-id deduplicates"
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"data.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()[:5]
        )
        raise MalformedPayload(f"invalid {kind} data: {problems}") from None


class StandardConnector(Connector):
    name = "standard"
    title = "Custom app: identify/ping over Standard Webhooks"
    stored_headers = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        verify_svix(request, source.secrets)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        # Refused, not scrubbed: this is our own API over webhooks, so it answers as the API does.
        body = load_object(request.body, scrub=False)
        if (found := problem(body)) is not None:
            raise MalformedPayload(f"the body cannot be stored: {found}")
        message = read_message(
            body,
            request.headers,
            shape='the body must be {"type": "identify"|"ping", "timestamp": …, "data": {…}}',
        )
        kind, data = message.type, message.data
        email = None
        if kind in HANDLERS:
            # Rejected at the door (400), as the API would, rather than failed later in the worker.
            email = _validate(kind, data).email
        return [Envelope(message.message_id, kind, message.occurred_at, body, email=email)]

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"type {envelope.type!r} is neither identify nor ping (see {DOCS})")
        return handler(envelope)


# -- the executable mapping table: {body `type`: handler}, each docstring says what it does --------


def _change(kind: str, envelope: Envelope) -> list[CustomerChange]:
    data = envelope.payload.get("data")
    request = _validate(kind, data if isinstance(data, Mapping) else {})
    # The identify API's own change builder: both doors make the same change.
    return [identify_change(kind, envelope.occurred_at, request.email, request.model_dump())]


def _identify(envelope: Envelope) -> list[CustomerChange]:
    """as POST /v1/identify: email, name, status, params, params_once, params_unset; activity"""
    return _change("identify", envelope)


def _ping(envelope: Envelope) -> list[CustomerChange]:
    """as POST /v1/ping: activity"""
    return _change("ping", envelope)


HANDLERS: Mapping[str, Callable[[Envelope], list[CustomerChange]]] = {
    "identify": _identify,
    "ping": _ping,
}
StandardConnector.event_types = describe_handlers(HANDLERS)
