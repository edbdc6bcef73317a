"""`POST /v1/identify` and `POST /v1/ping`: validate, store the event, commit, ring the worker.

The hot path is one INSERT, shared with the requests storing at the same moment and committed before
any of them is answered (app/event_store.py, group commit), deduplicated by the database's unique
index (so concurrent retries of one message id store one event); the doorbell is rung at most once
per window per process, by a thread of its own (runtime/doorbell.py), never by the request.

Everything past the request's envelope is `accept`: these views call it for the requests Flask
serves, and app/fast_path.py for the plain ones it answers without Flask's request machinery.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, request
from pydantic import ValidationError
from sqlalchemy import Connection, or_, select

from tributary.app.auth import Principal, authenticate, key_revoked
from tributary.app.errors import APIError, validation_error
from tributary.app.event_rows import event_row as event_row_for
from tributary.app.event_rows import refuse_future
from tributary.app.event_store import insert_one, key_active
from tributary.app.openapi import describe
from tributary.app.schemas import EventAccepted, IdentifyRequest, PingRequest
from tributary.connectors.identify import validate_message
from tributary.connectors.safe_json import bad_text
from tributary.models import Event
from tributary.models.base import utcnow
from tributary.runtime.doorbell import stored

if TYPE_CHECKING:
    from tributary.app import Extensions

bp = Blueprint("ingest", __name__)


def message_project(ext: Extensions, principal: Principal, slug: str | None) -> str:
    """The id of the project a message names (`slug`; none: the key's own, or `default`), or
    the 403/404 the message is refused with."""
    if principal.project_id is not None:
        if (
            slug is not None
            and ext.projects.get(ext.runtime, principal.account_id, slug) != principal.project_id
        ):
            raise APIError(403, "project_forbidden", "this key is bound to another project")
        return principal.project_id
    slug = slug or "default"
    project_id: str | None = ext.projects.get(ext.runtime, principal.account_id, slug)
    if project_id is None:
        raise APIError(404, "project_not_found", f"no project with slug {slug!r}")
    return project_id


IDENTIFY = "/v1/identify"
PING = "/v1/ping"
# The two single-message doors: path -> (channel, model). app/fast_path.py serves the same.
DOORS: dict[str, tuple[str, type[PingRequest]]] = {
    IDENTIFY: ("identify", IdentifyRequest),
    PING: ("ping", PingRequest),
}


def accept(
    ext: Extensions,
    principal: Principal,
    digest: str,
    door: tuple[str, type[PingRequest]],
    body: bytes,
    idempotency_key: str | None,
) -> str:
    """Validate and store one message of an authenticated request (`digest`: its key's), and
    return the 202 answer's JSON text; raises `APIError` for a refusal. The whole of identify and
    ping past the request's envelope, shared by the Flask views and app/fast_path.py."""
    channel, model = door
    try:
        payload = validate_message(model, body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    message_id = payload.message_id or idempotency_key or None
    if message_id is not None and len(message_id) > 255:
        raise APIError(400, "validation_error", "Idempotency-Key is longer than 255 characters")
    if message_id is not None and bad_text(message_id):
        raise APIError(400, "validation_error", "Idempotency-Key contains a NUL character")
    project_id = message_project(ext, principal, payload.project)
    row = event_row(principal, channel, payload, body, message_id, utcnow(), project_id)
    stored_now = ext.events.store(row, principal.key_id)
    if stored_now:
        return accepted(row["id"])
    with ext.runtime.db.autocommit() as conn:
        if stored_now is None:
            # The shared write failed: this request stores its row alone, meeting its own error.
            with stored(ext.runtime) as store:
                store.committed = insert_one(conn, row, principal.key_id) is not None
            if store.committed:
                return accepted(row["id"])
        if not key_active(conn, principal.key_id):
            raise key_revoked(ext.key_cache, digest)
        return _not_stored(conn, principal, row, payload)


def _not_stored(conn: Connection, principal: Principal, row: dict[str, Any], payload: PingRequest) -> str:
    """The answer for a row the INSERT did not store while the key is active: its message id was
    stored before: a duplicate, or a 409 when that id came with a different message. The row's
    own id counts too: a shared write whose commit was acknowledged to nobody may still hold it."""
    same = Event.id == row["id"]
    if row["dedup_key"] is not None:
        same = or_(same, (Event.account_id == principal.account_id) & (Event.dedup_key == row["dedup_key"]))
    existing = conn.execute(select(Event.id, Event.channel, Event.body, Event.body_hash).where(same)).one()
    if existing.id == row["id"]:
        return accepted(row["id"])
    if not same_message(existing, row["channel"], payload):
        message_id = row["provider_event_id"]
        raise APIError(
            409,
            "idempotency_conflict",
            f"message id {message_id!r} was already used with a different body; the first message is kept",
            {"event_id": existing.id},
        )
    return accepted(str(existing.id), duplicate=True)


def event_row(
    principal: Principal,
    channel: str,
    payload: PingRequest,
    body: bytes,
    message_id: str | None,
    received_at: datetime,
    project_id: str,
) -> dict[str, Any]:
    """The `events` row for one validated identify/ping message of `project_id` (shared with
    `/v1/batch`). Raises `APIError` for a timestamp too far ahead."""
    return event_row_for(
        account_id=principal.account_id,
        project_id=project_id,
        channel=channel,
        type=channel,
        occurred_at=refuse_future(payload.occurred_at or received_at, received_at, "timestamp"),
        received_at=received_at,
        body=body,
        email=payload.email,
        provider_event_id=message_id,
        dedup_key=f"api:{project_id}:{message_id}" if message_id else None,
    )


def message_fingerprint(channel: str, payload: PingRequest) -> str:
    """SHA-256 of the canonical message: every validated field (defaults filled in, the email as
    normalized, the timestamp as its UTC instant) but the id itself, which is the same by
    construction whether it came as `message_id` or `Idempotency-Key`. So key order, spacing,
    `"params": {}` versus no params, or `+00:00` versus `Z` are the same message; any value the
    user sent that differs is not."""
    fields = payload.model_dump(mode="json", exclude={"message_id", "timestamp"})
    occurred_at = payload.occurred_at
    fields["timestamp"] = occurred_at.isoformat() if occurred_at is not None else None
    canonical = json.dumps(
        {"channel": channel, "message": fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_message(existing: Any, channel: str, payload: PingRequest) -> bool:
    """Whether the stored event `existing` (its `channel`, `body` and `body_hash`) holds the same
    message as `payload`, arriving on `channel` with the same message id. Unknown (an erased
    event) counts as the same. Only a message id met twice asks, so the fingerprints are computed
    here and not for every message stored (an eighth of `/v1/batch`'s CPU when they were)."""
    stored = stored_fingerprint(existing)
    return stored is None or stored == message_fingerprint(channel, payload)


def stored_fingerprint(existing: Any) -> str | None:
    """The stored event's fingerprint: the hash versions before 2026-12-03 stored with the event,
    or its stored body's, validated again. None when it cannot be known (an erased event's body is a
    marker): answered as a duplicate."""
    if existing.body_hash is not None:
        return str(existing.body_hash)
    model = IdentifyRequest if existing.channel == "identify" else PingRequest
    try:
        return message_fingerprint(existing.channel, model.model_validate_json(existing.body))
    except ValueError:
        return None


def accepted(event_id: str, *, duplicate: bool = False) -> str:
    """The EventAccepted shape as JSON text, written directly: the hottest answer skips the model,
    jsonify and a dict's encoding (only the id needs escaping, and ids are ours)."""
    return f'{{"event_id":{json.dumps(event_id)},"duplicate":{"true" if duplicate else "false"}}}\n'


def _ingest(path: str) -> Response:
    principal = authenticate("ingest", revocation_checked_by_write=True)
    body = request.get_data(cache=False)
    ext = current_app.extensions["tributary"]
    answer = accept(ext, principal, g.key_digest, DOORS[path], body, request.headers.get("Idempotency-Key"))
    return Response(answer, status=202, mimetype="application/json")


@bp.post(IDENTIFY)
@describe(
    summary="Create or update a customer",
    tag="ingest",
    scope="ingest",
    body=IdentifyRequest,
    responses={202: EventAccepted},
    errors=(400, 401, 403, 404, 409, 413, 429, 503),
)
def identify() -> Response:
    return _ingest(IDENTIFY)


@bp.post(PING)
@describe(
    summary="Record activity for a customer",
    tag="ingest",
    scope="ingest",
    body=PingRequest,
    responses={202: EventAccepted},
    errors=(400, 401, 403, 404, 409, 413, 429, 503),
)
def ping() -> Response:
    return _ingest(PING)
