"""`tributary openapi [--markdown]`: the API description, as served at /openapi.json or as the
Markdown reference kept in docs/api.md."""

from __future__ import annotations

import json

import click
from flask import current_app

from tributary.app.apidoc import render
from tributary.app.cli import cli
from tributary.app.openapi import build_document


@cli.command("openapi")
@click.option("--markdown", is_flag=True, help="The Markdown reference (docs/api.md) instead of JSON.")
def openapi_command(markdown: bool) -> None:
    """Print the OpenAPI document (needs no data: run it anywhere)."""
    document = build_document(current_app)
    click.echo(render(document) if markdown else json.dumps(document, indent=2), nl=not markdown)
