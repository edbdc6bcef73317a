"""Dashboard pages, one module per page; each module's `register(bp)` adds its routes."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.customer_query import Reader
from tributary.app.dashboard.guard import viewer
from tributary.models import Database, Project
from tributary.runtime.process import Runtime


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["tributary"].runtime
    return rt


def db() -> Database:
    return runtime().db


def secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def reader() -> Reader:
    principal = viewer().principal
    return Reader(principal.account_id, principal.project_id)


def visible_projects(session: Session) -> list[Project]:
    """The projects the viewer may see: all of the account's, or the one its key is bound to."""
    principal = viewer().principal
    stmt = select(Project).where(Project.account_id == principal.account_id).order_by(Project.slug)
    if principal.project_id is not None:
        stmt = stmt.where(Project.id == principal.project_id)
    return list(session.scalars(stmt))
