"""`GET /v1/sources/<id>/rejections` (SPEC §5, admin): a source's refused deliveries. Storage and
bounds are in app/rejections.py."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from tributary.app.auth import authenticate
from tributary.app.openapi import describe
from tributary.app.ops_schemas import RejectionsOut
from tributary.app.rejections import rejections
from tributary.app.sources import find_source
from tributary.runtime.process import Runtime

bp = Blueprint("rejections", __name__)


@bp.get("/v1/sources/<source_id>/rejections")
@describe(
    summary="Refused deliveries of a source: counts per reason and the last 100 (never their bodies)",
    tag="admin",
    scope="admin",
    responses={200: RejectionsOut},
    errors=(401, 403, 404, 429),
)
def get_rejections(source_id: str) -> Response:
    principal = authenticate("admin")
    runtime: Runtime = current_app.extensions["tributary"].runtime
    with runtime.db.session() as session:
        source = find_source(session, principal.account_id, source_id, principal.project_id)
    return jsonify(rejections(runtime, source.id))
