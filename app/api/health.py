"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from tributary.app.openapi import build_document, describe
from tributary.app.schemas import Health

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@describe(summary="The process is up", tag="health", responses={200: Health}, errors=())
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
@describe(
    summary="The database and Redis are reachable",
    tag="health",
    responses={200: Health, 503: Health},
    errors=(),
)
def readyz() -> Response:
    runtime = current_app.extensions["tributary"].runtime
    checks: dict[str, str] = {}
    try:
        runtime.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        # The short-timeout client: a hung Redis makes the probe answer 503, not hang with it.
        runtime.fast_redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    response = jsonify(status="ok" if ok else "unavailable", checks=checks)
    response.status_code = 200 if ok else 503
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    # Built once per process: the routes and schemas cannot change while it runs.
    document = current_app.extensions.get("tributary.openapi")
    if document is None:
        document = current_app.extensions["tributary.openapi"] = build_document(current_app)
    return jsonify(document)
