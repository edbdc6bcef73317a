"""Admin API: projects and API keys (sources join in the connector framework)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from tributary.app.accounts import (
    create_key,
    create_project,
    get_project,
    key_json,
    project_json,
    revoke_key,
    visible_keys,
    visible_projects,
)
from tributary.app.auth import announce_revocation, authenticate
from tributary.app.errors import APIError
from tributary.app.openapi import describe
from tributary.app.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    ProjectCreate,
    ProjectList,
    ProjectOut,
)
from tributary.models import Database

bp = Blueprint("admin", __name__)


def _db() -> Database:
    db: Database = current_app.extensions["tributary"].runtime.db
    return db


def _body() -> bytes:
    return request.get_data(cache=False)


@bp.get("/v1/projects")
@describe(
    summary="List projects (a project-bound key sees its own only)",
    tag="admin",
    scope="admin",
    responses={200: ProjectList},
    errors=(401, 403, 429),
)
def list_projects() -> Response:
    principal = authenticate("admin")
    with _db().session() as session:
        projects = visible_projects(session, principal.account_id, principal.project_id)
        return jsonify(data=[project_json(p) for p in projects])


@bp.post("/v1/projects")
@describe(
    summary="Create a project (account-wide admin keys only)",
    tag="admin",
    scope="admin",
    body=ProjectCreate,
    responses={201: ProjectOut},
    errors=(400, 401, 403, 409, 429),
)
def post_project() -> Response:
    principal = authenticate("admin", account_wide="creating a project")
    payload = ProjectCreate.model_validate_json(_body())
    with _db().write_session() as session, session.begin():
        project = create_project(session, principal.account_id, payload.slug, payload.name)
        response = jsonify(project_json(project))
    response.status_code = 201
    return response


@bp.get("/v1/keys")
@describe(
    summary="List API keys, never their secrets (a project-bound key sees its project's only)",
    tag="admin",
    scope="admin",
    responses={200: KeyList},
    errors=(401, 403, 429),
)
def list_keys() -> Response:
    principal = authenticate("admin")
    with _db().session() as session:
        keys = visible_keys(session, principal.account_id, principal.project_id)
        return jsonify(data=[key_json(session, k) for k in keys])


@bp.post("/v1/keys")
@describe(
    summary="Create an API key; the secret is in this response only",
    tag="admin",
    scope="admin",
    body=KeyCreate,
    responses={201: KeyCreated},
    errors=(400, 401, 403, 404, 429),
)
def post_key() -> Response:
    principal = authenticate("admin")
    payload = KeyCreate.model_validate_json(_body())
    with _db().write_session() as session, session.begin():
        project = get_project(session, principal.account_id, payload.project) if payload.project else None
        if principal.project_id is not None and (project is None or project.id != principal.project_id):
            raise APIError(
                403, "project_forbidden", "a project-bound key can only create keys for its project"
            )
        new = create_key(session, principal.account_id, payload.scopes, project, payload.name)
        response = jsonify({**key_json(session, new.key), "key": new.token})
    response.status_code = 201
    return response


@bp.delete("/v1/keys/<key_id>")
@describe(
    summary="Revoke an API key (a project-bound key: only its project's)",
    tag="admin",
    scope="admin",
    responses={200: KeyOut},
    errors=(401, 403, 404, 429),
)
def delete_key(key_id: str) -> Response:
    principal = authenticate("admin")
    with _db().write_session() as session, session.begin():
        key = revoke_key(session, principal.account_id, key_id, principal.project_id)
        body = key_json(session, key)
    extensions = current_app.extensions["tributary"]
    extensions.key_cache.invalidate()
    announce_revocation(extensions.runtime)
    return jsonify(body)
