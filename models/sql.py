"""Dialect-aware SQL helpers for the statements that must be one round trip on every backend."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import ARRAY, ColumnElement, Dialect, String, and_, any_, bindparam, false, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.types import TypeEngine


def insert_for(dialect_name: str, table: Any) -> Any:
    """An INSERT that understands ON CONFLICT (and RETURNING) on the named backend."""
    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(table)


def dialect_insert(session: Session, table: Any) -> Any:
    """`insert_for` on the session's backend."""
    return insert_for(session.get_bind().dialect.name, table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The processor SQLAlchemy binds a value of `type_` with on `dialect`, for a statement sent
    past its execution: the dialect's implementation of the type, not the generic type's own (the
    generic DateTime's left a datetime to the driver's adapter, which SQLite's wrote in a shorter
    text than SQLAlchemy's)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


def among(
    column: Any, ids: Sequence[str] | None, postgres: bool, *, name: str = "ids"
) -> ColumnElement[bool]:
    """`column` is one of `ids`, or, with `ids` None, of the list bound as `name` when the statement
    runs (a statement built once). On PostgreSQL one array parameter (`= ANY`): the statement's
    text is the same for any number of ids, so it is compiled once and prepared by the driver, where
    an expanding IN renders and binds a placeholder per id every time (and psycopg parses such a
    statement anew once it passes 4 KB or 50 parameters). SQLite has no arrays."""
    # Ids given here are unique parameters: two lists in one statement stay two.
    given: dict[str, Any] = {} if ids is None else {"value": list(ids), "unique": True}
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(String()), **given))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True, **given))  # type: ignore[no-any-return]


def sqlite_unindexed(column: Any) -> ColumnElement[Any]:
    """`column` under a unary `+` (SQLite only): the same value, in a term the planner will not
    serve through an index, SQLite's documented way to steer it. With no statistics, SQLite took an
    index on `account_id` for `account_id = ? AND id IN (…)`, and so read every row of the account
    to find a few by id; checked this way, the account is tested on the rows the ids found."""
    element = column.expression if hasattr(column, "expression") else column
    return UnaryExpression(element, operator=operators.custom_op("+"), type_=element.type)


def pairs_in(first: Any, second: Any, pairs: Iterable[tuple[Any, Any]]) -> ColumnElement[bool]:
    """`(first, second) IN pairs`, grouped by the first value: `first = a AND second IN (...)` per
    distinct `a` (a batch's identities mostly share one connector).

    PostgreSQL turns a row-value IN list into an OR of ANDs. With fresh statistics it probes the
    index once per pair; without them (a new table, a server with autovacuum off) it tested every
    row of the account against every pair, 0.1 s for 500 pairs over 5,000 rows and growing with
    both. Grouped, each group is one `= ANY(array)` condition: an index probe per value, or at
    worst one hashed pass over the rows."""
    grouped: dict[Any, set[Any]] = defaultdict(set)
    for a, b in pairs:
        grouped[a].add(b)
    if not grouped:
        return false()
    return or_(*(and_(first == a, second.in_(sorted(grouped[a]))) for a in sorted(grouped)))


# Foreign keys the models declare and PostgreSQL does not hold as constraints (migration 0015):
# the worker's batch, the only writer of these columns, holds the parent row locked in the same
# transaction, so the per-row check cannot fail; their ON DELETE actions are statement triggers on
# the parent tables there. SQLite keeps them as constraints.
LOCK_GUARDED_FOREIGN_KEYS = frozenset(
    {
        "fk_customers_account_id_accounts",
        "fk_customer_projects_project_id_projects",
        "fk_customer_changes_project_id_projects",
        "fk_customer_projects_customer_id_customers",
        "fk_customer_changes_customer_id_customers",
        "fk_customer_changes_event_id_events",
        "fk_event_attempts_event_id_events",
    }
)


def schema_filter(dialect_name: str) -> Any:
    """Alembic's `include_object` for comparing the models with a migrated database of
    `dialect_name`: on PostgreSQL the lock-guarded foreign keys are not looked for."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (
            dialect_name == "postgresql"
            and type_ == "foreign_key_constraint"
            and name in LOCK_GUARDED_FOREIGN_KEYS
        )

    return include


def mark_written(row: Any, values: Mapping[str, Any]) -> None:
    """Record `values` as what the database holds for ORM `row`, after a bulk statement wrote them
    past the ORM: the session's flush then sends nothing more for them."""
    for name, value in values.items():
        set_committed_value(row, name, value)


def json_rows(rows: list[dict[str, Any]], default: Callable[[Any], Any]) -> str:
    """`rows` as one JSON array, the parameter of a `json_to_recordset` statement (ingest's shared
    INSERT) or a `jsonb_to_recordset` one (the worker's bulk writes). orjson first: the standard
    library's encoder took a fifth of a worker's CPU and a tenth of `/v1/batch`'s. What orjson
    refuses (lone surrogates, integers beyond 64 bits, keys that are not text) the standard encoder
    takes, as before; `default` serves both for the values neither knows (orjson writes datetimes
    itself).

    orjson writes a non-finite number as `null`, so none may reach here: the API refuses them,
    webhook payloads are scrubbed of them (app/api/webhooks.py), changes carrying one fail at
    normalization (workers/normalize.py), and what is loaded from PostgreSQL cannot hold one."""
    try:
        return orjson.dumps(rows, default=default).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=default, separators=(",", ":"), ensure_ascii=False)


def dumps_json(value: Any) -> str:
    """A JSON column's value as text, for SQLite's engine (models/session.py). orjson first: the
    standard encoder took a tenth of a small drain batch's CPU there (clocks, params, reports).
    What orjson refuses (values JSON does not know, datetimes included, integers beyond 64 bits,
    keys that are not text, lone surrogates) goes to the standard encoder, as before, to be
    written or refused as it always was. orjson writes a non-finite number as `null`, where the
    standard encoder wrote the bare token `NaN`, which is not JSON; none reaches a column (see
    `json_rows`)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)
