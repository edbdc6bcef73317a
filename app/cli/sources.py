"""`tributary sources create|list|show|delete` and `tributary sources secret add|remove`.

Secret rotation without dropping deliveries: `secret add` the provider's new secret (both verify),
switch the provider over, then `secret remove` the old one by its id (shown by `list`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from tributary.app.accounts import ensure_account, get_project
from tributary.app.cli import cli, emit, runtime
from tributary.app.rejections import rejections, rejections_text
from tributary.app.sources import (
    MAX_SECRETS,
    add_secret,
    create_source,
    delete_source,
    find_source,
    list_sources,
    parse_option_pairs,
    remove_secret,
    source_json,
)

T = TypeVar("T")


def _run(action: Callable[[Session, str], T]) -> T:
    """Run `action(session, account id)` in one transaction; API errors become CLI errors."""
    with runtime().db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        return action(session, account.id)


def _public_url() -> str:
    return runtime().settings.public_url


def _line(source: dict[str, Any]) -> str:
    hints = ",".join(f"{s['id']}={s['hint']}" for s in source["secrets"]) or "no secret"
    return f"{source['id']}\t{source['connector']}\t{source['project']}\t{hints}\t{source['url']}"


@cli.group("sources")
def sources() -> None:
    """Webhook sources: a connector, a project, secrets and options, at /webhooks/<id>."""


@sources.command("create")
@click.option("--connector", required=True, help="Connector name (see `tributary connectors list`).")
@click.option("--project", default="default", show_default=True, help="Project slug.")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    help=f"Signing secret (repeatable, at most {MAX_SECRETS}). May be added later with `sources secret add`.",
)
@click.option(
    "--option", "options", multiple=True, metavar="KEY=VALUE", help="Connector option (repeatable)."
)
@click.option("--name", default="", help="A label to recognise the source by.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sources_create(
    connector: str, project: str, secrets: tuple[str, ...], options: tuple[str, ...], name: str, as_json: bool
) -> None:
    def action(session: Session, account_id: str) -> dict[str, Any]:
        source = create_source(
            session,
            account_id,
            connector=connector,
            project=get_project(session, account_id, project),
            secrets=secrets,
            options=parse_option_pairs(options),
            name=name,
        )
        return source_json(session, source, _public_url())

    data = _run(action)
    human = f"created source {data['id']} ({connector} -> {data['project']})\nwebhook URL: {data['url']}"
    if not data["secrets"]:
        human += f"\nno signing secret yet: tributary sources secret add {data['id']}"
    emit(data, as_json, human)


@sources.command("list")
@click.option("--project", default=None, help="Only this project's sources.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sources_list(project: str | None, as_json: bool) -> None:
    """Active sources; secrets are shown masked, with the ids `secret remove` takes."""

    def action(session: Session, account_id: str) -> list[dict[str, Any]]:
        project_id = get_project(session, account_id, project).id if project else None
        return [source_json(session, s, _public_url()) for s in list_sources(session, account_id, project_id)]

    rows = _run(action)
    emit(rows, as_json, "\n".join(_line(r) for r in rows) or "no sources")


@sources.command("show")
@click.argument("source_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sources_show(source_id: str, as_json: bool) -> None:
    data = _run(
        lambda session, account_id: source_json(
            session, find_source(session, account_id, source_id), _public_url()
        )
    )
    data["rejections"] = rejections(runtime(), data["id"])
    emit(data, as_json, _line(data) + f"\noptions: {data['options']}\n" + rejections_text(data["rejections"]))


@sources.command("delete")
@click.argument("source_id")
def sources_delete(source_id: str) -> None:
    """Stop accepting deliveries (the URL answers 404); stored events are kept."""
    _run(lambda session, account_id: delete_source(session, find_source(session, account_id, source_id)))
    click.echo(f"deleted {source_id}")


@sources.group("secret")
def secret_group() -> None:
    """Rotate signing secrets: add the new one, then remove the old one."""


@secret_group.command("add")
@click.argument("source_id")
@click.option(
    "--secret", prompt=True, hide_input=True, help="The new secret (prompted for, hidden, when not given)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def secret_add(source_id: str, secret: str, as_json: bool) -> None:
    def action(session: Session, account_id: str) -> tuple[dict[str, str], dict[str, Any]]:
        source = find_source(session, account_id, source_id)
        record = add_secret(session, source, secret)
        return record, source_json(session, source, _public_url())

    record, data = _run(action)
    emit(data, as_json, f"added secret {record['id']} to {source_id} ({len(data['secrets'])} active)")


@secret_group.command("remove")
@click.argument("source_id")
@click.argument("secret_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def secret_remove(source_id: str, secret_id: str, as_json: bool) -> None:
    def action(session: Session, account_id: str) -> dict[str, Any]:
        source = find_source(session, account_id, source_id)
        remove_secret(session, source, secret_id)
        return source_json(session, source, _public_url())

    data = _run(action)
    emit(data, as_json, f"removed secret {secret_id} from {source_id} ({len(data['secrets'])} active)")
