"""The `tributary` command: a Flask CLI group (so `tributary routes` and `shell` work too)."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app
from flask.cli import FlaskGroup

from workers.runtime import Runtime


def _create_app() -> Any:
    from app import create_app

    return create_app()


cli = FlaskGroup(create_app=_create_app, name="tributary", help="Tributary: a headless CRM fed by webhooks.")


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["tributary"].runtime
    return rt


def emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human)


def main() -> None:
    from app.cli import admin, connectors, customers, db, imports, run, sources  # noqa: F401 - registers the commands

    cli.main(prog_name="tributary")
