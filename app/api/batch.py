"""`POST /v1/batch`: many identify/ping messages in one request, the SDKs' transport.

Each message goes through the same schema and row building as `/v1/identify` and `/v1/ping`
(`tributary.app.api.ingest`), so a rule added there applies here. The valid ones are stored all
or none, in the group commit's shared INSERT (app/event_store.py: concurrent batches and single
calls of the process share one statement and one commit), deduplicated by `message_id` through the
same unique index, committed before the answer; the write owes one doorbell ring for the worker.
The answer has one result per message, in order.

Everything past the request's envelope is `accept_batch`: the view calls it for the requests Flask
serves, and app/fast_path.py for the plain ones it answers without Flask's request machinery.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from tributary.app.api.ingest import event_row, message_project, same_message
from tributary.app.auth import Principal, authenticate, key_revoked
from tributary.app.errors import APIError, validation_error
from tributary.app.event_store import key_active
from tributary.app.openapi import describe
from tributary.app.schemas import ErrorBody, IdentifyRequest, PingRequest
from tributary.connectors.identify import validate_message
from tributary.connectors.safe_json import storable_encoded
from tributary.models import Event
from tributary.models.base import utcnow

if TYPE_CHECKING:
    from tributary.app import Extensions

bp = Blueprint("batch", __name__)

PATH = "/v1/batch"  # also served by app/fast_path.py
MAX_MESSAGES = 500
MAX_BATCH_BYTES = 1024 * 1024
MODELS: dict[str, type[PingRequest]] = {"identify": IdentifyRequest, "ping": PingRequest}


class BatchIdentify(IdentifyRequest):
    type: Literal["identify"]


class BatchPing(PingRequest):
    type: Literal["ping"]


class BatchRequest(BaseModel):
    """Up to 500 identify/ping messages; each is validated on its own."""

    batch: Annotated[
        list[Annotated[BatchIdentify | BatchPing, Field(discriminator="type")]],
        Field(min_length=1, max_length=MAX_MESSAGES),
    ]


class BatchResult(BaseModel):
    event_id: str | None = Field(default=None, description="Set when the message is stored.")
    duplicate: bool = Field(default=False, description="The message_id had been stored before.")
    error: ErrorBody | None = Field(default=None, description="Why this message was refused.")
    status: int | None = Field(default=None, description="The HTTP status the single call would have had.")


class BatchAccepted(BaseModel):
    """One result per message, in the order sent"""

    results: list[BatchResult]
    accepted: int = Field(description="Messages stored by this request.")
    duplicates: int
    rejected: int


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.result = {"error": {"code": code, "message": message, "details": details}, "status": status}


def _messages(body: bytes) -> tuple[list[Any], bool]:
    """The batch's messages, and whether every number in the body is finite."""
    finite = True

    def noted(value: float) -> float:
        nonlocal finite
        finite = finite and math.isfinite(value)
        return value

    try:
        # NaN, Infinity and 1e400 parse here (noted by the hooks, which see only such tokens and
        # floats) and are refused per message below, where the message is re-encoded.
        envelope = json.loads(
            body,
            parse_constant=lambda token: noted(float(token)),
            parse_float=lambda text: noted(float(text)),
        )
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser allows
        raise APIError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("batch"), list):
        raise APIError(400, "malformed_body", 'the request body must be {"batch": [message, …]}')
    if extra := sorted(set(envelope) - {"batch"}):
        raise APIError(400, "validation_error", f"unknown fields {extra}", [{"field": k} for k in extra])
    messages: list[Any] = envelope["batch"]
    if not messages:
        raise APIError(400, "validation_error", "the batch is empty")
    if len(messages) > MAX_MESSAGES:
        raise APIError(400, "batch_too_large", f"at most {MAX_MESSAGES} messages per batch")
    return messages, finite


def _encoded(fields: dict[str, Any], finite: bool) -> bytes:
    """The message as stored: orjson when every number in the batch is finite (it writes NaN as
    `null`), at a twentieth of the standard encoder's cost; the strict standard encoder for what
    orjson refuses (a lone surrogate, an integer beyond 64 bits, deep nesting), whose errors
    `_row` turns into the message's refusal."""
    if finite:
        try:
            return orjson.dumps(fields)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _row(
    principal: Principal,
    message: Any,
    received_at: datetime,
    finite: bool,
    project_of: Callable[[str | None], str],
) -> tuple[dict[str, Any], PingRequest]:
    """The `events` row for one message of the batch, and the validated message."""
    if not isinstance(message, dict):
        raise _Refused(400, "malformed_body", "each message must be a JSON object")
    fields = dict(message)
    kind = fields.pop("type", None)
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise _Refused(400, "validation_error", 'type must be "identify" or "ping"', [{"field": "type"}])
    try:
        body = _encoded(fields, finite)
    except UnicodeEncodeError:
        raise _Refused(
            400, "validation_error", "strings must be valid Unicode (no lone surrogates)"
        ) from None
    except ValueError:
        raise _Refused(400, "validation_error", "numbers must be finite (no NaN or Infinity)") from None
    except RecursionError:
        raise _Refused(400, "validation_error", "the message is nested too deeply") from None
    try:
        # Both of `_encoded`'s encoders refuse NaN, Infinity and lone surrogates, and a float
        # that overflowed was parsed as infinite: `storable_text`'s scan was a tenth of the batch.
        payload = validate_message(model, body, storable=storable_encoded(body))
        project_id = project_of(payload.project)
        return event_row(principal, kind, payload, body, payload.message_id, received_at, project_id), payload
    except ValidationError as exc:
        refusal = validation_error(exc)
    except APIError as exc:
        refusal = exc
    raise _Refused(refusal.status, refusal.code, refusal.message, refusal.details)


def accept_batch(app: Flask, principal: Principal, digest: str, body: bytes) -> Response:
    """Validate and store a batch of an authenticated request (`digest`: its key's; `body` within
    `MAX_BATCH_BYTES`): the 202 answer, one result per message; raises `APIError` for a refusal of
    the whole batch. Everything past the request's envelope, shared by the Flask view and
    app/fast_path.py."""
    ext: Extensions = app.extensions["tributary"]
    received_at = utcnow()
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    payloads: dict[str, PingRequest] = {}
    slots: list[int] = []
    messages, finite = _messages(body)
    # Each project slug resolved once per request (a refusal is not cached: each message meets it).
    project_of = functools.cache(functools.partial(message_project, ext, principal))
    for message in messages:
        try:
            row, payload = _row(principal, message, received_at, finite, project_of)
            rows.append(row)
            payloads[row["id"]] = payload
            slots.append(len(results))
            results.append({})
        except _Refused as refused:
            results.append(refused.result)
    if not rows:
        raise APIError(400, "no_valid_messages", "no message in the batch is valid", {"results": results})
    known = _store(ext, principal, digest, rows, payloads)
    for slot, row in zip(slots, rows, strict=True):
        results[slot] = known.get(row["id"]) or {"event_id": row["id"], "duplicate": False}
    accepted = len(rows) - len(known)
    duplicates = sum(1 for r in known.values() if r.get("duplicate"))
    answer = {
        "results": results,
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": len(results) - accepted - duplicates,
    }
    return _answer(app, answer)


def _answer(app: Flask, answer: dict[str, Any]) -> Response:
    """The 202 with `answer`: orjson, at a ninth of the app's JSON provider's cost for a hundred
    results (sorted keys, the standard encoder: 3 % of a batch's web CPU), and like it never
    writing NaN; what orjson refuses goes to the provider, as `jsonify` would use it."""
    try:
        data = orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE)
        return Response(data, 202, mimetype="application/json")
    except orjson.JSONEncodeError:
        response = cast(Response, app.json.response(answer))
        response.status_code = 202
        return response


@bp.post(PATH)
@describe(
    summary="Send many identify/ping messages at once",
    tag="ingest",
    scope="ingest",
    body=BatchRequest,
    responses={202: BatchAccepted},
    errors=(400, 401, 403, 413, 429, 503),
)
def batch() -> Response:
    # The key is checked by the INSERT itself (app/event_store.py), as identify's is: no Redis read.
    principal = authenticate("ingest", revocation_checked_by_write=True)
    if (request.content_length or 0) > MAX_BATCH_BYTES:
        raise APIError(413, "payload_too_large", f"a batch is at most {MAX_BATCH_BYTES} bytes")
    body = request.get_data(cache=False)
    if len(body) > MAX_BATCH_BYTES:
        raise APIError(413, "payload_too_large", f"a batch is at most {MAX_BATCH_BYTES} bytes")
    return accept_batch(current_app, principal, g.key_digest, body)


def _store(
    ext: Extensions,
    principal: Principal,
    digest: str,
    rows: list[dict[str, Any]],
    payloads: dict[str, PingRequest],
) -> dict[str, dict[str, Any]]:
    """Insert the rows, all or none, sharing the statement and commit of the process's concurrent
    stores (app/event_store.py). Returns the result of each row that was not inserted because its
    message id was stored before (possibly earlier in this batch): a duplicate if it is the same
    message, a 409 if the id was reused for a different one."""
    inserted = ext.events.store_all(rows, principal.key_id)
    existing: dict[str, Any] = {}
    if len(inserted) < len(rows):
        with ext.runtime.db.autocommit() as conn:
            if not inserted and not key_active(conn, principal.key_id):
                raise key_revoked(ext.key_cache, digest)
            missing = {r["dedup_key"] for r in rows if r["id"] not in inserted}
            found = conn.execute(
                select(Event.dedup_key, Event.id, Event.channel, Event.body, Event.body_hash).where(
                    Event.account_id == principal.account_id, Event.dedup_key.in_(missing)
                )
            )
            existing = {str(row.dedup_key): row for row in found}
    known: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["id"] in inserted:
            continue
        stored = existing.get(row["dedup_key"])
        event_id = str(stored.id) if stored is not None else row["id"]
        # The same rule as the single calls: the canonical message's fingerprint, unknown (an
        # erased event) counting as the same message.
        if stored is None or same_message(stored, row["channel"], payloads[row["id"]]):
            known[row["id"]] = {"event_id": event_id, "duplicate": True}
        else:
            known[row["id"]] = {
                "error": {
                    "code": "idempotency_conflict",
                    "message": "this message_id was already used for a different message; "
                    "the first message is kept",
                    "details": {"event_id": event_id},
                },
                "status": 409,
            }
    return known
