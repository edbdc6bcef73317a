"""API keys (admin): list, create (the secret shown once), revoke. A project-bound admin key sees and
manages only its project's keys, as in the admin API."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from tributary.app.accounts import create_key, get_project, key_json, revoke_key
from tributary.app.dashboard.guard import admin_only
from tributary.app.dashboard.views import db, reader, visible_projects
from tributary.app.domain_errors import DomainError
from tributary.app.errors import APIError, http_error
from tributary.models import SCOPES, ApiKey


@admin_only
def keys() -> str:
    r = reader()
    with db().session() as session:
        stmt = select(ApiKey).where(ApiKey.account_id == r.account_id).order_by(ApiKey.created_at.desc())
        if r.project_id is not None:
            stmt = stmt.where(ApiKey.project_id == r.project_id)
        rows = [key_json(session, k) for k in session.scalars(stmt)]
        projects = visible_projects(session)
    return render_template("keys.html", rows=rows, projects=projects, scopes=SCOPES, error=None)


def _create() -> tuple[dict[str, object], str]:
    r = reader()
    form = request.form
    scopes = [s for s in form.getlist("scopes") if s in SCOPES]
    if not scopes:
        raise APIError(400, "validation_error", "choose at least one scope")
    with db().write_session() as session, session.begin():
        slug = form.get("project") or None
        project = get_project(session, r.account_id, slug) if slug else None
        if r.project_id is not None and (project is None or project.id != r.project_id):
            raise APIError(403, "project_forbidden", "a project-bound key creates keys for its project only")
        new = create_key(session, r.account_id, scopes, project, (form.get("name") or "").strip()[:200])
        return key_json(session, new.key), new.token


@admin_only
def create() -> str | tuple[str, int]:
    try:
        data, token = _create()
    except (APIError, DomainError) as refused:
        exc = http_error(refused)
        with db().session() as session:
            projects = visible_projects(session)
        page = render_template("keys.html", rows=[], projects=projects, scopes=SCOPES, error=exc.message)
        return page, exc.status
    return render_template("key_created.html", k=data, token=token)


@admin_only
def revoke(key_id: str) -> Response:
    r = reader()
    with db().write_session() as session, session.begin():
        key = session.get(ApiKey, key_id)
        if key is None or key.account_id != r.account_id or (r.project_id and key.project_id != r.project_id):
            abort(404, "no such key")
        revoke_key(session, r.account_id, key_id)
    current_app.extensions["tributary"].key_cache.invalidate()
    return redirect(url_for("dashboard.keys"))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/keys", "keys", keys)
    bp.add_url_rule("/keys", "create_key", create, methods=["POST"])
    bp.add_url_rule("/keys/<key_id>/revoke", "revoke_key", revoke, methods=["POST"])
