"""Which data a CLI command works on, and clear errors instead of tracebacks.

The CLI finds its data like `serve`: TRIBUTARY_HOME (default `./var` in the working directory) holds
the SQLite database, or DATABASE_URL names the database. A command that reads or changes data,
run where there is none, says so and how to point it elsewhere, instead of creating an empty
`./var` and failing on a missing table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
from flask import Flask
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

# Commands that create the data (serve, db) or need none (connectors, openapi).
CREATES_DATA = {"serve", "db"}
NEEDS_NO_DATA = {"connectors", "openapi"}
HOW_TO_POINT = (
    "set TRIBUTARY_HOME to the data directory `tributary serve` uses (or DATABASE_URL), or run "
    "`tributary db upgrade` to start an empty install here"
)


def _command(ctx: click.Context | None) -> str | None:
    """The top-level subcommand being run (`projects` for `tributary projects list`)."""
    names: list[str] = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return names[-2] if len(names) >= 2 else None


def home() -> Path:
    return Path(os.environ.get("TRIBUTARY_HOME", "var")).resolve()


def settings_overrides(ctx: click.Context | None) -> dict[str, Any]:
    command = _command(ctx)
    if command in CREATES_DATA or os.environ.get("DATABASE_URL"):
        return {}
    if command in NEEDS_NO_DATA:
        if home().exists():
            return {}
        # Nothing to read: a throwaway home, so no `./var` appears where the command was run.
        scratch = Path(tempfile.gettempdir()) / f"tributary-nodata-{os.getuid()}"
        return {"TRIBUTARY_HOME": str(scratch), "TRIBUTARY_SECRET_KEY": "unused", "DATABASE_URL": "sqlite://"}
    if not (home() / "tributary.db").exists():
        raise click.ClickException(f"no Tributary data in {home()}: {HOW_TO_POINT}")
    return {}


def check_database(ctx: click.Context | None, app: Flask) -> None:
    command = _command(ctx)
    if command in CREATES_DATA or command in NEEDS_NO_DATA:
        return
    runtime = app.extensions["tributary"].runtime
    try:
        initialized = inspect(runtime.db.engine).has_table("accounts")
    except SQLAlchemyError as exc:
        raise click.ClickException(describe_failure(exc)) from None
    finally:
        # No pooled connection may outlive the check: `worker` forks its scheduler, and a child
        # holding the parent's socket keeps a killed worker's transaction (and its locks) alive.
        runtime.db.engine.dispose()
    if not initialized:
        where = make_url(runtime.db.url).render_as_string(hide_password=True)
        raise click.ClickException(f"the database {where} is empty (no Tributary tables): {HOW_TO_POINT}")


def describe_failure(exc: BaseException) -> str:
    """One line for an unexpected failure."""
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return f"the database is unavailable: {reason}"
    if isinstance(exc, SQLAlchemyError):
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"database error: {reason} (set TRIBUTARY_DEBUG=1 for the traceback)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first} (set TRIBUTARY_DEBUG=1 for the traceback)"
