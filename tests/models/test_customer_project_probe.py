"""Migration 0025: a hash index on a customer's project rows, on PostgreSQL; on SQLite a stand-in
that covers no row. Whether the list's walk probes through it is tested with the plans
(tests/app/test_customers_plans.py)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from tests.helpers import indexes_of
from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade

BEFORE = "0024_lz4_compression"
INDEX = "ix_customer_projects_customer"


def _definition(engine: Engine) -> str | None:
    """How the database states the index, or None when there is none."""
    return indexes_of(engine, "customer_projects").get(INDEX)


def test_the_migration_adds_the_probe_index_and_its_downgrade_removes_it(scratch_url: str) -> None:
    upgrade(scratch_url, BEFORE)
    engine = create_engine(normalize_url(scratch_url))
    try:
        assert _definition(engine) is None
        upgrade(scratch_url)
        definition = _definition(engine)
        assert definition is not None
        if engine.dialect.name == "postgresql":
            assert "USING hash (customer_id)" in definition, definition
        else:
            assert definition.endswith("WHERE 0"), definition
        downgrade(scratch_url, BEFORE)
        assert _definition(engine) is None
    finally:
        engine.dispose()
