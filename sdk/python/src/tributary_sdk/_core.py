"""What the sync and async clients share: message building, encoding, retry timing, query strings.
No I/O here."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from tributary_sdk.errors import RateLimited, TributaryError, ValidationError

Message = dict[str, Any]

# The server refuses batches over 1 MiB; leave room for the envelope.
MAX_BATCH_BYTES = 1024 * 1024 - 1024
MAX_BATCH_MESSAGES = 500
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def _timestamp(value: datetime | str | None) -> str:
    if value is None:
        return datetime.now(timezone.utc).isoformat()
    if isinstance(value, str):
        return value
    # A naive datetime is taken as UTC, as the server does.
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def ping_message(
    email: str,
    *,
    project: str | None = None,
    timestamp: datetime | str | None = None,
    message_id: str | None = None,
) -> Message:
    """A ping with the call time and a fresh message id, so a retry never duplicates it.

    With the caller's own `message_id` and no `timestamp`, the time is left to the server (the
    receipt time): the id then names the same message however often the app calls again (its own
    retries), a duplicate rather than an `idempotency_conflict` over two different call times."""
    message: Message = {"type": "ping", "email": email, "message_id": message_id or str(uuid.uuid4())}
    if timestamp is not None or message_id is None:
        message["timestamp"] = _timestamp(timestamp)
    if project is not None:
        message["project"] = project
    return message


def identify_message(
    email: str,
    *,
    name: str | None = None,
    status: str | None = None,
    params: Mapping[str, Any] | None = None,
    params_once: Mapping[str, Any] | None = None,
    params_unset: Sequence[str] | None = None,
    project: str | None = None,
    timestamp: datetime | str | None = None,
    message_id: str | None = None,
) -> Message:
    message = ping_message(email, project=project, timestamp=timestamp, message_id=message_id)
    message["type"] = "identify"
    if name is not None:
        message["name"] = name
    if status is not None:
        message["status"] = status
    # Copied now: in background mode the caller may change its dict before the message is sent.
    if params:
        message["params"] = dict(params)
    if params_once:
        message["params_once"] = dict(params_once)
    if params_unset:
        message["params_unset"] = list(params_unset)
    return message


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(value: Any) -> bytes:
    """Strict JSON: NaN and Infinity are refused here rather than by the server."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the message is not valid JSON: {exc}", code="not_json") from None


def batch_body(parts: Sequence[bytes]) -> bytes:
    return b'{"batch":[' + b",".join(parts) + b"]}"


def single_body(message: Message) -> bytes:
    """The body of `/v1/identify` or `/v1/ping` for a message (its fields without `type`)."""
    return encode({k: v for k, v in message.items() if k != "type"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a 429's `Retry-After` is honoured when longer."""

    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, error: TributaryError) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        # Jitter spreads the retries of many clients that failed together.
        wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - timing, not security
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_retry_after))
        return wait


def list_query(
    *,
    project: str | None = None,
    status: str | None = None,
    email: str | None = None,
    params: Mapping[str, Any] | None = None,
    q: str | None = None,
    active_since: datetime | str | None = None,
    created_since: datetime | str | None = None,
    sort: str | None = None,
    limit: int | None = None,
) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    for name, value in (
        ("project", project),
        ("status", status),
        ("email", email),
        ("q", q),
        ("sort", sort),
        ("limit", limit),
    ):
        if value is not None:
            query.append((name, str(value)))
    for name, moment in (("active_since", active_since), ("created_since", created_since)):
        if moment is not None:
            query.append((name, _timestamp(moment)))
    # JSON-encoded, so 5 matches the number 5 and "5" the string, as the server compares them.
    query.extend((f"params.{key}", json.dumps(value)) for key, value in (params or {}).items())
    return query
