"""Sources: webhook URL (with a copy button), connector, project, masked secrets and rotation state,
last delivery; admins create sources here and see a generated secret once."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app import source_cache
from tributary.app.accounts import get_project
from tributary.app.dashboard.guard import admin_only
from tributary.app.dashboard.rejecting import for_source
from tributary.app.dashboard.views import db, reader, runtime, visible_projects
from tributary.app.domain_errors import DomainError
from tributary.app.errors import APIError, http_error
from tributary.app.sources import create_source, list_sources, parse_option_pairs, source_json
from tributary.connectors.registry import registry
from tributary.models import Event
from tributary.models.base import random_token


def _last_delivery(session: Session, source_id: str) -> Any:
    # Newest first along the primary key (ids are time-ordered): stops at the first match.
    return session.scalar(
        select(Event.received_at).where(Event.source_id == source_id).order_by(Event.id.desc()).limit(1)
    )


def sources() -> str:
    r = reader()
    public_url = runtime().settings.public_url
    with db().session() as session:
        rows = []
        for source in list_sources(session, r.account_id, r.project_id):
            last = _last_delivery(session, source.id)
            refused = for_source(runtime(), source.id)
            rows.append({**source_json(session, source, public_url), "last": last, "refused": refused})
    return render_template("sources.html", rows=rows)


def _form_context(session: Session, **extra: Any) -> dict[str, Any]:
    connectors = [(reg.name, reg.connector.title or reg.name) for reg in registry()]
    return {"connectors": connectors, "projects": visible_projects(session), "form": request.form, **extra}


def _create(secret: str) -> dict[str, Any]:
    r = reader()
    form = request.form
    with db().write_session() as session, session.begin():
        project = get_project(session, r.account_id, form.get("project") or "default")
        if r.project_id is not None and project.id != r.project_id:
            raise APIError(403, "project_forbidden", "this key is bound to another project")
        lines = (form.get("options") or "").splitlines()
        options = parse_option_pairs(line for line in lines if line.strip())
        source = create_source(
            session,
            r.account_id,
            connector=form.get("connector") or "",
            project=project,
            secrets=[secret] if secret else [],
            options=options,
            name=(form.get("name") or "").strip()[:200],
        )
        return source_json(session, source, runtime().settings.public_url)


@admin_only
def create() -> str | tuple[str, int]:
    if request.method == "POST":
        secret = (request.form.get("secret") or "").strip()
        generated = not secret and request.form.get("generate") == "on"
        if generated:
            secret = f"whsec_{random_token(32)}"
        try:
            data = _create(secret)
        except (APIError, DomainError) as refused:
            exc = http_error(refused)
            with db().session() as session:
                context = _form_context(session, error=exc.message)
            return render_template("source_new.html", **context), exc.status
        source_cache().invalidate(data["id"])
        return render_template("source_created.html", s=data, secret=secret if generated else None)
    with db().session() as session:
        return render_template("source_new.html", **_form_context(session, error=None))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/sources", "sources", sources)
    bp.add_url_rule("/sources/new", "create_source", create, methods=["GET", "POST"])
