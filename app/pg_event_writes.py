"""The event store's writes on PostgreSQL (app/event_store.py), straight to the driver.

One fixed statement fed by two parameters, whatever the number of rows: prepared once by the
driver. A multi-row VALUES statement is new text for every row count, which the driver parses in
Python each time: 40 % of `/v1/batch`'s CPU at 100 rows. The rows' fields travel as one JSON array
(`json_to_recordset`); their raw bodies as one binary value, end to end, each row naming where its
own starts and how long it is. Inside the JSON a body was hex, twice its size, which the client
encoded and PostgreSQL scanned and decoded again: for 100 rows of a 6 KB Stripe event a third of
PostgreSQL's CPU and two fifths of the client's (a `bytea[]` of the bodies did as well there, but
its dumper cost the client 30-50 us more a statement than the hex it replaced; bench/README.md).
Each row carries the API key its request came with, and the statement stores it only while that
key is not revoked (a webhook's row has none), so the check costs no statement of its own.

`insert` skips a row whose dedup key was stored before (ON CONFLICT DO NOTHING). The shared write
(`insert_new_first`, in autocommit) tries its rows without that clause first: with it, PostgreSQL
probes the dedup index for every row before inserting it and confirms each speculative insert in
the WAL, 7 % of its CPU for 100 rows, while a message id met again (a retry, a redelivery) is
rare. One among the rows fails that statement as a whole, writing nothing, and the rows go again
through `insert`; PostgreSQL logs the unique violation as an ERROR line (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation

from tributary.app.event_rows import KEY_PARAM, ROW_COLUMNS
from tributary.models.event import DEDUP_CONSTRAINT, DEDUP_KEY
from tributary.models.sql import json_rows

__all__ = ["BATCH", "insert", "insert_new_first", "parameters"]

# The column whose values travel apart from the JSON, as binary, and the JSON fields that place a
# row's value in it (1-based, as SQL's `substring` counts).
_BODY = "body"
_BODY_START, _BODY_LENGTH = "body_start", "body_length"
# SQL types of the JSON fields; text unless named here.
_TYPES = {
    "occurred_at": "timestamptz",
    "received_at": "timestamptz",
    "headers": "jsonb",
    "payload": "jsonb",
    "attempts": "integer",
}
# What the statement inserts for a column, when not the JSON field as it is. Rows leave out empty
# headers (every API event's): made from the JSON, each row's `{}` was a jsonb value parsed apart,
# about 5 % of the statement's time for 100 identify rows (bench/README.md, 2026-12-05 23:05). The
# body is cut from the bodies' one value (`%b`: sent in binary), the statement's first parameter
# because it comes first in the text.
_EXPRESSIONS = {
    "headers": "coalesce(v.headers, '{}'::jsonb)",
    _BODY: f"substring(%b::bytea FROM v.{_BODY_START} FOR v.{_BODY_LENGTH})",
}
_FIELDS = tuple(name for name in ROW_COLUMNS if name != _BODY)
_SELECTED = ", ".join(_EXPRESSIONS.get(name, f"v.{name}") for name in ROW_COLUMNS)
_DEFINED = ", ".join(f"{name} {_TYPES.get(name, 'text')}" for name in _FIELDS)
# Built from the constants above only, never from input.
_INSERT = (
    f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) "  # noqa: S608
    f"SELECT {_SELECTED} "
    f"FROM json_to_recordset(%s::json) AS v("
    f"{_DEFINED}, {KEY_PARAM} text, {_BODY_START} integer, {_BODY_LENGTH} integer) "
    f"WHERE v.{KEY_PARAM} IS NULL OR EXISTS ("
    f"SELECT 1 FROM api_keys k WHERE k.id = v.{KEY_PARAM} AND k.revoked_at IS NULL)"
)
BATCH = f"{_INSERT} ON CONFLICT ({', '.join(DEDUP_KEY)}) DO NOTHING RETURNING id"
# `insert_new_first`'s first try: the same rows without the conflict clause.
_NEW_ROWS = f"{_INSERT} RETURNING id"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def parameters(rows: Sequence[dict[str, Any]], keys: Sequence[str | None]) -> tuple[bytes, str]:
    """The statements' two parameters, in their order: the rows' bodies end to end; the rows' fields
    as a JSON array, each row with the key to check and where its body lies in the first, without
    its body or empty headers (`_EXPRESSIONS`)."""
    sent, bodies, start = [], [], 1
    for row, key in zip(rows, keys, strict=True):
        item = {**row, KEY_PARAM: key}
        body = item.pop(_BODY)
        bodies.append(body)
        item[_BODY_START], item[_BODY_LENGTH] = start, len(body)
        start += len(body)
        if not item["headers"]:
            del item["headers"]
        sent.append(item)
    return b"".join(bodies), json_rows(sent, _json_value)


def insert(driver: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str | None]) -> set[str]:
    """Insert `rows` (each checked against its key in `keys`) on the psycopg connection `driver`, in
    its transaction, skipping those whose dedup key was stored before: the ids stored."""
    with driver.cursor() as cursor:
        cursor.execute(BATCH, parameters(rows, keys))
        return {str(found) for (found,) in cursor.fetchall()}


def insert_new_first(driver: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str | None]) -> set[str]:
    """`insert` on an autocommit connection, trying the rows without the conflict clause first."""
    sent = parameters(rows, keys)
    try:
        cursor = driver.execute(_NEW_ROWS, sent)
    except UniqueViolation as exc:
        if exc.diag.constraint_name != DEDUP_CONSTRAINT:
            raise
        # Rolled back alone (autocommit): the connection goes on.
        cursor = driver.execute(BATCH, sent)
    return {str(found) for (found,) in cursor.fetchall()}
