"""The SQLite write-back's executemany (workers/batch/write_back_sqlite.py `_executemany`): a
statement compiled once per set of names and sent as plain SQL must store exactly what
`session.execute` stores, and hand back to SQLAlchemy whatever it cannot send itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    text,
    update,
)
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, registry

from tests.helpers import before_each_statement
from tributary.models.base import JSONType, UTCDateTime
from tributary.models.session import Database
from tributary.workers.batch.write_back_sqlite import _executemany

_metadata = MetaData()


def _table(name: str) -> Table:
    return Table(
        name,
        _metadata,
        Column("id", String, primary_key=True),
        Column("at", UTCDateTime),
        Column("data", JSONType),
        Column("flag", Boolean),
        Column("count", Integer),
        Column("label", String, default=lambda: "made in Python"),
    )


SENT, EXECUTED = _table("sent"), _table("executed")
INSERTS = {table: insert(table) for table in (SENT, EXECUTED)}
UPDATES = {table: update(table).where(table.c.id == bindparam("row_id")) for table in (SENT, EXECUTED)}
MOMENT = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {
        "id": "a",
        "at": MOMENT,
        "data": {"plan": "pro", "seats": [1, 2]},
        "flag": True,
        "count": 3,
        "label": "x",
    },
    # None where JSON stores `null`, the others SQL NULL; the names in another order.
    {"label": None, "count": None, "flag": None, "data": None, "at": None, "id": "b"},
]


@pytest.fixture
def session(tmp_path: Path) -> Any:
    db = Database(f"sqlite:///{tmp_path}/executemany.db")
    _metadata.create_all(db.engine)
    with Session(db.engine) as session, session.begin():
        yield session


def _stored(session: Session, table: Table) -> list[tuple[Any, ...]]:
    return list(
        session.execute(text(f"SELECT id, at, data, flag, count, label FROM {table.name} ORDER BY id"))
    )


def test_rows_are_stored_as_sqlalchemy_stores_them(session: Session) -> None:
    _executemany(session, INSERTS[SENT], ROWS)
    session.execute(INSERTS[EXECUTED], ROWS)
    assert _stored(session, SENT) == _stored(session, EXECUTED)
    assert _stored(session, SENT)[1][2] == "null"  # JSON's None, not SQL NULL

    changes = [{"row_id": "a", "data": None, "at": None}, {"row_id": "b", "data": [], "at": MOMENT}]
    _executemany(session, UPDATES[SENT], changes)
    session.execute(UPDATES[EXECUTED], changes)
    assert _stored(session, SENT) == _stored(session, EXECUTED)
    assert _stored(session, SENT)[1][1] == "2026-12-04 10:00:00.000000"


def test_a_column_left_to_its_python_default_gets_it(session: Session) -> None:
    _executemany(session, INSERTS[SENT], [{"id": "c", "count": 1}])
    assert _stored(session, SENT) == [("c", None, None, None, 1, "made in Python")]


def test_rows_naming_different_columns_are_refused_as_sqlalchemy_refuses_them(session: Session) -> None:
    _executemany(session, INSERTS[SENT], ROWS)
    with pytest.raises(StatementError, match="A value is required for bind parameter 'count'"):
        _executemany(session, UPDATES[SENT], [{"row_id": "a", "count": 1}, {"row_id": "b"}])


class _Pending:
    """An ORM row of the `executed` table, for a session with a change to flush."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


registry().map_imperatively(_Pending, EXECUTED)


def test_the_statement_is_sent_through_the_engine_after_the_sessions_changes(session: Session) -> None:
    """Cursor events see it (the suite's statement audits and bench/explain.py rely on them), after
    the session's pending changes are flushed, as `session.execute` flushes them first."""
    seen: list[tuple[str, bool]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement.split(" (", maxsplit=1)[0], many))

    session.connection()  # its BEGIN sent
    session.add(_Pending(id="p", count=1))
    engine = session.get_bind()
    with before_each_statement(engine, capture):
        _executemany(session, INSERTS[SENT], ROWS)
    assert seen == [("INSERT INTO executed", False), ("INSERT INTO sent", True)]
