"""The `tributary` command: a click group whose commands run inside the app (Flask's `AppGroup`),
without Flask's own options and commands (`--app`, `--debug`, `run`, `shell`, `routes`), which mean
nothing to a Tributary user."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from tributary.app.cli.data import describe_failure, settings_overrides
from tributary.app.customer_args import PARAM_PREFIX
from tributary.app.domain_errors import DomainError
from tributary.runtime.process import Runtime


def _create_app() -> Any:
    from tributary.app import create_app
    from tributary.app.cli.data import check_database

    # Which data a command uses is decided before the app exists, so nothing is created by mistake.
    app = create_app(settings_overrides(click.get_current_context(silent=True)))
    check_database(click.get_current_context(silent=True), app)
    return app


def _version() -> str:
    from tributary.app import __version__

    return __version__


def _option(field: object) -> str:
    """The CLI spelling of a query-string parameter named by a refused filter."""
    name = str(field)
    if name.startswith(PARAM_PREFIX):
        return f"--param {name.removeprefix(PARAM_PREFIX)}"
    return "--" + name.replace("_", "-")


def cli_error(exc: DomainError) -> click.ClickException:
    """The one mapping of the domain's refusals to the terminal (the API's is app/errors.py): the
    message, or one line per refused option when the error names them."""
    problems = [p for p in exc.details if isinstance(p, dict)] if isinstance(exc.details, list) else []
    if exc.code != "validation_error" or not problems:
        return click.ClickException(exc.message)
    lines = ["invalid options:", *(f"  {_option(p.get('field'))}: {p.get('message')}" for p in problems)]
    return click.ClickException("\n".join(lines))


class TributaryGroup(AppGroup):
    """Every command runs inside this group's `invoke`, so a domain error from any of them becomes
    a CLI error here, with nothing to translate in the commands themselves."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            raise cli_error(exc) from None


cli = TributaryGroup(
    name="tributary",
    help="Tributary: a headless CRM fed by webhooks.\n\nData: TRIBUTARY_HOME (default ./var, the SQLite "
    "database and embedded Redis), or DATABASE_URL and REDIS_URL.",
)
cli = click.version_option(_version(), "--version", prog_name="Tributary", message="%(prog)s %(version)s")(
    cli
)


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["tributary"].runtime
    return rt


def emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human)


def main() -> None:
    import tributary.app.cli.docs  # noqa: F401 - `tributary openapi`
    from tributary.app.cli import admin, connectors, customers, db, imports, ops, run, sources  # noqa: F401 - registers the commands

    info = ScriptInfo(create_app=_create_app, set_debug_flag=False, load_dotenv_defaults=False)
    try:
        cli.main(prog_name="tributary", obj=info)
    except Exception as exc:
        # Never a traceback: one line saying what failed (TRIBUTARY_DEBUG=1 shows the traceback).
        if os.environ.get("TRIBUTARY_DEBUG"):
            raise
        click.echo(f"Error: {describe_failure(exc)}", err=True)
        sys.exit(1)
