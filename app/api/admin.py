"""Admin API: projects and API keys (sources join in the connector framework)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from app.accounts import create_key, create_project, get_project, key_json, project_json, revoke_key
from app.auth import authenticate
from app.errors import APIError
from app.openapi import describe
from app.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, ProjectCreate, ProjectList, ProjectOut
from models import ApiKey, Database, Project

bp = Blueprint("admin", __name__)


def _db() -> Database:
    db: Database = current_app.extensions["tributary"].runtime.db
    return db


def _body() -> bytes:
    return request.get_data(cache=False)


@bp.get("/v1/projects")
@describe(summary="List projects", tag="admin", scope="admin", responses={200: ProjectList})
def list_projects() -> Response:
    principal = authenticate("admin")
    with _db().session() as session:
        projects = session.scalars(
            select(Project).where(Project.account_id == principal.account_id).order_by(Project.slug)
        )
        return jsonify(data=[project_json(p) for p in projects])


@bp.post("/v1/projects")
@describe(
    summary="Create a project",
    tag="admin",
    scope="admin",
    body=ProjectCreate,
    responses={201: ProjectOut},
    errors=(400, 401, 403, 409, 429),
)
def post_project() -> Response:
    principal = authenticate("admin")
    if principal.project_id is not None:
        raise APIError(403, "forbidden", "a project-bound key cannot create projects")
    payload = ProjectCreate.model_validate_json(_body())
    with _db().session() as session, session.begin():
        project = create_project(session, principal.account_id, payload.slug, payload.name)
        response = jsonify(project_json(project))
    response.status_code = 201
    return response


@bp.get("/v1/keys")
@describe(summary="List API keys (never their secrets)", tag="admin", scope="admin", responses={200: KeyList})
def list_keys() -> Response:
    principal = authenticate("admin")
    with _db().session() as session:
        keys = session.scalars(
            select(ApiKey).where(ApiKey.account_id == principal.account_id).order_by(ApiKey.created_at)
        )
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
    with _db().session() as session, session.begin():
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
    summary="Revoke an API key", tag="admin", scope="admin", responses={200: KeyOut}, errors=(401, 403, 404)
)
def delete_key(key_id: str) -> Response:
    principal = authenticate("admin")
    with _db().session() as session, session.begin():
        key = revoke_key(session, principal.account_id, key_id)
        body = key_json(session, key)
    current_app.extensions["tributary"].key_cache.invalidate()
    return jsonify(body)
