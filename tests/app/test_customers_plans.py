"""The customer list's reads at scale: the same rows through the indexes, and plans that use them.

No timings: the plans are read with EXPLAIN. On tiny test tables a planner would rather scan, so
PostgreSQL is told to avoid sequential scans (and, for the order tests, sorts) where it can; each
plan test then asks whether an index *can* answer the query as the app writes it. A rewrite that
defeats one (`lower(name) LIKE` instead of `name ILIKE` for the trigram index, a NULL phase ordered
by its tiebreak alone) fails here. SQLite has no trigram index: there `q` scans, and only the rows
are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, or_, select, text
from sqlalchemy.orm import Session

from tests.helpers import before_each_statement, plan_of
from tributary.app.customer_args import parse_list_args
from tributary.app.customer_query import Reader, customer_json, list_customers
from tributary.models import Customer, CustomerProject, Project
from tributary.models.sql import among
from tributary.runtime.process import Runtime

START = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = ["Ada", "Bob", "Cy", "Dee", "Zoë", None]
LAST = ["Lovelace", "Stone", "Love_Day", "Müller", "Ten%Cent"]


@pytest.fixture
def people(runtime: Runtime, account_id: str) -> list[Customer]:
    """120 customers with mixed-case names (some none), one project each; every fourth never active."""
    with runtime.db.session() as session, session.begin():
        project = Project(account_id=account_id, slug="app", name="app")
        session.add(project)
        session.flush()
        made = []
        for n in range(120):
            first, last = FIRST[n % len(FIRST)], LAST[n % len(LAST)]
            active = None if n % 4 == 0 else START + timedelta(hours=n * 7 % 100)
            made.append(
                Customer(
                    account_id=account_id,
                    email=f"{(first or 'anon').lower().replace('ë', 'e')}.{n}@example{n % 3}.com",
                    name=f"{first} {last}" if first else None,
                    past_emails=[],
                    clock={},
                    created_at=START + timedelta(minutes=n),
                    updated_at=START,
                    last_activity_at=active,
                )
            )
        session.add_all(made)
        session.flush()
        session.add_all(
            CustomerProject(
                customer_id=c.id, project_id=project.id, status="paid", params={}, clock={},
                first_seen_at=START, last_activity_at=c.last_activity_at,
            )
            for c in made
        )  # fmt: skip
        session.flush()
        session.expunge_all()
    if runtime.db.is_postgres:
        with runtime.db.engine.begin() as conn:
            conn.execute(text("ANALYZE customers"))
            conn.execute(text("ANALYZE customer_projects"))
    return made


def _avoid(session: Session, runtime: Runtime, *plans: str) -> None:
    """Tell PostgreSQL's planner to avoid these plan types (`seqscan`, `sort`, …) where it can."""
    if runtime.db.is_postgres:
        for plan in plans:
            session.execute(text(f"SET LOCAL enable_{plan} = off"))


def _capturing(runtime: Runtime, keep: Callable[[str], bool]) -> Iterator[list[tuple[str, Any]]]:
    """The statements `keep` accepts, with their parameters, as they run while the test does."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if keep(statement):
            seen.append((statement, parameters))

    with before_each_statement(runtime.db.engine, capture):
        yield seen


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs with a LIMIT (the list's pages) that run while the test does."""
    yield from _capturing(runtime, lambda sql: sql.lstrip().upper().startswith("SELECT") and "LIMIT" in sql)


def _all_pages(session: Session, account_id: str, query: str) -> list[str]:
    args: dict[str, list[str]] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        args.setdefault(name, []).append(value)
    found: list[str] = []
    cursor: str | None = None
    while True:
        with_cursor = {**args, "cursor": [cursor]} if cursor else args
        page = list_customers(session, Reader(account_id), parse_list_args(with_cursor), "secret")
        found += [c.email for c in page.customers]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _plans(session: Session, statements: list[tuple[str, Any]]) -> list[str]:
    conn = session.connection()
    return [plan_of(conn, sql, params) for sql, params in list(statements)]


# (q, how many match): known answers, so an expectation that drifted with the data cannot hide a
# wrong query. `love_`, `ten%c`: LIKE's wildcards are literal; `AD`, `zz`: shorter than a trigram.
Q_CASES = [
    ("LOVE", 40), ("love_", 20), ("ten%c", 20), ("zoë", 20), ("AD", 20), ("a.1", 5), ("@example2", 40),
    ("müller st", 0), ("zz", 0),
]  # fmt: skip


@pytest.mark.parametrize(("q", "size"), Q_CASES)
def test_q_matches_the_same_rows_through_the_index(
    runtime: Runtime, account_id: str, people: list[Customer], q: str, size: int
) -> None:
    needle = q.lower()
    expected = {c.email for c in people if needle in c.email or (c.name and needle in c.name.lower())}
    with runtime.db.session() as session, session.begin():
        _avoid(session, runtime, "seqscan")
        found = _all_pages(session, account_id, f"q={q}&limit=7")
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert len(found) == size


def test_q_reads_the_trigram_indexes_on_postgresql(
    runtime: Runtime, account_id: str, people: list[Customer], statements: list[tuple[str, Any]]
) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("trigram indexes are PostgreSQL's (pg_trgm); SQLite scans for `q`")
    # Enough others that reading every customer of the account costs more than the trigram search.
    with runtime.db.engine.begin() as conn:
        conn.execute(
            insert(Customer),
            [
                {"account_id": account_id, "email": f"p{n}@example.org", "name": f"Person {n}",
                 "past_emails": [], "clock": {}, "last_activity_at": START}
                for n in range(3000)
            ],
        )  # fmt: skip
    # As autovacuum would: GIN parks new entries in a pending list, which the planner prices high.
    with runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE customers"))
    with runtime.db.session() as session, session.begin():
        # Walking the activity index and filtering is the other plan a small table invites.
        _avoid(session, runtime, "seqscan", "indexscan")
        assert len(_all_pages(session, account_id, "q=lovelace&limit=7")) == 20
        plans = _plans(session, statements)
    # The never-active phase is 30 rows, which the activity index finds on its own; the rest (3,090
    # customers with an activity) is where a scan would cost.
    active = [plan for (sql, _), plan in zip(statements, plans, strict=True) if "IS NOT NULL" in sql]
    assert active
    for plan in active:
        assert "ix_customers_email_trgm" in plan and "ix_customers_name_trgm" in plan, plan


RESUMED = re.compile(r"\.(customer_)?id [<>]")


def _seeks_null_phase(plan: str, resumed: bool) -> bool:
    """Whether the plan finds the NULL phase (and, resumed, the cursor's place in it) in the index."""
    if "Index Cond" in plan:  # PostgreSQL
        lines = [line for line in plan.splitlines() if "Index Cond" in line and "IS NULL" in line]
        return any(not resumed or "<" in line or ">" in line for line in lines)
    lines = [line for line in plan.splitlines() if "_activity (" in line and "last_activity_at=?" in line]
    return any(not resumed or "id>?" in line or "id<?" in line for line in lines)


@pytest.mark.parametrize("sort", ["last_activity_at", "-last_activity_at"])
@pytest.mark.parametrize("project", [None, "app"])
def test_every_phase_of_an_activity_sort_is_read_in_index_order(
    runtime: Runtime,
    account_id: str,
    people: list[Customer],
    statements: list[tuple[str, Any]],
    sort: str,
    project: str | None,
) -> None:
    # Never-active customers are their own phase (WHERE last_activity_at IS NULL). Ordered by the
    # activity column too (constant NULL there), the activity index yields them in order from the
    # cursor on; ordered by the tiebreak alone, PostgreSQL walked the primary key and filtered.
    query = f"sort={sort}&limit=20" + (f"&project={project}" if project else "")
    with runtime.db.session() as session, session.begin():
        _avoid(session, runtime, "seqscan", "sort")
        found = _all_pages(session, account_id, query)
        plans = _plans(session, statements)
    assert sorted(found) == sorted(c.email for c in people)
    for plan in plans:
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
    null_phase = [(sql, plan) for (sql, _), plan in zip(statements, plans, strict=True) if "IS NULL" in sql]
    assert any(RESUMED.search(sql) for sql, _ in null_phase)  # some page resumed inside the phase
    for sql, plan in null_phase:
        assert _seeks_null_phase(plan, bool(RESUMED.search(sql))), plan


@pytest.mark.parametrize("sort", ["-last_activity_at", "created_at"])
def test_a_project_filter_over_every_project_walks_an_index_without_reading_customers(
    runtime: Runtime,
    account_id: str,
    people: list[Customer],
    statements: list[tuple[str, Any]],
    sort: str,
) -> None:
    # Without a project, the walk goes down the customers' sort index and probes each customer's
    # project rows; a rare params value means many probes per page. The walk must ask the index
    # for nothing it lacks, or every probed customer costs a read of the customers table too. On
    # PostgreSQL each probe goes through the hash index on the customer (migration 0025), half
    # the pages of a descent of the unique B-tree.
    chosen = {c.id for c in people[::10]}
    with runtime.db.engine.begin() as conn:
        conn.execute(
            CustomerProject.__table__.update()
            .where(CustomerProject.customer_id.in_(chosen))
            .values(params={"seats": 50})
        )
    if runtime.db.is_postgres:
        # As autovacuum would: an index-only scan needs the visibility map set.
        with runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE customers"))
            conn.execute(text("VACUUM ANALYZE customer_projects"))
    with runtime.db.session() as session, session.begin():
        _avoid(session, runtime, "seqscan", "sort", "bitmapscan")
        found = _all_pages(session, account_id, f"params.seats=50&sort={sort}&limit=5")
        plans = _plans(session, statements)
    assert sorted(found) == sorted(c.email for c in people if c.id in chosen)
    index = "ix_customers_account_created" if sort == "created_at" else "ix_customers_account_activity"
    assert plans
    for plan in plans:
        if runtime.db.is_postgres:
            assert (
                f"Index Only Scan Backward using {index}" in plan or f"Index Only Scan using {index}" in plan
            ), plan
            assert "Index Scan using ix_customer_projects_customer on customer_projects" in plan, plan
        else:
            assert f"USING COVERING INDEX {index}" in plan, plan
            # SQLite has no hash index: its probe stays on the unique index (the hash index's
            # stand-in there covers no row).
            assert "SEARCH customer_projects USING INDEX sqlite_autoindex_customer_projects_1" in plan, plan


def test_the_walk_runs_in_one_process_on_postgresql(
    runtime: Runtime, account_id: str, people: list[Customer], statements: list[tuple[str, Any]]
) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("parallel query is PostgreSQL's")
    with runtime.db.session() as session, session.begin():
        # Parallel workers made free, as a big table makes them look to the planner.
        for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_index_scan_size"):
            session.execute(text(f"SET LOCAL {setting} = 0"))
        _avoid(session, runtime, "seqscan", "sort", "bitmapscan")
        found = _all_pages(session, account_id, "status=paid&limit=50")
        # The plans as the walk ran them: in its own transaction, with its settings.
        plans = _plans(session, statements)
    assert len(found) == len(people)
    assert plans
    for plan in plans:
        assert "Gather" not in plan and "Parallel" not in plan, plan


@pytest.fixture
def all_statements(runtime: Runtime) -> Iterator[list[tuple[str, Any]]]:
    yield from _capturing(runtime, lambda sql: True)


def test_a_page_reads_only_what_it_shows_with_one_statement_text_per_lookup(
    runtime: Runtime, account_id: str, people: list[Customer], all_statements: list[tuple[str, Any]]
) -> None:
    # A walk that keeps most customers it passes returns the page's customers itself; one that
    # probes project rows returns ids, and the page is read by id after it. Then the page's
    # projects and identities are read by id. Merge clocks are never shown, so never read (nor
    # decoded); on PostgreSQL the ids are one array parameter, so a lookup's text (compiled once,
    # prepared by the driver) is the same for a page of 3 and a page of 50, where an expanding IN
    # rendered a placeholder per id.
    for query, lookups_per_page in (({}, 2), ({"status": ["paid"]}, 3)):
        texts: dict[int, list[str]] = {}
        for limit in (3, 50):
            all_statements.clear()
            with runtime.db.session() as session:
                args = parse_list_args({**query, "limit": [str(limit)]})
                page = list_customers(session, Reader(account_id), args, "s")
                rows = customer_json(session, page.customers)
            assert len(rows) == limit and all(r["projects"]["app"]["status"] == "paid" for r in rows)
            assert {r["email"] for r in rows} <= {c.email for c in people}
            selects = [sql for sql, _ in all_statements if sql.lstrip().upper().startswith("SELECT")]
            assert not [s for s in selects if re.search(r"\bclock\b", s)], selects
            texts[limit] = [s for s in selects if "LIMIT" not in s]
        assert len(texts[3]) == lookups_per_page, texts[3]
        if runtime.db.is_postgres:
            assert texts[3] == texts[50]
            assert all("= ANY (" in s for s in texts[3]), texts[3]


def test_two_id_lists_in_one_statement_stay_apart(runtime: Runtime, people: list[Customer]) -> None:
    first, second = [people[0].id, people[1].id], [people[2].id]
    with runtime.db.session() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        found = session.scalars(
            select(Customer.id).where(
                or_(among(Customer.id, first, postgres), among(Customer.id, second, postgres))
            )
        ).all()
    assert sorted(found) == sorted(first + second)
