"""Rows for a PostgreSQL bulk statement, as one parameter: the row source of write_back_pg.py.

A statement's template names its rows `{rows}`; here they become a row source named `v`, with the
template's columns (name, SQL type) and an ordinal `n`. The rows go as one JSON array read as
`jsonb` (`jsonb_to_recordset`): one C-encoded string binds far faster than an array per column,
whose every text element the driver escapes in Python. `jsonb`, not `json`: `json_to_recordset`
scans each row's object afresh and parses every nested value (params, clocks, changes) a second
time for its `jsonb` column, which made a batch's row sources cost PostgreSQL about a tenth
more CPU than parsing the array once as `jsonb` (bench/README.md). Several such statements can run
as one (`execute_together`): a batch's last writes cost one round trip, not three.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from tributary.connectors.safe_json import ESCAPED_NUL
from tributary.models.sql import json_rows

__all__ = ["Columns", "Part", "execute", "execute_together"]

# (name, SQL type) of each column of a row source.
Columns = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Part:
    """One statement of a combined write: `ctes` is one or more `name AS (…)` clauses that read
    their rows as `{rows}`; `key` names its parameters, unique within the statement."""

    key: str
    ctes: str
    columns: Columns
    rows: Sequence[dict[str, Any]]


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Text the JSON path cannot carry: NUL (escaped by the encoder as `\u0000`) and lone UTF-16
# surrogates (kept raw, not being text at all). Rows holding either go as arrays, so the driver
# refuses them in its own words (workers/isolation.py then fails that event alone) instead of the
# JSON parser.
# `jsonb` refuses documents that text takes (up to 1 GiB): its parser holds an array's elements in
# one allocation (32 bytes each, the capacity doubled as it grows) and PostgreSQL allocates at most
# 1 GiB at once, so an array of one-digit numbers fails from about 32 MiB of text (the binary form
# is capped at 256 MiB besides). A payload longer than this goes as arrays, which have no such
# cap: a batch of very large events is written, not failed. A test sends the densest payload this
# lets through; a batch's is usually about a megabyte.
_JSONB_TEXT_LIMIT = 16 * 1024 * 1024


def _json_safe(payload: str) -> bool:
    """Whether `payload` can go as JSON: no NUL, no lone surrogate, not too long for `jsonb`. A
    batch's payload is about a megabyte: a substring test and `isascii` run at memory speed, where
    a regular expression stepped through it character by character (15 ms a batch). A lone
    surrogate is exactly what strict UTF-8 cannot encode."""
    if len(payload) > _JSONB_TEXT_LIMIT or ESCAPED_NUL in payload:
        return False
    if payload.isascii():
        return True
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _jsonb_text(value: Any) -> str | None:
    """A `jsonb` column's element of the arrays: None stays SQL NULL, as the JSON path reads it."""
    return None if value is None else json.dumps(value, default=_default)


def _source(key: str, columns: Columns, rows: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The row source `v` of `rows` and its parameters, named after `key`."""
    names = ", ".join(name for name, _ in columns)
    payload = json_rows([{name: row[name] for name, _ in columns} for row in rows], _default)
    if _json_safe(payload):
        typed = ", ".join(f"{name} {kind}" for name, kind in columns)
        source = (
            f"ROWS FROM (jsonb_to_recordset(CAST(:{key} AS jsonb)) AS ({typed})) "
            f"WITH ORDINALITY AS v({names}, n)"
        )
        return source, {key: payload}
    arrays = ", ".join(f"CAST(:{key}_{i} AS {kind}[])" for i, (_, kind) in enumerate(columns))
    params = {
        f"{key}_{i}": [_jsonb_text(row[name]) if kind == "jsonb" else row[name] for row in rows]
        for i, (name, kind) in enumerate(columns)
    }
    return f"unnest({arrays}) WITH ORDINALITY AS v({names}, n)", params


def execute(session: Session, template: str, columns: Columns, rows: Sequence[dict[str, Any]]) -> Any:
    """Run `template` with `{rows}` replaced by the row source of `rows`."""
    source, params = _source("rows", columns, rows)
    return session.execute(text(template.format(rows=source)), params)


def execute_together(session: Session, parts: Sequence[Part]) -> None:
    """Run `parts` as one statement, each as data-modifying CTEs. PostgreSQL runs every one of them
    to completion, in one snapshot and in no set order: the parts must not write the same rows, nor
    read what another writes."""
    if not parts:
        return
    ctes: list[str] = []
    params: dict[str, Any] = {}
    for part in parts:
        source, part_params = _source(part.key, part.columns, part.rows)
        ctes.append(part.ctes.format(rows=source))
        params.update(part_params)
    session.execute(text(f"WITH {', '.join(ctes)} SELECT 1"), params)
