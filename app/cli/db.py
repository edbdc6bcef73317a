"""`tributary db upgrade|downgrade`."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from tributary.app.accounts import ensure_account
from tributary.app.cli import cli, runtime
from tributary.runtime.migrate import downgrade, upgrade


@cli.group("db")
def db_group() -> None:
    """Database schema migrations."""


def upgrade_and_bootstrap() -> bool:
    """Migrate to the newest schema and make sure the install's account exists. Returns whether
    the account was created (a first start)."""
    rt = runtime()
    upgrade(rt.db.url)
    with rt.db.write_session() as session, session.begin():
        _, created = ensure_account(session)
    return created


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (safe to run on each release)."""
    upgrade_and_bootstrap()
    where = make_url(runtime().db.url).render_as_string(hide_password=True)
    click.echo(f"database is up to date ({where})")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes everything)."""
    downgrade(runtime().db.url, revision)
    click.echo(f"database downgraded to {revision}")
