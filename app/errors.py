"""One error shape for every failure: `{"error": {"code", "message", "details"}}`, never a trace."""

from __future__ import annotations

import io
import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from tributary.app.domain_errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from tributary.connectors.safe_json import bad_text

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


# The one mapping of the domain's refusals to HTTP (the CLI's is app/cli/__init__.py).
HTTP_STATUS: dict[type[DomainError], int] = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409}


def http_error(exc: DomainError | APIError) -> APIError:
    """A domain error as the API answers it; an `APIError` as it is."""
    if isinstance(exc, APIError):
        return exc
    status = next(code for kind, code in HTTP_STATUS.items() if isinstance(exc, kind))
    return APIError(status, exc.code, exc.message, exc.details)


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    return response


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or None,
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


def validation_error(exc: ValidationError) -> APIError:
    details = validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return APIError(400, "malformed_json", "the request body is not valid JSON", details)
    if any(d["type"] == "json_type" for d in details) or any(d["type"] == "model_type" for d in details):
        return APIError(400, "malformed_body", "the request body must be a JSON object", details)
    return APIError(400, "validation_error", "the request is invalid", details)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _read_at_most(stream: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while size <= limit and (chunk := stream.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _whole_chunked_body(limit: int) -> None:
    """A chunked body has no Content-Length, so werkzeug's stream stops quietly at the limit and
    the view parses a truncated body (a 400). Read it whole first: over the limit is a 413."""
    environ = request.environ
    # The header first: nearly every request has none, and `content_length` parses headers.
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not chunked or request.content_length is not None:
        return
    data = _read_at_most(environ["wsgi.input"], limit)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))


def _storable_query() -> None:
    """Query values reach database filters; PostgreSQL refuses NUL in text: an invalid filter."""
    if not request.environ.get("QUERY_STRING"):
        return  # most requests have none: no need to build `request.args`
    if bad := sorted({k for k, v in request.args.items(multi=True) if bad_text(k) or bad_text(v)}):
        details = [
            {"field": name, "message": "contains a NUL character or a lone surrogate", "type": "value_error"}
            for name in bad
        ]
        raise APIError(400, "validation_error", "the query string is invalid", details)


def register_error_handlers(app: Flask) -> None:
    @app.before_request
    def _guard_input() -> None:
        _whole_chunked_body(int(app.config["MAX_CONTENT_LENGTH"]))
        _storable_query()

    @app.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        return _api_error(http_error(exc))

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return _api_error(validation_error(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        response = error_response(status, code, message)
        if status == 405 and (allowed := exc.get_response().headers.get("Allow")):
            response.headers["Allow"] = allowed
        return response

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError) -> Response:
        log.error("database unavailable: %s", exc.orig)
        response = error_response(503, "database_unavailable", "the database is unavailable; retry later")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(DataError)
    def _unstorable(exc: DataError) -> Response:
        # The last line of defence behind validation: the database refused a value the request
        # carried (PostgreSQL: NUL in text). A path naming such a value names nothing (404).
        log.warning("the database refused a request value: %s", exc.orig)
        if any(isinstance(v, str) and bad_text(v) for v in (request.view_args or {}).values()):
            return error_response(404, "not_found", "nothing exists at this path")
        return error_response(400, "unstorable_value", "the request holds a value that cannot be stored")

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError) -> Response:
        if exc.connection_invalidated:
            return _database_down(exc)  # type: ignore[arg-type]
        log.exception("database error")
        return error_response(500, "internal_error", "an internal error occurred")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred")
