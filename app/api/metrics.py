"""`GET /metrics` (Prometheus text format) and the hooks timing every request. What is measured and
why it is right across processes is explained in app/metrics.py."""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from tributary.app.errors import APIError
from tributary.app.metrics import RequestTimings, TributaryCollector
from tributary.app.openapi import describe
from tributary.runtime.process import Runtime

bp = Blueprint("metrics", __name__)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def init_app(app: Flask) -> None:
    timings: RequestTimings = app.extensions["tributary"].timings

    @app.before_request
    def _start_timer() -> None:
        g.tributary_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("tributary_started")
        if started is not None and request.endpoint != "metrics.metrics":
            # The rule (`/v1/customers/<ref>`), never the path: labels stay few whatever is requested.
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            timings.observe(route, request.method, response.status_code, time.perf_counter() - started)
        return response


def _check_token() -> None:
    token = _runtime().settings.metrics_token
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(
            401,
            "unauthorized",
            "send the metrics token as `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": 'Bearer realm="tributary-metrics"'},
        )


@bp.get("/metrics")
@describe(
    summary="Prometheus metrics (install-wide; a bearer token when TRIBUTARY_METRICS_TOKEN is set)",
    tag="ops",
    responses={200: "Prometheus text exposition format"},
    errors=(401,),
)
def metrics() -> Response:
    _check_token()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TributaryCollector(_runtime()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
