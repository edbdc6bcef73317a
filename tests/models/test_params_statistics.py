"""Migration 0016: PostgreSQL samples 1,000 values of the project params for its estimates."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade

TARGET = """
SELECT attstattarget FROM pg_attribute
WHERE attrelid = 'customer_projects'::regclass AND attname = 'params'
"""


def test_the_params_column_has_a_larger_statistics_target_until_downgraded(scratch_url: str) -> None:
    if not scratch_url.startswith("postgresql"):
        pytest.skip("SQLite keeps no column statistics")
    upgrade(scratch_url)
    engine = create_engine(normalize_url(scratch_url))

    def target() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(TARGET)).scalar_one())

    try:
        assert target() == 1000
        downgrade(scratch_url, "0015_locked_parent_keys")
        assert target() == -1  # the server's default_statistics_target
        upgrade(scratch_url)
        assert target() == 1000
    finally:
        engine.dispose()
