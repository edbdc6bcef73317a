"""JSON columns on SQLite are written by `dumps_json` (models/sql.py): orjson, and the standard
encoder for whatever orjson refuses, so every value is stored as before, only faster. These run on a
SQLite file of their own, whichever backend the suite uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, select, text

from tributary.models.session import Database
from tributary.models.sql import dumps_json

VALUES: list[Any] = [
    {"plan": "pro", "seats": 3, "ratio": 0.25, "beta": True, "none": None, "tiers": [1, {"x": "y"}]},
    {"name": 'Zoë "q" \\ \\u00e9 😀', "empty": {}, "list": []},
    {"big": 2**70, "small": -(2**65)},  # beyond 64 bits: orjson refuses, the standard encoder writes
    {"lone": "a\ud800b"},  # a lone surrogate: orjson refuses, the standard encoder escapes it
    {1: "a key that is not text"},  # orjson refuses; the standard encoder makes it "1"
    [1, "two", 3.5],
    "text",
]

table = Table("docs", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'json.db'}")
    table.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_value_reads_back_as_the_standard_encoder_would_have_stored_it(db: Database, value: Any) -> None:
    with db.write_connection() as conn:
        conn.execute(table.insert(), {"id": 1, "doc": value})
    with db.engine.connect() as conn:
        stored = conn.scalar(text("SELECT doc FROM docs"))
        read = conn.scalar(select(table.c.doc))
    assert stored == dumps_json(value)  # the engine writes with it
    assert read == json.loads(json.dumps(value))


def test_what_no_encoder_knows_is_refused_as_before() -> None:
    with pytest.raises(TypeError):
        dumps_json({"at": datetime(2026, 12, 3, tzinfo=UTC)})  # orjson would have written it


def test_orjson_writes_the_common_values() -> None:
    # Compact, text as itself: orjson's output, not the standard encoder's escapes.
    assert dumps_json({"name": "Zoë", "n": [1, 2.5]}) == '{"name":"Zoë","n":[1,2.5]}'
