"""Migration 0024: on PostgreSQL, large values (an event's raw body and payload above all) are
compressed with lz4 instead of pglz."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text

from tests.connectors.stripe_helpers import FIXTURES, create_source, post
from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade
from tributary.runtime.process import Runtime

BEFORE = "0023_write_generation"
# What the migration names, as the database should state it afterwards.
COLUMNS = {
    ("events", "body"),
    ("events", "payload"),
    ("events", "headers"),
    ("events", "last_error"),
    ("event_attempts", "error"),
    ("customers", "clock"),
    ("customers", "past_emails"),
    ("customer_projects", "params"),
    ("customer_projects", "clock"),
    ("customer_changes", "data"),
    ("imports", "upload"),
    ("imports", "errors"),
}


def _lz4_or_skip(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not compress values (migration 0024 changes nothing there)")
    with engine.connect() as conn:
        available = conn.scalar(
            text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        )
    if not available:
        pytest.skip("this PostgreSQL server has no lz4")


def _compressed_with(engine: Engine) -> dict[tuple[str, str], str]:
    """The compression method each column of the schema's tables names for itself ('' for none)."""
    sql = (
        "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
    )
    with engine.connect() as conn:
        return {(str(t), str(c)): str(m) for t, c, m in conn.execute(text(sql))}


def test_the_migration_names_lz4_for_the_large_columns_and_its_downgrade_takes_it_back(
    scratch_url: str,
) -> None:
    engine = create_engine(normalize_url(scratch_url))
    try:
        _lz4_or_skip(engine)
        upgrade(scratch_url, BEFORE)
        before = _compressed_with(engine)
        assert set(before.values()) == {""}
        upgrade(scratch_url)
        after = _compressed_with(engine)
        assert {column for column, method in after.items() if method} == COLUMNS
        assert {after[column] for column in COLUMNS} == {"l"}
        downgrade(scratch_url, BEFORE)
        assert _compressed_with(engine) == before
    finally:
        engine.dispose()


def test_a_large_webhook_is_stored_with_lz4_byte_for_byte(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    _lz4_or_skip(runtime.db.engine)
    # The fixture as Stripe sends it, indented: 6.4 KB, over the size PostgreSQL compresses at.
    raw = (FIXTURES / "invoice.paid.json").read_bytes()
    assert len(raw) > 4096
    source_id = create_source(client, admin)
    assert post(client, source_id, raw).get_json() == {"received": 1, "duplicates": 0}
    drain()
    with runtime.db.engine.connect() as conn:
        body, status, methods = conn.execute(
            text(
                "SELECT body, status, ARRAY[pg_column_compression(body), pg_column_compression(payload)] "
                "FROM events WHERE source_id = :source"
            ),
            {"source": source_id},
        ).one()
    assert bytes(body) == raw and status == "processed"
    assert methods == ["lz4", "lz4"]
