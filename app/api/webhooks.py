"""`POST /webhooks/<source id>`: verify a provider's delivery, store it, commit, then acknowledge.

The durable path mirrors identify's: nothing is written until the connector has verified the raw
body, then every envelope of the delivery goes into the events table in ONE multi-row INSERT
(one statement, so one transaction: all of the delivery or none of it), deduplicated by the
database's unique index on (account, `<source id>:<provider event id>`), concurrent redeliveries
included. Only after that commit does the provider get its 200 and the worker its doorbell.

Everything past the request's envelope is `deliver`: the view calls it for the deliveries Flask
serves, and app/fast_path.py for the plain ones it answers without Flask's request machinery.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from pydantic import BaseModel, Field

from tributary.app.errors import APIError
from tributary.app.event_rows import event_row, refuse_future
from tributary.app.openapi import describe
from tributary.app.rejections import record_rejections
from tributary.app.sources import ResolvedSource
from tributary.connectors.base import (
    Connector,
    Envelope,
    Headers,
    InboundRequest,
    MalformedPayload,
    VerificationFailed,
)
from tributary.connectors.event_rules import email_or_none
from tributary.connectors.registry import UnknownConnector, registry
from tributary.connectors.safe_json import bad_text, clean_text, problem, scrub
from tributary.models.base import utcnow

if TYPE_CHECKING:
    from tributary.app import Extensions

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

# The delivery route (also served by app/fast_path.py, which labels its request timings with it).
PREFIX = "/webhooks/"
RULE = PREFIX + "<source_id>"
MAX_EVENT_ID_CHARS = 255
MAX_TYPE_CHARS = 200


class WebhookReceived(BaseModel):
    """The delivery is stored"""

    received: int = Field(description="Events stored by this delivery.")
    duplicates: int = Field(description="Events of this delivery already stored earlier (not applied again).")


def inbound_request() -> InboundRequest:
    """The current request as a connector sees it. Its body is read first: an oversize delivery is
    refused (413) before any database access."""
    return InboundRequest(
        body=request.get_data(cache=False),
        headers=Headers(dict(request.headers.items())),
        method=request.method,
        query=request.args.to_dict(),
    )


def _resolve(ext: Extensions, source_id: str) -> tuple[ResolvedSource, Connector]:
    source = None if bad_text(source_id) else ext.sources.get(ext.runtime, source_id)
    if source is None:
        raise APIError(404, "source_not_found", "no such webhook source")
    try:
        connector = registry().get(source.config.connector)
    except UnknownConnector:
        # The source exists but its connector is disabled or uninstalled: ask the provider to
        # retry, so re-enabling the connector loses nothing.
        log.error("source %s uses connector %r, which is not installed", source.id, source.config.connector)
        raise APIError(
            503,
            "connector_unavailable",
            f"the {source.config.connector!r} connector is not available on this server",
            headers={"Retry-After": "60"},
        ) from None
    return source, connector


def _challenge(
    app: Flask, connector: Connector, source: ResolvedSource, inbound: InboundRequest
) -> Response | None:
    challenge = connector.challenge(inbound, source.config)
    if challenge is None:
        return None
    response = cast(Response, app.json.response(dict(challenge.body)))
    response.status_code = challenge.status
    return response


def _occurred_at(envelope: Envelope, received_at: datetime) -> datetime:
    """The envelope's event time, after checking the envelope fits the events table."""
    if not isinstance(envelope.event_id, str) or not envelope.event_id:
        raise APIError(400, "malformed_body", "an event in the delivery has no id")
    if len(envelope.event_id) > MAX_EVENT_ID_CHARS:
        raise APIError(400, "malformed_body", f"event ids are limited to {MAX_EVENT_ID_CHARS} characters")
    if not envelope.type or len(envelope.type) > MAX_TYPE_CHARS:
        raise APIError(400, "malformed_body", f"event types are 1-{MAX_TYPE_CHARS} characters")
    occurred_at = envelope.occurred_at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return refuse_future(occurred_at, received_at, "an event's time")


def _storable_payload(envelope: Envelope) -> dict[str, Any]:
    """The envelope's payload as it can be stored. Built-in connectors already parse strictly and
    scrub (connectors/fields.py); this holds any connector to the same rule: NUL and lone
    surrogates are removed from its text and non-finite numbers dropped. Ids and types are keys,
    not content: one that holds such a character is refused rather than silently changed."""
    if bad_text(envelope.event_id) or bad_text(envelope.type):
        raise APIError(400, "malformed_body", "an event id or type contains a NUL character")
    payload = dict(envelope.payload)
    return scrub(payload) if problem(payload) is not None else payload


def _rows(
    source: ResolvedSource, connector: Connector, inbound: InboundRequest
) -> tuple[list[dict[str, Any]], int]:
    """Event rows for the delivery's envelopes, and how many repeat an id within the delivery."""
    try:
        envelopes = connector.envelopes(inbound, source.config)
    except MalformedPayload as exc:
        raise APIError(400, "malformed_body", str(exc) or "the body cannot be parsed") from None
    received_at = utcnow()
    stored_headers = {
        name: inbound.headers[name] for name in connector.stored_headers if name in inbound.headers
    }
    rows: dict[str, dict[str, Any]] = {}
    repeats = 0
    for envelope in envelopes:
        occurred_at = _occurred_at(envelope, received_at)
        payload = _storable_payload(envelope)
        if envelope.event_id in rows:
            repeats += 1
            continue
        rows[envelope.event_id] = event_row(
            account_id=source.account_id,
            project_id=source.project_id,
            source_id=source.id,
            channel=connector.name,
            type=envelope.type,
            provider_event_id=envelope.event_id,
            dedup_key=f"{source.id}:{envelope.event_id}",
            email=email_or_none(clean_text(envelope.email)) if envelope.email else None,
            occurred_at=occurred_at,
            received_at=received_at,
            # The raw delivery, unless the connector redacts credentials out of it (supabase).
            body=connector.stored_body(inbound, envelope),
            headers=stored_headers,
            payload=payload,
        )
    return list(rows.values()), repeats


def _store(ext: Extensions, rows: list[dict[str, Any]]) -> int:
    """Store the delivery's rows, all or none; returns how many were new. They share the statement
    and commit of the process's concurrent requests (app/event_store.py); if that shared write
    fails, the delivery stores them alone (one statement, or on SQLite several of one transaction when
    they are more than one statement binds), meeting its own error."""
    return len(ext.events.store_all(rows))


def deliver(app: Flask, source_id: str, inbound: InboundRequest) -> str | Response:
    """Verify and store one delivery to `source_id`: the 200 answer's JSON text, or the
    connector's answer to a handshake; raises `APIError` for a refusal. The whole of a POST past
    the request's envelope, shared by the Flask view and app/fast_path.py."""
    ext: Extensions = app.extensions["tributary"]
    source, connector = _resolve(ext, source_id)
    if (answer := _challenge(app, connector, source, inbound)) is not None:
        return answer
    try:
        connector.verify(inbound, source.config)
    except VerificationFailed as exc:
        raise APIError(400, "invalid_signature", str(exc) or "the signature does not verify") from None
    rows, repeats = _rows(source, connector, inbound)
    stored = _store(ext, rows) if rows else 0
    # The WebhookReceived shape, two integers, written directly: every delivery gets this answer.
    return f'{{"received":{stored},"duplicates":{len(rows) - stored + repeats}}}\n'


@bp.post(RULE)
@describe(
    summary="Receive a provider's webhook delivery",
    tag="webhooks",
    raw_body="The provider's delivery, exactly as sent: the source's connector verifies the raw bytes.",
    responses={200: WebhookReceived},
    errors=(400, 404, 413, 503),
)
@record_rejections
def receive(source_id: str) -> Response:
    answer = deliver(current_app._get_current_object(), source_id, inbound_request())  # type: ignore[attr-defined]
    return (
        answer if isinstance(answer, Response) else Response(answer, status=200, mimetype="application/json")
    )


@bp.get(RULE)
@describe(
    summary="Answer a provider's verification handshake (Okta's one-time GET)",
    tag="webhooks",
    responses={200: "The connector's handshake answer"},
    errors=(404, 405),
)
def handshake(source_id: str) -> Response:
    inbound = inbound_request()
    source, connector = _resolve(current_app.extensions["tributary"], source_id)
    if (answer := _challenge(current_app, connector, source, inbound)) is not None:
        return answer
    raise APIError(
        405, "method_not_allowed", "this source accepts POST deliveries", headers={"Allow": "POST"}
    )
