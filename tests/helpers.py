"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import create_engine, event, exists, func, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from tributary.app.accounts import create_key, ensure_account, get_project
from tributary.models import Base
from tributary.models.session import normalize_url
from tributary.models.sql import LOCK_GUARDED_FOREIGN_KEYS
from tributary.runtime.process import Runtime, outage_retry


@contextmanager
def temporary_database(server_url: str, name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `server_url`, dropped afterwards even if
    connections are still open (a killed worker's, say). Yields its URL."""
    base = make_url(normalize_url(server_url))
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def dangling_references(runtime: Runtime) -> dict[str, int]:
    """For each foreign key PostgreSQL leaves to the writers' locks (models/sql.py), how many rows
    point at a parent that does not exist: what its constraint would have refused."""
    found: dict[str, int] = {}
    with runtime.db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for key in table.foreign_key_constraints:
                if key.name not in LOCK_GUARDED_FOREIGN_KEYS:
                    continue
                (element,) = key.elements
                child, parent = element.parent, element.column
                orphans = (
                    select(func.count())
                    .select_from(table)
                    .where(child.is_not(None), ~exists().where(parent == child))
                )
                found[str(key.name)] = int(conn.scalar(orphans) or 0)
    return found


@dataclass(frozen=True, slots=True)
class Sent:
    """One statement as the driver received it; an executemany is one `Sent` with `many` set."""

    sql: str
    parameters: Any
    many: bool

    def reads(self, table: str) -> bool:
        """A SELECT from `table`."""
        return self.sql.lstrip().startswith("SELECT") and f"FROM {table}" in self.sql


@contextmanager
def before_each_statement(engine: Engine | Connection, hook: Callable[..., None]) -> Iterator[None]:
    """`hook` called as SQLAlchemy's `before_cursor_execute` listener (conn, cursor, statement,
    parameters, context, executemany) for every statement `engine` sends while the block runs."""
    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hook)


@contextmanager
def statements_sent(runtime: Runtime) -> Iterator[list[Sent]]:
    """Every statement the runtime's engine sends while the block runs, in order."""
    sent: list[Sent] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append(Sent(statement, parameters, many))

    with before_each_statement(runtime.db.engine, capture):
        yield sent


def indexes_of(engine: Engine, table: str) -> dict[str, str]:
    """Each index of `table` and how it is defined, as the database states it."""
    if engine.dialect.name == "postgresql":
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table"
    else:
        sql = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
    with engine.connect() as conn:
        return {str(name): str(definition) for name, definition in conn.execute(text(sql), {"table": table})}


def plan_of(conn: Connection, sql: str, parameters: Any) -> str:
    """The plan the backend would run `sql` with (EXPLAIN, or SQLite's EXPLAIN QUERY PLAN)."""
    explain = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(explain + sql, parameters))


@contextmanager
def nested_plans(conn: Connection) -> Iterator[list[dict[str, Any]]]:
    """The plans PostgreSQL runs on `conn` until the block ends, the statements of functions and
    triggers included, as `auto_explain` reports them (JSON, one dict a statement, its text under
    "Query Text"). Inside the connection's transaction; loading auto_explain takes a superuser, and
    the test is skipped without one."""
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        conn.exec_driver_sql("LOAD 'auto_explain'")
    except DBAPIError:
        pytest.skip("loading auto_explain takes a superuser")
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_format = json"):
        conn.exec_driver_sql(f"SET LOCAL auto_explain.{setting}")
    conn.exec_driver_sql("SET LOCAL auto_explain.log_level = notice")
    plans: list[dict[str, Any]] = []

    def on_notice(diag: Any) -> None:
        message = diag.message_primary or ""
        if "plan:" in message and "{" in message:
            plans.append(json.loads(message[message.index("{") :]))

    driver.add_notice_handler(on_notice)
    try:
        yield plans
    finally:
        driver.remove_notice_handler(on_notice)


def plan_nodes(plan: dict[str, Any]) -> list[str]:
    """Every node of a JSON plan (one of `nested_plans`' "Plan"), as "<type> <relation or index>"."""
    name = " ".join(str(plan[key]) for key in ("Node Type", "Relation Name", "Index Name") if key in plan)
    return [name] + [node for child in plan.get("Plans", []) for node in plan_nodes(child)]


def walks_the_table(plan: str, table: str, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """The steps of a SQLite plan (EXPLAIN QUERY PLAN) that scan `table` or read it by account
    alone (every row of the account), but through the indexes `allowed`."""
    return [
        step
        for step in plan.splitlines()
        if re.search(rf"SCAN {table}\b", step)
        or (
            re.search(rf"{table} USING .*INDEX (\w+) \(account_id=\?\)$", step)
            and not any(index in step for index in allowed)
        )
    ]


def sqlite_walks(
    runtime: Runtime, sent: list[Sent], table: str, *, allowed: tuple[str, ...] = ()
) -> list[str]:
    """`walks_the_table` over the plans of the reads of `table` in `sent`, on SQLite (without
    statistics, as a new `tributary serve` runs); none on PostgreSQL, whose plans have tests of
    their own. Asserts there was such a read, so a test cannot pass by reading nothing."""
    reads = [s for s in sent if s.reads(table)]
    assert reads, f"no read of {table}"
    if runtime.db.is_postgres:
        return []
    with runtime.db.engine.connect() as conn:
        return [
            step
            for read in reads
            for step in walks_the_table(plan_of(conn, read.sql, read.parameters), table, allowed=allowed)
        ]


def make_key(runtime: Runtime, scopes: list[str], project: str | None = None) -> str:
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        bound = get_project(session, account.id, project) if project else None
        return create_key(session, account.id, scopes, bound).token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def identify(client: FlaskClient, token: str, **payload: Any) -> Any:
    response = client.post("/v1/identify", json=payload, headers=auth(token))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def customer(client: FlaskClient, token: str, ref: str) -> Any:
    response = client.get(f"/v1/customers/{ref}", headers=auth(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def outage_redis(url: str = "redis://127.0.0.1:1/0", **kwargs: Any) -> Redis:
    """A client for a Redis that is down or will go down, retrying as Tributary's own clients do
    (runtime/process.py `outage_retry`). With redis-py 8's default retries (ten, with a backoff of
    up to seconds each) a call took most of a minute, and the metrics' flush of an app built on it
    held up every later test's reset while the app lived."""
    return Redis.from_url(url, retry=outage_retry(), **kwargs)
