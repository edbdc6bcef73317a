"""Alembic environment: the URL comes from Tributary's config, never from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tributary.models import Base
from tributary.models.session import normalize_url
from tributary.models.sql import schema_filter

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = normalize_url(config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or "")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables the same way everywhere.
        render_as_batch=True,
        compare_type=True,
        # Foreign keys PostgreSQL leaves to the writers' locks (migration 0015) are not missing there.
        include_object=schema_filter(connection.dialect.name),  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `tributary db upgrade`")
run_migrations()
