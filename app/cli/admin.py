"""`tributary projects …` and `tributary keys …`."""

from __future__ import annotations

import re

import click
from sqlalchemy import select

from tributary.app.accounts import (
    create_key,
    create_project,
    ensure_account,
    get_project,
    key_json,
    project_json,
    revoke_key,
)
from tributary.app.auth import announce_revocation
from tributary.app.cli import cli, emit, runtime
from tributary.app.schemas import PROJECT_SLUG
from tributary.models import SCOPES, ApiKey, Project
from tributary.runtime.embedded_redis import EmbeddedRedis


@cli.group("projects")
def projects() -> None:
    """Projects: each has its own status and params per customer."""


@projects.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (defaults to the slug).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def projects_create(slug: str, name: str | None, as_json: bool) -> None:
    if not re.match(PROJECT_SLUG, slug):
        raise click.BadParameter("lower-case letters, digits and dashes", param_hint="SLUG")
    with runtime().db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        project = create_project(session, account.id, slug, name)
        data = project_json(project)
    emit(data, as_json, f"created project {slug} ({data['id']})")


@projects.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def projects_list(as_json: bool) -> None:
    with runtime().db.session() as session, session.begin():
        account, _ = ensure_account(session)
        rows = [
            project_json(p) for p in session.scalars(select(Project).where(Project.account_id == account.id))
        ]
    emit(rows, as_json, "\n".join(f"{r['slug']}\t{r['name']}\t{r['id']}" for r in rows) or "no projects")


@cli.group("keys")
def keys() -> None:
    """API keys: shown once at creation, stored hashed."""


def _scopes(values: tuple[str, ...]) -> list[str]:
    scopes = sorted({s.strip() for value in values for s in value.split(",") if s.strip()})
    if not scopes or set(scopes) - set(SCOPES):
        raise click.BadParameter(f"choose among {', '.join(SCOPES)}", param_hint="--scope")
    return scopes


@keys.command("create")
@click.option("--scope", "scope", multiple=True, required=True, help="ingest, read or admin (repeatable).")
@click.option("--project", help="Bind the key to one project.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_create(scope: tuple[str, ...], project: str | None, name: str, as_json: bool) -> None:
    scopes = _scopes(scope)
    with runtime().db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        bound = get_project(session, account.id, project) if project else None
        new = create_key(session, account.id, scopes, bound, name)
        data = {**key_json(session, new.key), "key": new.token}
    emit(data, as_json, f"{new.token}\n(key {data['id']}, scopes {','.join(scopes)}; shown only once)")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(as_json: bool) -> None:
    with runtime().db.session() as session, session.begin():
        account, _ = ensure_account(session)
        rows = [
            key_json(session, k)
            for k in session.scalars(
                select(ApiKey).where(ApiKey.account_id == account.id).order_by(ApiKey.created_at)
            )
        ]
    lines = [
        f"{r['id']}\t{r['prefix']}…\t{','.join(r['scopes'])}\t{r['project'] or '*'}\t"  # type: ignore[arg-type]
        f"{'revoked' if r['revoked_at'] else 'active'}"
        for r in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "no keys")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    with runtime().db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        revoke_key(session, account.id, key_id)
    settings = runtime().settings
    # An embedded Redis nobody runs means no web process is up to be told (and none is started).
    if not settings.embedded_redis or EmbeddedRedis(settings.home).responding():
        announce_revocation(runtime())
    click.echo(f"revoked {key_id}")
