"""gunicorn settings for every Tributary web process: the Procfile's `web` and `tributary serve` both
run `gunicorn -c python:tributary.app.gunicorn_conf tributary.app.wsgi:app` (options given on the
command line win).

Why these values:
- `gthread` workers: a connection whose request has not fully arrived ties up one thread, not the
  whole process, and the worker's heartbeat runs in its main loop, so a slow upload never gets the
  worker killed by `timeout` (sync workers were: 500s after 30 s, and 8 slow connections starved
  `/healthz`). gthread ships with gunicorn: no new dependency.
- `threads` = 16 per process: several times the slow connections one client could hold before the
  proxy in front sheds them, while staying near the database pool (5 + 10 overflow connections per
  process), so threads rarely queue for a connection.
- Slow clients at scale are the job of the buffering reverse proxy expected in front (nginx,
  HAProxy, a cloud load balancer): it reads whole requests before passing them on (README,
  "Production").
- gunicorn's own refusals (request line or headers too large, malformed request) are answered in the
  API's JSON error shape instead of gunicorn's HTML page.
- glibc's malloc arenas are capped at two (`limit_malloc_arenas`): sixteen threads otherwise
  keep up to sixteen arenas' worth of freed memory each worker.
- The access log goes to stdout in gunicorn's format, written by `AccessLogger` (app/access_log.py):
  the same lines for a fraction of gunicorn's CPU per request.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
from typing import Any

from gunicorn import util

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))  # `tributary serve` passes --workers
worker_class = "gthread"
threads = int(os.environ.get("TRIBUTARY_WEB_THREADS", "16"))
# With gthread this only bounds a worker whose main loop is stuck (no heartbeat), never a request.
timeout = 30
graceful_timeout = 30
keepalive = 5
# gunicorn's defaults, stated: a longer request line is a 414, more or longer headers a 431.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
logger_class = "tributary.app.access_log.AccessLogger"

_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response in the API's error shape, for errors gunicorn answers itself."""
    body = json.dumps(
        {"error": {"code": _ERROR_CODES.get(status, "http_error"), "message": message or reason}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, json_error(int(status_int), reason, mesg))


# glibc's malloc gives each thread that allocates its own arena (up to 8 per CPU), and an arena keeps
# what it once held: with 16 threads, the peak resident memory of a worker serving `/v1/batch` was
# 112-120 MiB, 105-106 with two arenas, at the same throughput (bench/README.md). The GIL serialises
# the threads' Python allocations anyway, so two arenas leave little to contend for.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # from glibc's <malloc.h>


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process and the processes it forks afterwards (they
    inherit the setting), as `MALLOC_ARENA_MAX` would; returns whether it was set. Not on other C
    libraries, and not when `MALLOC_ARENA_MAX` is in the environment: the operator's value wins."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and mallopt(_M_ARENA_MAX, count) == 1


def on_starting(server: Any) -> None:
    # In the master, before it forks any worker.
    limit_malloc_arenas()


def post_worker_init(worker: Any) -> None:
    # gunicorn writes its refusals through this one function (`util.write_error`, an HTML page).
    util.write_error = _write_json_error
