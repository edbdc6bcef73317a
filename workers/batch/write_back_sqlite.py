"""The bulk writes of a batch on SQLite: one executemany per table and kind of row.

SQLite runs in the worker's own process, so a statement per row costs no round trip; what cost
was the ORM's flush around them: a new project row went as an INSERT of its own (to read back its
id), and every changed row through the unit of work's bookkeeping, together about a third of a
drain's CPU in small batches. These Core statements take the rows as they are, with the same
column types (and so the same bind processing) as the ORM. workers/batch/write_back.py decides
what to write and calls these on SQLite, as it calls write_back_pg.py on PostgreSQL; the ORM rows
the batch loaded are then marked as written, so the session's flush sends nothing more for them.

The batch's own statements (built once) go through `_executemany`: compiled once per set of names,
their rows bound by the same processors and sent as plain SQL. SQLAlchemy's execution of a compiled
statement rebuilt each row's parameters through its generic machinery, about a tenth of the drain's
CPU in `tributary serve`, where the batch holds the one write lock the web's ingest waits for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Dialect,
    Insert,
    Table,
    Update,
    UpdateBase,
    bindparam,
    case,
    delete,
    func,
    insert,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tributary.models import (
    Customer,
    CustomerProject,
    Event,
    EventAttempt,
    Identity,
    IdentityTombstone,
    TimelineEntry,
)
from tributary.models.sql import bind_processor, mark_written
from tributary.workers.batch.held_writes import held_writes

if TYPE_CHECKING:
    from sqlalchemy.orm import DeclarativeBase

    from tributary.workers.batch.new_customers import NewCustomer

__all__ = [
    "begin_writes",
    "delete_identities",
    "finish_batch",
    "insert_identities",
    "update_events",
    "upsert_tombstones",
    "write_customers",
]


def begin_writes(session: Session) -> None:
    """Nothing to undo before the writes: the load changes no setting on SQLite (write_back_pg.py's
    `begin_writes` is PostgreSQL's)."""


def _table(model: type[DeclarativeBase]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Built once: a batch under steady load is a few rows, and building a statement costs about what
# running it does (see load_statements.py).
@cache
def _update_by_id_statement(model: type[DeclarativeBase]) -> Update:
    table = _table(model)
    # The id goes under another name: a bound name equal to a column's is the SET clause's.
    return update(table).where(table.c.id == bindparam("row_id"))


@cache
def _insert_statement(model: type[DeclarativeBase]) -> Insert:
    return insert(_table(model))


class _DriverForm:
    """A statement compiled for one set of parameter names: its SQL, and how a row becomes its
    positional parameters: the values in the statement's order, each through its column type's
    bind processor where it has one."""

    __slots__ = ("_bound", "_values", "sql")

    def __init__(self, sql: str, names: Sequence[str], binds: Sequence[Callable[[Any], Any] | None]) -> None:
        self.sql = sql
        # One C-level call picks a row's values (a tuple for two names or more, see `_driver_form`).
        self._values = itemgetter(*names)
        self._bound = [(position, bind) for position, bind in enumerate(binds) if bind is not None]

    def parameters(self, row: dict[str, Any]) -> tuple[Any, ...]:
        values = list(self._values(row))
        # Every value through its processor, None too, as SQLAlchemy does (JSON stores `null`).
        for position, bind in self._bound:
            values[position] = bind(values[position])
        return tuple(values)


# Per dialect (its JSON serializer is in the processors), keyed by a statement built once (above)
# and its rows' names; None where SQLAlchemy itself must run the statement.
_driver_forms: WeakKeyDictionary[Dialect, dict[tuple[UpdateBase, frozenset[str]], _DriverForm | None]] = (
    WeakKeyDictionary()
)


def _driver_form(stmt: UpdateBase, names: frozenset[str], dialect: Dialect) -> _DriverForm | None:
    forms = _driver_forms.setdefault(dialect, {})
    key = (stmt, names)
    if key not in forms:
        compiled = stmt.compile(dialect=dialect, column_keys=sorted(names))
        positions = compiled.positiontup
        # A parameter the rows do not name is a default SQLAlchemy makes in Python; a statement of
        # one parameter (none of ours) is left to SQLAlchemy too.
        if (
            positions is None
            or len(positions) < 2
            or compiled.post_compile_params
            or not names.issuperset(positions)
        ):
            forms[key] = None
        else:
            binds = [bind_processor(compiled.binds[name].type, dialect) for name in positions]
            forms[key] = _DriverForm(compiled.string, positions, binds)
    return forms[key]


def _executemany(session: Session, stmt: UpdateBase, rows: Sequence[dict[str, Any]]) -> None:
    """`session.execute(stmt, rows)` for rows of one set of names, with the statement compiled once
    for them and every value bound by its column type's processor as SQLAlchemy binds it, sent as
    an executemany of plain SQL (so still seen by the engine's cursor events)."""
    conn = session.connection()
    names = rows[0].keys()
    form = _driver_form(stmt, frozenset(names), conn.dialect)
    if form is None or any(row.keys() != names for row in rows):
        session.execute(stmt, rows)
        return
    if session.autoflush:
        session.flush()  # as `session.execute` would first (nothing, when the session is clean)
    bound = [form.parameters(row) for row in rows]
    held = held_writes(session)
    if held is None or not held.add(form.sql, bound):
        conn.exec_driver_sql(form.sql, bound)


def _update_by_id(session: Session, model: type[DeclarativeBase], rows: Sequence[dict[str, Any]]) -> None:
    """UPDATE `model`'s rows by id, setting the columns each row names. Rows are grouped by the
    columns they set (one executemany takes one column list)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(sorted(row))].append(row)
    for same in groups.values():
        params = [{"row_id": row["id"], **{k: v for k, v in row.items() if k != "id"}} for row in same]
        _executemany(session, _update_by_id_statement(model), params)


def update_events(session: Session, events: Sequence[tuple[Event, dict[str, Any]]]) -> None:
    """Write each event's new attributes (as write_back_pg.update_events) and one attempt row for
    each, the attempts in the batch's order."""
    if not events:
        return
    _update_by_id(session, Event, [{"id": event.id, **values} for event, values in events])
    attempts = [
        {
            "event_id": event.id,
            "number": values["attempts"],
            "outcome": values["status"],
            "error": values["last_error"],
            "attempted_at": values["processed_at"],
        }
        for event, values in events
    ]
    _executemany(session, _insert_statement(EventAttempt), attempts)
    for event, values in events:
        mark_written(event, values)


def write_customers(
    session: Session,
    created: Sequence[tuple[NewCustomer, dict[str, Any]]],
    changed: Sequence[tuple[Customer, dict[str, Any]]],
) -> None:
    """Update each changed customer's values, then insert the new customers with theirs, each in
    id order: SQLite checks the unique address after each row, and neither set takes an address
    the other gives up (a new customer's was nobody's at load, and renamed rows hold placeholders
    by now, write_back.py), so any order is valid; id order is the one the ORM used."""
    ordered = sorted(changed, key=lambda item: item[0].id)
    if ordered:
        _update_by_id(session, Customer, [{"id": customer.id, **values} for customer, values in ordered])
        for customer, values in ordered:
            mark_written(customer, values)
    if created:
        rows = [
            {"id": new.id, "account_id": new.account_id, **values}
            for new, values in sorted(created, key=lambda item: item[0].id)
        ]
        _executemany(session, _insert_statement(Customer), rows)


def _upsert_projects(
    session: Session,
    rows: Sequence[dict[str, Any]],
    loaded: Sequence[CustomerProject | None],
) -> None:
    """Insert the new project rows and update the loaded ones (`loaded[i]` is the ORM row `rows[i]`
    updates, or None for a new one). The batch holds SQLite's one write lock, so a row it did not
    load cannot appear before its INSERT."""
    new = [row for row, existing in zip(rows, loaded, strict=True) if existing is None]
    changed = [(row, existing) for row, existing in zip(rows, loaded, strict=True) if existing is not None]
    if new:
        _executemany(session, _insert_statement(CustomerProject), new)
    if changed:
        keep = ("status", "params", "clock", "first_seen_at", "last_activity_at", "updated_at")
        values = [{name: row[name] for name in keep} for row, _ in changed]
        _update_by_id(
            session,
            CustomerProject,
            [{"id": existing.id, **v} for (_, existing), v in zip(changed, values, strict=True)],
        )
        for (_, existing), v in zip(changed, values, strict=True):
            mark_written(existing, v)


def _insert_timeline(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """The batch's timeline rows; ids follow the rows' order."""
    if rows:
        _executemany(session, _insert_statement(TimelineEntry), rows)


def delete_identities(session: Session, refs: Sequence[tuple[str, str, str]]) -> None:
    """Remove the links of `refs` (account, source, external id)."""
    if not refs:
        return
    table = _table(Identity)
    stmt = delete(table).where(
        table.c.account_id == bindparam("a"),
        table.c.source == bindparam("s"),
        table.c.external_id == bindparam("x"),
    )
    session.execute(stmt, [{"a": a, "s": s, "x": x} for a, s, x in refs])


def insert_identities(
    session: Session, links: Sequence[tuple[tuple[str, str, str], str]], now: datetime
) -> None:
    """Link each (account, source, external id) to its customer unless already linked."""
    if not links:
        return
    stmt = sqlite_insert(_table(Identity)).on_conflict_do_nothing(
        index_elements=["account_id", "source", "external_id"]
    )
    rows = [
        {"account_id": a, "source": s, "external_id": x, "customer_id": c, "created_at": now}
        for (a, s, x), c in links
    ]
    session.execute(stmt, rows)


def upsert_tombstones(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or move on each identity's tombstone (as write_back_pg.upsert_tombstones)."""
    if not rows:
        return
    table = _table(IdentityTombstone)
    stmt = sqlite_insert(table)
    # Concurrent deletions of one identity meet on the unique index: the later deletion wins and a
    # known customer is never replaced by "unknown".
    newer = stmt.excluded.forgotten_at >= table.c.forgotten_at
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "source", "external_id"],
        set_={
            "customer_id": func.coalesce(stmt.excluded.customer_id, table.c.customer_id),
            "forgotten_at": case((newer, stmt.excluded.forgotten_at), else_=table.c.forgotten_at),
            "event_id": case((newer, stmt.excluded.event_id), else_=table.c.event_id),
            "event_type": case((newer, stmt.excluded.event_type), else_=table.c.event_type),
        },
    )
    session.execute(stmt, rows)


def finish_batch(
    session: Session,
    projects: Sequence[dict[str, Any]],
    loaded: Sequence[CustomerProject | None],
    timeline: Sequence[dict[str, Any]],
    events: Sequence[tuple[Event, dict[str, Any]]],
) -> None:
    """A batch's last writes (one statement on PostgreSQL, write_back_pg.py): its project rows,
    timeline rows and event outcomes, each kind as above (`loaded[i]` is the ORM row `projects[i]`
    updates, or None for a new one)."""
    _upsert_projects(session, projects, loaded)
    _insert_timeline(session, timeline)
    update_events(session, events)
