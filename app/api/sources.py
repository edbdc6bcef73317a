"""Admin API for sources: `GET|POST /v1/sources`, `GET|DELETE /v1/sources/<id>`, and secret rotation
(`POST /v1/sources/<id>/secrets`, `DELETE /v1/sources/<id>/secrets/<secret id>`).

A project-bound admin key sees and manages only its project's sources; anything else is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, Field, JsonValue
from sqlalchemy.orm import Session

from tributary.app import source_cache
from tributary.app.accounts import get_project
from tributary.app.auth import Principal, authenticate
from tributary.app.errors import APIError
from tributary.app.openapi import QueryParam, describe
from tributary.app.schemas import NO_NUL, PROJECT_SLUG, StrictModel
from tributary.app.sources import (
    MAX_SECRETS,
    add_secret,
    create_source,
    delete_source,
    find_source,
    list_sources,
    remove_secret,
    source_json,
)
from tributary.models import Project
from tributary.runtime.process import Runtime

bp = Blueprint("sources", __name__)

# What `_clean_secret` accepts: 1-1024 characters once trimmed, no NUL.
Secret = Annotated[
    str, Field(min_length=1, max_length=1024, pattern=r"^\s*[^\s\x00]([^\x00]*[^\s\x00])?\s*$")
]


class SourceCreate(StrictModel):
    """A new source"""

    connector: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$", examples=["stripe"])]
    project: Annotated[str, Field(pattern=PROJECT_SLUG)] | None = Field(
        default=None, description="Project slug; default `default`, or the key's project."
    )
    name: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""
    secrets: Annotated[list[Secret], Field(max_length=MAX_SECRETS)] = Field(
        default_factory=list, description="Signing secrets (at most two: rotation). May be added later."
    )
    options: dict[str, JsonValue] = Field(default_factory=dict, description="Validated by the connector.")


class SecretCreate(StrictModel):
    """A secret to add to a source"""

    secret: Secret


class SecretOut(BaseModel):
    id: str
    hint: str = Field(description="Masked: never the secret itself.")
    created_at: str


class SourceOut(BaseModel):
    """A source"""

    id: str
    url: str = Field(description="Give this URL to the provider.")
    connector: str
    project: str | None
    name: str
    secrets: list[SecretOut]
    options: dict[str, Any] = Field(description="Credentials among them are masked.")
    created_at: str
    deleted_at: str | None


class SourceList(BaseModel):
    """Active sources"""

    data: list[SourceOut]


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def _public_url() -> str:
    return _runtime().settings.public_url


def _project_scope(session: Session, principal: Principal, slug: str | None) -> Project:
    """The project a request may act on: the key's own, or the named one for account-wide keys."""
    if principal.project_id is not None:
        project = session.get(Project, principal.project_id)
        if project is None or (slug is not None and slug != project.slug):
            raise APIError(403, "project_forbidden", "this key is bound to another project")
        return project
    return get_project(session, principal.account_id, slug or "default")


def _json(data: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    return response


@bp.get("/v1/sources")
@describe(
    summary="List sources (secrets masked)",
    tag="admin",
    scope="admin",
    responses={200: SourceList},
    query=[QueryParam("project", "Only this project's sources (slug).")],
    errors=(400, 401, 403, 404, 429),
)
def get_sources() -> Response:
    principal = authenticate("admin")
    slug = request.args.get("project")
    with _runtime().db.session() as session:
        project_id = principal.project_id
        if slug is not None:
            project_id = _project_scope(session, principal, slug).id
        sources = list_sources(session, principal.account_id, project_id)
        return jsonify(data=[source_json(session, s, _public_url()) for s in sources])


@bp.post("/v1/sources")
@describe(
    summary="Create a source; the response has its webhook URL",
    tag="admin",
    scope="admin",
    body=SourceCreate,
    responses={201: SourceOut},
    errors=(400, 401, 403, 404, 429),
)
def post_source() -> Response:
    principal = authenticate("admin")
    payload = SourceCreate.model_validate_json(request.get_data(cache=False))
    with _runtime().db.write_session() as session, session.begin():
        project = _project_scope(session, principal, payload.project)
        source = create_source(
            session,
            principal.account_id,
            connector=payload.connector,
            project=project,
            secrets=payload.secrets,
            options=payload.options,
            name=payload.name,
        )
        data = source_json(session, source, _public_url())
    return _json(data, 201)


@bp.get("/v1/sources/<source_id>")
@describe(summary="Show a source (secrets masked)", tag="admin", scope="admin", responses={200: SourceOut})
def get_source(source_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.session() as session:
        source = find_source(session, principal.account_id, source_id, principal.project_id)
        return jsonify(source_json(session, source, _public_url()))


@bp.delete("/v1/sources/<source_id>")
@describe(
    summary="Delete a source: its URL answers 404 from now on; stored events are kept",
    tag="admin",
    scope="admin",
    responses={200: SourceOut},
    errors=(401, 403, 404, 429),
)
def delete_source_view(source_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.write_session() as session, session.begin():
        source = find_source(session, principal.account_id, source_id, principal.project_id)
        delete_source(session, source)
        data = source_json(session, source, _public_url())
    source_cache().invalidate(source_id)
    return jsonify(data)


@bp.post("/v1/sources/<source_id>/secrets")
@describe(
    summary="Add a signing secret (rotation: add the new one, then remove the old one)",
    tag="admin",
    scope="admin",
    body=SecretCreate,
    responses={201: SourceOut},
    errors=(400, 401, 403, 404, 409, 429),
)
def post_secret(source_id: str) -> Response:
    principal = authenticate("admin")
    payload = SecretCreate.model_validate_json(request.get_data(cache=False))
    with _runtime().db.write_session() as session, session.begin():
        source = find_source(session, principal.account_id, source_id, principal.project_id)
        add_secret(session, source, payload.secret)
        data = source_json(session, source, _public_url())
    source_cache().invalidate(source_id)
    return _json(data, 201)


@bp.delete("/v1/sources/<source_id>/secrets/<secret_id>")
@describe(
    summary="Remove a signing secret",
    tag="admin",
    scope="admin",
    responses={200: SourceOut},
    errors=(401, 403, 404, 429),
)
def delete_secret(source_id: str, secret_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.write_session() as session, session.begin():
        source = find_source(session, principal.account_id, source_id, principal.project_id)
        remove_secret(session, source, secret_id)
        data = source_json(session, source, _public_url())
    source_cache().invalidate(source_id)
    return jsonify(data)
