"""Account bootstrap and the operations the admin API and CLI share (projects, keys)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tributary.app.auth import generate_key, hash_key
from tributary.app.domain_errors import Conflict, NotFound
from tributary.connectors.safe_json import bad_text
from tributary.models import Account, ApiKey, Project
from tributary.models.base import isoformat, utcnow

DEFAULT_PROJECT = "default"


def ensure_account(session: Session) -> tuple[Account, bool]:
    """The install's account (one per install today), with a `default` project. Returns
    (account, created)."""
    account = session.scalar(select(Account).order_by(Account.created_at).limit(1))
    if account is not None:
        return account, False
    account = Account(name="default")
    session.add(account)
    session.flush()
    session.add(Project(account_id=account.id, slug=DEFAULT_PROJECT, name="Default"))
    session.flush()
    return account, True


def get_project(session: Session, account_id: str, slug: str) -> Project:
    project = session.scalar(select(Project).where(Project.account_id == account_id, Project.slug == slug))
    if project is None:
        raise NotFound("project_not_found", f"no project with slug {slug!r}")
    return project


def create_project(session: Session, account_id: str, slug: str, name: str | None) -> Project:
    project = Project(account_id=account_id, slug=slug, name=name or slug)
    session.add(project)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("project_exists", f"a project with slug {slug!r} already exists") from None
    return project


def project_json(project: Project) -> dict[str, object]:
    return {
        "id": project.id,
        "slug": project.slug,
        "name": project.name,
        "created_at": isoformat(project.created_at),
    }


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    token: str


def create_key(
    session: Session, account_id: str, scopes: list[str], project: Project | None = None, name: str = ""
) -> NewKey:
    token, prefix = generate_key()
    key = ApiKey(
        account_id=account_id,
        name=name,
        prefix=prefix,
        secret_hash=hash_key(token),
        scopes=sorted(set(scopes)),
        project_id=project.id if project else None,
    )
    session.add(key)
    session.flush()
    return NewKey(key, token)


def visible_projects(session: Session, account_id: str, project_id: str | None = None) -> list[Project]:
    """The account's projects; only `project_id` for a project-bound key."""
    stmt = select(Project).where(Project.account_id == account_id)
    if project_id is not None:
        stmt = stmt.where(Project.id == project_id)
    return list(session.scalars(stmt.order_by(Project.slug)))


def visible_keys(session: Session, account_id: str, project_id: str | None = None) -> list[ApiKey]:
    """The account's keys; for a project-bound key only the keys bound to its project (account-wide
    keys and other projects' keys do not exist as far as it can tell)."""
    stmt = select(ApiKey).where(ApiKey.account_id == account_id)
    if project_id is not None:
        stmt = stmt.where(ApiKey.project_id == project_id)
    return list(session.scalars(stmt.order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, account_id: str, key_id: str, project_id: str | None = None) -> ApiKey:
    """Revoke a key of the account (of `project_id` only, for a project-bound caller), else 404."""
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
    if project_id is not None:
        stmt = stmt.where(ApiKey.project_id == project_id)
    # An id with NUL names no key, and PostgreSQL would refuse to even compare it.
    key = None if bad_text(key_id) else session.scalar(stmt)
    if key is None:
        raise NotFound("key_not_found", f"no key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def key_json(session: Session, key: ApiKey) -> dict[str, object]:
    project = session.get(Project, key.project_id) if key.project_id else None
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "project": project.slug if project else None,
        "created_at": isoformat(key.created_at),
        "revoked_at": isoformat(key.revoked_at),
    }
