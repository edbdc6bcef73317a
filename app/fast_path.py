"""The hottest doors served without Flask's per-request machinery: `POST /v1/identify`,
`POST /v1/ping`, `POST /v1/batch` and `POST /webhooks/<source id>`.

Why: every SDK call, app event and provider delivery comes through these, and Flask's own work
around a view (the request context and its proxies, URL matching, the before/after hooks, a
`Response` object) cost about as much of a web process's CPU as the rest of an identify: a plain
WSGI app under the same gunicorn answered at 0.22 ms of machine CPU a request where bare Flask took
0.37 (bench/README.md, 2026-12-05). So a plain request to one of these doors is answered here, by
the same code as the Flask views past the request's envelope (`principal_for` and
app/api/ingest.py `accept` or app/api/batch.py `accept_batch`; app/api/webhooks.py `deliver`):
only the envelope differs.

Plain means: POST to exactly a door's path, no query string, a Content-Length within the body
limit, no Transfer-Encoding. Anything else goes to Flask untouched (the same views, with their
input guards). A refusal raised here (a bad key or signature, an invalid message, a 429, the
database down) is answered by Flask's own error handlers, in a request context made for it then,
so every error is the one the Flask route gives: a refused delivery is recorded as the view's
`record_rejections` records it, and the metrics hook times the request as it times every one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Response, g
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import HTTP_STATUS_CODES

from tributary.app.api import batch, webhooks
from tributary.app.api.batch import MAX_BATCH_BYTES, accept_batch
from tributary.app.api.ingest import DOORS, accept
from tributary.app.api.webhooks import deliver
from tributary.app.auth import Principal, principal_for
from tributary.app.rejections import note_refusal
from tributary.app.schemas import PingRequest
from tributary.connectors.base import Headers, InboundRequest

if TYPE_CHECKING:
    from flask import Flask

    from tributary.app import Extensions

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# werkzeug's status lines, as the Flask views send them.
_STATUS = {code: f"{code} {HTTP_STATUS_CODES[code].upper()}" for code in (200, 202)}


class FastPath:
    """WSGI middleware in front of the Flask app (`app.wsgi_app`)."""

    def __init__(self, app: Flask, following: WSGIApp) -> None:
        self.app = app
        self.following = following  # Flask's own `wsgi_app`: every other request
        self.ext: Extensions = app.extensions["tributary"]
        self.served = 0  # requests answered here (refusals aside), for tests

    @classmethod
    def install(cls, app: Flask) -> FastPath:
        fast = cls(app, app.wsgi_app)
        app.wsgi_app = fast  # type: ignore[method-assign]
        return fast

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        answering: Callable[[dict[str, Any], int, list[bytes]], tuple[int, str | Response]]
        own_limit: int | None = None  # a door's limit below the app's
        if (door := DOORS.get(path)) is not None:
            answering, route, source_id = functools.partial(self._accept, door), path, None
        elif path == batch.PATH:
            answering, route, source_id = self._batch, path, None
            own_limit = MAX_BATCH_BYTES  # a larger batch is its view's own 413
        elif (source_id := _source_id(path)) is not None:
            answering, route = functools.partial(self._deliver, source_id), webhooks.RULE
        else:
            return self.following(environ, start_response)
        largest = int(self.app.config["MAX_CONTENT_LENGTH"])
        length = _plain_length(environ, largest if own_limit is None else min(largest, own_limit))
        if length is None:
            return self.following(environ, start_response)
        started = time.perf_counter()
        read: list[bytes] = []  # the body once read, for a refused delivery's record
        try:
            status, answer = answering(environ, length, read)
        except Exception as exc:  # answered as the Flask route answers it
            return self._refusal(environ, start_response, exc, started, source_id, read)
        self.served += 1
        if isinstance(answer, Response):  # a batch's answer, or a connector's handshake answer
            status = answer.status_code
            response: Iterable[bytes] = answer(environ, start_response)
        else:
            data = answer.encode()
            start_response(
                _STATUS[status], [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
            )
            response = [data]
        self.ext.timings.observe(route, "POST", status, time.perf_counter() - started)
        return response

    def _accept(
        self, door: tuple[str, type[PingRequest]], environ: dict[str, Any], length: int, read: list[bytes]
    ) -> tuple[int, str]:
        """Identify or ping, as app/api/ingest.py's view: the key first, then the message."""
        principal, digest = self._ingest_key(environ)
        body = _read(environ["wsgi.input"], length)
        return 202, accept(self.ext, principal, digest, door, body, environ.get("HTTP_IDEMPOTENCY_KEY"))

    def _batch(self, environ: dict[str, Any], length: int, read: list[bytes]) -> tuple[int, Response]:
        """`/v1/batch`, as app/api/batch.py's view: the key first, then the messages."""
        principal, digest = self._ingest_key(environ)
        return 202, accept_batch(self.app, principal, digest, _read(environ["wsgi.input"], length))

    def _ingest_key(self, environ: dict[str, Any]) -> tuple[Principal, str]:
        """The ingest doors' `authenticate`: the key is checked again by their INSERT."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        return principal_for(self.ext, authorization, "ingest", revocation_checked_by_write=True)

    def _deliver(
        self, source_id: str, environ: dict[str, Any], length: int, read: list[bytes]
    ) -> tuple[int, str | Response]:
        """A webhook delivery, as app/api/webhooks.py's view: the body first, then the source."""
        read.append(_read(environ["wsgi.input"], length))
        # The headers as Flask's `request.headers` lists them (werkzeug's view of the environ).
        inbound = InboundRequest(body=read[0], headers=Headers(dict(EnvironHeaders(environ).items())))
        return 200, deliver(self.app, source_id, inbound)

    def _refusal(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        exc: Exception,
        started: float,
        source_id: str | None,
        read: list[bytes],
    ) -> Iterable[bytes]:
        """Called while `exc` is being handled (Flask's handlers log it from there)."""
        app = self.app
        with app.request_context(environ):
            g.tributary_started = started  # the metrics hook (app/api/metrics.py) times it
            if source_id is not None:
                note_refusal(source_id, exc, read[0] if read else None)
            response = app.finalize_request(app.handle_user_exception(exc))
        return response(environ, start_response)


def _plain_length(environ: dict[str, Any], largest: int) -> int | None:
    """The body's length when the request is plain (module docstring), else None."""
    if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
        return None
    if "HTTP_TRANSFER_ENCODING" in environ:
        return None
    length = environ.get("CONTENT_LENGTH", "")
    if not (length.isascii() and length.isdigit()) or len(length) > 12:  # no sign, no spaces
        return None
    size = int(length)
    return size if size <= largest else None


def _source_id(path: str) -> str | None:
    """The source id of a webhook path Flask would route to the delivery view (one segment, no
    escapes to decode: PATH_INFO is ASCII), else None."""
    if not path.startswith(webhooks.PREFIX) or not path.isascii():
        return None
    source_id = path[len(webhooks.PREFIX) :]
    return source_id if source_id and "/" not in source_id else None


def _read(stream: Any, length: int) -> bytes:
    """The whole body; a client that hung up before sending it is a 400, as werkzeug answers it."""
    chunks, size = [], 0
    while size < length and (chunk := stream.read(length - size)):
        chunks.append(chunk)
        size += len(chunk)
    if size < length:
        raise ClientDisconnected()
    return b"".join(chunks)
