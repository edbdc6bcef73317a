"""`POST /v1/identify` and `POST /v1/ping`: validate, store the event, commit, ring the worker.

The hot path is one INSERT in its own transaction (deduplicated by the database's unique index,
so concurrent retries of one message id store one event); the doorbell is rung at most once per
few milliseconds per process (runtime/doorbell.py `stored`), not per request.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import ValidationError
from sqlalchemy import Connection, bindparam, exists, select

from tributary.app.auth import Principal, authenticate, key_revoked
from tributary.app.errors import APIError, validation_error
from tributary.app.event_rows import event_row as event_row_for
from tributary.app.event_rows import refuse_future
from tributary.app.openapi import describe
from tributary.app.schemas import EventAccepted, IdentifyRequest, PingRequest
from tributary.connectors.safe_json import bad_text
from tributary.models import ApiKey, Event
from tributary.models.base import utcnow
from tributary.models.sql import insert_for
from tributary.runtime.doorbell import stored

bp = Blueprint("ingest", __name__)


def _resolve_project(principal: Principal, slug: str | None) -> str:
    ext = current_app.extensions["tributary"]
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


def _ingest(channel: str, model: type[PingRequest]) -> Response:
    principal = authenticate("ingest", revocation_checked_by_write=True)
    body = request.get_data(cache=False)
    try:
        payload = model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    message_id = payload.message_id or request.headers.get("Idempotency-Key") or None
    if message_id is not None and len(message_id) > 255:
        raise APIError(400, "validation_error", "Idempotency-Key is longer than 255 characters")
    if message_id is not None and bad_text(message_id):
        raise APIError(400, "validation_error", "Idempotency-Key contains a NUL character")
    row = event_row(principal, channel, payload, body, message_id, utcnow())
    dedup_key = row["dedup_key"]
    body_hash = row["body_hash"]
    runtime = current_app.extensions["tributary"].runtime
    with stored(runtime) as store, runtime.db.autocommit() as conn:
        insert = _insert_event_if_key_active(conn.dialect.name, tuple(row))
        event_id = conn.scalar(insert, {**row, KEY_PARAM: principal.key_id})
        store.committed = event_id is not None
        if event_id is None:
            if not _key_active(conn, principal.key_id):
                raise key_revoked()
            existing = conn.execute(
                select(Event.id, Event.channel, Event.body, Event.body_hash).where(
                    Event.account_id == principal.account_id, Event.dedup_key == dedup_key
                )
            ).one()
            if stored_fingerprint(existing) not in {body_hash, None}:
                raise APIError(
                    409,
                    "idempotency_conflict",
                    f"message id {message_id!r} was already used with a different body; "
                    "the first message is kept",
                    {"event_id": existing.id},
                )
            return _accepted(str(existing.id), duplicate=True)
    return _accepted(event_id)


def event_row(
    principal: Principal,
    channel: str,
    payload: PingRequest,
    body: bytes,
    message_id: str | None,
    received_at: datetime,
) -> dict[str, Any]:
    """The `events` row for one validated identify/ping message (shared with `/v1/batch`).
    Raises `APIError` for a project the key may not use or a timestamp too far ahead."""
    project_id = _resolve_project(principal, payload.project)
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
        body_hash=message_fingerprint(channel, payload) if message_id else None,
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


def stored_fingerprint(existing: Any) -> str | None:
    """The stored event's fingerprint; recomputed for events stored before the hash column.
    None when it cannot be known (an erased event's body is a marker): answered as a duplicate."""
    if existing.body_hash is not None:
        return str(existing.body_hash)
    model = IdentifyRequest if existing.channel == "identify" else PingRequest
    try:
        return message_fingerprint(existing.channel, model.model_validate_json(existing.body))
    except ValueError:
        return None


_insert_statements: dict[str, Any] = {}


def _insert_event(dialect: str) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING id`, built once per dialect and executed with the
    row as parameters. Building it per request with `.values(row)` made SQLAlchemy coerce and hash
    every literal for its cache key: a third of the endpoint's CPU (bench/README.md)."""
    stmt = _insert_statements.get(dialect)
    if stmt is None:
        stmt = _insert_statements[dialect] = (
            insert_for(dialect, Event).on_conflict_do_nothing().returning(Event.id)
        )
    return stmt


KEY_PARAM = "api_key_id"
_conditional_inserts: dict[tuple[str, tuple[str, ...]], Any] = {}


def _insert_event_if_key_active(dialect: str, columns: tuple[str, ...]) -> Any:
    """`INSERT … SELECT <the row> WHERE <the request's key is not revoked> ON CONFLICT DO NOTHING
    RETURNING id`: the revocation check rides on the INSERT itself, so identify needs neither a
    Redis read of the revocation stamp nor a second statement, and a key revoked anywhere stops
    storing events with the next request. Built once per dialect, like `_insert_event`."""
    stmt = _conditional_inserts.get((dialect, columns))
    if stmt is None:
        table = Event.__table__
        row = select(*(bindparam(name, type_=table.c[name].type) for name in columns)).where(
            exists().where(ApiKey.id == bindparam(KEY_PARAM), ApiKey.revoked_at.is_(None))
        )
        stmt = _conditional_inserts[(dialect, columns)] = (
            insert_for(dialect, Event)
            .from_select(list(columns), row)
            .on_conflict_do_nothing()
            .returning(Event.id)
        )
    return stmt


def _key_active(conn: Connection, key_id: str) -> bool:
    """Whether the key still exists unrevoked (asked only when the INSERT stored nothing)."""
    found = conn.scalar(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    return found is not None


def _accepted(event_id: str, *, duplicate: bool = False) -> Response:
    response = jsonify(EventAccepted(event_id=event_id, duplicate=duplicate).model_dump())
    response.status_code = 202
    return response


@bp.post("/v1/identify")
@describe(
    summary="Create or update a customer",
    tag="ingest",
    scope="ingest",
    body=IdentifyRequest,
    responses={202: EventAccepted},
    errors=(400, 401, 403, 404, 409, 413, 429, 503),
)
def identify() -> Response:
    return _ingest("identify", IdentifyRequest)


@bp.post("/v1/ping")
@describe(
    summary="Record activity for a customer",
    tag="ingest",
    scope="ingest",
    body=PingRequest,
    responses={202: EventAccepted},
    errors=(400, 401, 403, 404, 409, 413, 429, 503),
)
def ping() -> Response:
    return _ingest("ping", PingRequest)
