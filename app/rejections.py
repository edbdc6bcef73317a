"""Refused webhook deliveries (SPEC §5): counted per source and reason, the last 100 per source kept.

Stored in Redis, not the database: a flood of forged deliveries must not turn into a flood of
database writes (one pipelined round trip per refusal instead), and every structure is bounded —
counters are one hash field per (source, reason), only for sources that exist and only for the
fixed set of error codes the webhook route answers; each source's list is trimmed to 100 entries
and expires 30 days after its last refusal. Nothing of the unverified body is kept but its size and
SHA-256 (to match against a provider's delivery log). Losing Redis loses this diagnostic history,
never an event.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import current_app, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from tributary.app import source_cache
from tributary.app.domain_errors import DomainError
from tributary.app.errors import _HTTP_CODES, APIError, http_error
from tributary.app.metrics import REJECTIONS_KEY, SEP
from tributary.models.base import isoformat, utcnow
from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

KEEP = 100
RECENT_KEY = "tributary:rejections:recent:{}"
RECENT_TTL_SECONDS = 30 * 86400
MAX_USER_AGENT_CHARS = 300
# How connectors.base.check_timestamp (every scheme with a signed timestamp) and the stripe library
# word a timestamp outside the tolerance.
STALE_MARKERS = ("the signed timestamp is ", "timestamp outside the tolerance zone")
F = TypeVar("F", bound=Callable[..., Any])


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def _reason(exc: Exception) -> tuple[int, str] | None:
    if isinstance(exc, APIError | DomainError):
        status, code = http_error(exc).status, exc.code
        if code == "invalid_signature" and any(marker in exc.message.lower() for marker in STALE_MARKERS):
            # Apart from forgeries: a sender's clock (or a queue delaying deliveries) is off.
            code = "timestamp_outside_tolerance"
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")  # the code the error handler answers with
    else:
        return None
    if not 400 <= status < 500 or code == "source_not_found":
        return None  # not a refusal of a delivery to a known source
    return status, code


def record_rejections(view: F) -> F:
    """Wrap the webhook view: a 4xx answer to a known source is recorded, then raised as before."""

    @functools.wraps(view)
    def wrapper(source_id: str) -> Any:
        body: bytes | None = None
        try:
            # Cached, so the view's own read gets these same bytes (no second copy).
            body = request.get_data(cache=True)
            return view(source_id)
        except Exception as exc:
            note_refusal(source_id, exc, body)
            raise

    return cast(F, wrapper)


def note_refusal(source_id: str, exc: Exception, body: bytes | None) -> None:
    """Record `exc` when it refuses a delivery to a known source; called in the refused request's
    context (by `record_rejections`, and by app/fast_path.py for the deliveries it takes)."""
    reason = _reason(exc)
    if reason is not None:
        record(_runtime(), source_id, reason[1], reason[0], body)


def record(runtime: Runtime, source_id: str, reason: str, status: int, body: bytes | None) -> None:
    if source_cache().get(runtime, source_id) is None:
        return
    entry = {
        "at": isoformat(utcnow()),
        "reason": reason,
        "status": status,
        "remote_addr": request.remote_addr,
        "user_agent": (request.user_agent.string or None)
        and request.user_agent.string[:MAX_USER_AGENT_CHARS],
        "body_bytes": len(body) if body is not None else request.content_length,
        "body_sha256": hashlib.sha256(body).hexdigest() if body is not None else None,
    }
    key = RECENT_KEY.format(source_id)
    try:
        pipe = runtime.redis.pipeline(transaction=False)
        pipe.hincrby(REJECTIONS_KEY, f"{source_id}{SEP}{reason}", 1)
        pipe.lpush(key, json.dumps(entry))
        pipe.ltrim(key, 0, KEEP - 1)
        pipe.expire(key, RECENT_TTL_SECONDS)
        pipe.execute()
    except RedisError as exc:
        log.warning("could not record a refused delivery for %s: %s", source_id, exc)


def rejections(runtime: Runtime, source_id: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    prefix = f"{source_id}{SEP}"
    for field, value in runtime.redis.hgetall(REJECTIONS_KEY).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        if name.startswith(prefix):
            counts[name.removeprefix(prefix)] = int(value)
    recent = [json.loads(raw) for raw in runtime.redis.lrange(RECENT_KEY.format(source_id), 0, KEEP - 1)]
    return {"source": source_id, "counts": dict(sorted(counts.items())), "recent": recent}


def rejections_text(data: dict[str, Any]) -> str:
    """The human summary `tributary sources show` prints."""
    if not data["counts"]:
        return "refused deliveries: none"
    counts = ", ".join(f"{reason} {count}" for reason, count in data["counts"].items())
    lines = [f"refused deliveries: {counts}; most recent:"]
    for r in data["recent"][:10]:
        who = f"{r['remote_addr'] or '-'}  {r['user_agent'] or '-'}"
        lines.append(f"  {r['at']}  {r['reason']}  {r['body_bytes']} bytes  {who}")
    return "\n".join(lines)
