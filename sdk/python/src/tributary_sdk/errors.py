"""Typed errors: one class per way a call can fail, all under `TributaryError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TributaryError(Exception):
    """Base class. `status` is the HTTP status (None for network failures); `code`, `message` and
    `details` come from the server's `{"error": {...}}` body."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class AuthenticationError(TributaryError):
    """401: the API key is missing, invalid or revoked."""


class PermissionDenied(TributaryError):
    """403: the key lacks the scope, or is bound to another project."""


class NotFound(TributaryError):
    """404: no such customer (or project), or not visible to this key."""


class ValidationError(TributaryError):
    """400/409/413/422: the server refused the request as invalid; retrying will not help."""


class RateLimited(TributaryError):
    """429: too many requests; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(TributaryError):
    """5xx: the server failed or is unavailable; safe to retry (message ids deduplicate)."""


class NetworkError(TributaryError):
    """The request did not complete (connection refused or reset, timeout)."""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone

    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_for(status: int, body: Any, headers: Mapping[str, str]) -> TributaryError:
    """The typed error for a non-2xx answer."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or f"HTTP {status}")
    fields: dict[str, Any] = {"status": status, "code": error.get("code"), "details": error.get("details")}
    if status == 401:
        return AuthenticationError(message, **fields)
    if status == 403:
        return PermissionDenied(message, **fields)
    if status == 404:
        return NotFound(message, **fields)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **fields)
    if status >= 500:
        return ServerError(message, **fields)
    return ValidationError(message, **fields)


def is_retryable(error: TributaryError) -> bool:
    return isinstance(error, RateLimited | ServerError | NetworkError)
