"""Alembic migrations and the models describe the same schema, on this run's backend."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tributary.models import Base
from tributary.models.session import normalize_url
from tributary.models.sql import schema_filter
from tributary.runtime.migrate import downgrade, upgrade
from tributary.runtime.process import Runtime


# SQLite cannot reflect an expression index (the email's trigram index on `lower(email)`, which
# covers no row there), so SQLAlchemy and Alembic both leave it out of the comparison, and say so.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrated_schema_matches_the_models(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as conn:
        opts = {"compare_type": True, "include_object": schema_filter(conn.dialect.name)}
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_base_and_back(scratch_url: str) -> None:
    url = scratch_url
    upgrade(url)
    downgrade(url, "base")
    engine = create_engine(normalize_url(url))
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert {"customers", "events", "identities", "customer_changes"} <= set(inspect(engine).get_table_names())
    engine.dispose()
