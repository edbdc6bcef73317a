"""The metrics' event tallies (models/event_tally.py, migrations 0013, 0018, 0019, 0021) with the live count
of pending events are exactly what the events table holds, whoever wrote it and however: the
product's own paths (ingest, webhooks, the worker's bulk update, replay, erasure, source deletion),
bare SQL (bulk updates, deletes, TRUNCATE), migrations from a database that already had events,
and compaction beside concurrent writers; and pending events are never tallied. PostgreSQL only:
SQLite has no statement-level triggers and `/metrics` counts the table there."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, create_engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from tests.connectors.stripe_helpers import create_source, post_customer_created
from tests.helpers import auth, identify, make_key, nested_plans, plan_nodes, statements_sent
from tributary.app.event_rows import ROW_COLUMNS
from tributary.app.event_store import insert_rows
from tributary.models import Event, EventCount, Source
from tributary.models.base import sortable_id
from tributary.models.event_tally import (
    LATENCY_BOUNDS,
    compact,
    scan_counts,
    scan_latency,
    tally_counts,
    tally_latency,
)
from tributary.models.session import normalize_url
from tributary.runtime.migrate import downgrade, upgrade
from tributary.runtime.process import Runtime
from tributary.workers.sweep import sweep


@pytest.fixture(autouse=True)
def _postgres_only(runtime: Runtime) -> None:
    if not runtime.db.is_postgres:
        pytest.skip("SQLite keeps no tallies: /metrics counts the events table there")


def assert_exact(session: Session) -> None:
    assert tally_counts(session) == {key: n for key, n in scan_counts(session).items() if n}
    assert tally_latency(session) == scan_latency(session)
    # Pending events are counted live (migration 0019): a trigger that tallied them again would
    # cost every ingest statement its second INSERT, and `tally_counts` would hide it.
    assert session.scalar(select(func.count()).where(EventCount.status == "pending")) == 0


def check(runtime: Runtime) -> dict[tuple[str | None, str, str], int]:
    with runtime.db.session() as session:
        assert_exact(session)
        return tally_counts(session)


def test_every_write_path_keeps_the_tallies_exact(
    runtime: Runtime, client: FlaskClient, admin_key: str, drain: Callable[[], None]
) -> None:
    admin = auth(admin_key)
    source = create_source(client, admin)
    for i in range(6):
        identify(client, admin_key, email=f"person{i}@example.com", name=f"Person {i}")
        post_customer_created(client, source, "tally", i)
    counts = check(runtime)
    assert counts == {(None, "identify", "pending"): 6, (source, "stripe", "pending"): 6}

    drain()  # the worker's one-statement bulk update (a CTE that also writes the attempts)
    counts = check(runtime)
    assert counts == {(None, "identify", "processed"): 6, (source, "stripe", "processed"): 6}

    # Latencies on every bucket's bound and just past it: the triggers bucket as the scan does.
    with runtime.db.session() as session, session.begin():
        ids = session.scalars(select(Event.id).order_by(Event.id)).all()
        for event_id, seconds in zip(ids, [*LATENCY_BOUNDS, LATENCY_BOUNDS[-1] + 1, 0.1000001], strict=True):
            session.execute(
                update(Event)
                .where(Event.id == event_id)
                .values(processed_at=Event.received_at + func.make_interval(0, 0, 0, 0, 0, 0, seconds))
            )
    check(runtime)

    replayed = client.post(f"/v1/events/{ids[0]}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.get_json()
    assert client.delete("/v1/customers/person1@example.com", headers=admin).status_code == 204
    check(runtime)

    # Bare SQL: a bulk move back to pending, a failure, deletions, the source's deletion (its events
    # keep their rows, their source becomes NULL through the foreign key), and TRUNCATE.
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(Event).where(Event.id.in_(ids[:3])).values(status="pending", processed_at=None)
        )
        session.execute(update(Event).where(Event.id == ids[3]).values(status="failed"))
        session.execute(delete(Event).where(Event.id.in_(ids[4:6])))
    check(runtime)
    with runtime.db.session() as session, session.begin():
        session.execute(delete(Source).where(Source.id == source))
    counts = check(runtime)
    assert not any(key[0] == source for key in counts)
    # Bare SQL inserting events in other statuses than pending, applied ones with their latency,
    # mixed with pending ones in one statement (counted by the row trigger, migration 0021).
    with runtime.db.engine.begin() as conn:
        _store_events(conn, "evt_bare", 8)
    counts = check(runtime)
    assert counts[(None, "identify", "processed")] >= 6
    with runtime.db.session() as session, session.begin():
        session.execute(text("TRUNCATE events CASCADE"))
    assert check(runtime) == {}


def test_a_rolled_back_write_counts_nothing(runtime: Runtime, client: FlaskClient) -> None:
    token = make_key(runtime, ["ingest"])
    identify(client, token, email="kept@example.com")
    with runtime.db.session() as session:
        session.begin()
        session.execute(update(Event).values(status="failed"))
        session.rollback()
    assert check(runtime) == {(None, "identify", "pending"): 1}


def test_compaction_folds_the_rows_and_keeps_the_sums(
    runtime: Runtime, client: FlaskClient, drain: Callable[[], None]
) -> None:
    token = make_key(runtime, ["ingest"])
    for batch in range(2):  # two drains: two rows of the same key to fold
        for i in range(5):
            identify(client, token, email=f"c{batch}-{i}@example.com")
        drain()
    with runtime.db.session() as session, session.begin():
        before = tally_counts(session), tally_latency(session)
        rows = session.scalar(select(func.count()).select_from(EventCount))
        assert rows is not None and rows > len(before[0])
    assert sweep(runtime) == 0  # the sweeper compacts as it goes
    with runtime.db.session() as session, session.begin():
        assert (tally_counts(session), tally_latency(session)) == before
        assert session.scalar(select(func.count()).select_from(EventCount)) == len(before[0])
        assert_exact(session)
        # Compacted: one row per key and one per latency bucket that holds events.
        assert compact(session) == len(before[0]) + sum(1 for n, _ in before[1] if n)


def test_compaction_beside_a_writer_and_another_compaction_stays_exact(
    runtime: Runtime, client: FlaskClient, drain: Callable[[], None]
) -> None:
    token = make_key(runtime, ["ingest"])
    for i in range(3):
        identify(client, token, email=f"w{i}@example.com")
    drain()  # tallied rows to fold (pending events have none)
    engine = runtime.db.engine
    with engine.connect() as writer, engine.connect() as first:
        # A writer's uncommitted rows are invisible to a compaction, which leaves them alone.
        writer.execute(update(Event).where(Event.email == "w0@example.com").values(status="failed"))
        with Session(first) as session:
            compact(session)  # holds the rows it folded until it commits
            done = threading.Event()

            def second() -> None:
                with Session(engine) as other, other.begin():
                    compact(other)  # waits for the first, then skips the rows it deleted
                done.set()

            thread = threading.Thread(target=second)
            thread.start()
            assert not done.wait(0.5)
            session.commit()
            thread.join(10)
            assert done.is_set()
        writer.commit()
    assert check(runtime) == {(None, "identify", "processed"): 2, (None, "identify", "failed"): 1}


def test_a_scrape_reads_the_tallies_not_the_events(runtime: Runtime, client: FlaskClient) -> None:
    token = make_key(runtime, ["ingest"])
    identify(client, token, email="scraped@example.com")
    with statements_sent(runtime) as sent:
        assert client.get("/metrics").status_code == 200
    reads = [s.sql for s in sent if s.reads("events")]
    # The backlog's count and age only, by the pending rows' partial index.
    assert len(reads) == 1 and "events.status = " in reads[0], reads
    assert any(s.reads("event_counts") for s in sent) and any(s.reads("event_latency") for s in sent)


def _store_events(conn: Connection, prefix: str, count: int) -> None:
    """`count` identify events (ids `prefix` + 1..count) of one account and project, created when
    missing: one in four pending, the others processed `g` seconds after they were received."""
    conn.execute(
        text(
            "INSERT INTO accounts (id, name, created_at) VALUES ('acct_t', 't', now()) ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        text(
            "INSERT INTO projects (id, account_id, slug, name, created_at) "
            "VALUES ('prj_t', 'acct_t', 'default', 'Default', now()) ON CONFLICT DO NOTHING"
        )
    )
    conn.execute(
        text(
            """INSERT INTO events (id, account_id, project_id, channel, type, occurred_at, received_at,
                   body, headers, status, attempts, processed_at)
               SELECT :prefix || g, 'acct_t', 'prj_t', 'identify', 'identify', now(), now(), '', '{}',
                      CASE WHEN g % 4 = 0 THEN 'pending' ELSE 'processed' END, 1,
                      CASE WHEN g % 4 = 0 THEN NULL ELSE now() + g * interval '1 second' END
               FROM generate_series(1, :count) AS g"""
        ),
        {"prefix": prefix, "count": count},
    )


def test_the_migration_counts_the_events_already_stored(scratch_url: str, runtime: Runtime) -> None:
    upgrade(scratch_url, "0012_email_trigram_on_lower")
    engine = create_engine(normalize_url(scratch_url))
    with engine.begin() as conn:
        _store_events(conn, "evt_", 40)
    upgrade(scratch_url)
    with Session(engine) as session:
        assert_exact(session)
        assert tally_counts(session) == {
            (None, "identify", "pending"): 10,
            (None, "identify", "processed"): 30,
        }
    engine.dispose()


def _tally_sums(engine: Engine) -> dict[tuple[str | None, str, str], int]:
    """Every key's sum in `event_counts`, whatever the revision's triggers put there."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT source_id, channel, status, sum(events) FROM event_counts "
                "GROUP BY 1, 2, 3 HAVING sum(events) <> 0"
            )
        )
        return {(source, channel, status): int(n) for source, channel, status, n in rows}


def test_the_migration_to_live_pending_counts_and_back_keeps_the_counts(scratch_url: str) -> None:
    """0019 drops the pending events' tallies (their count is live from then on) while holding
    writers off; its downgrade tallies them again, as 0018's triggers go on from."""
    upgrade(scratch_url, "0018_tally_updates_unjoined")
    engine = create_engine(normalize_url(scratch_url))
    with engine.begin() as conn:
        _store_events(conn, "evt_a", 20)
    tallied_before = {(None, "identify", "pending"): 5, (None, "identify", "processed"): 15}
    assert _tally_sums(engine) == tallied_before

    upgrade(scratch_url)
    with engine.begin() as conn:
        _store_events(conn, "evt_b", 20)  # 5 more pending, untallied
    with Session(engine) as session:
        assert_exact(session)
        live = tally_counts(session)
    assert live == {(None, "identify", "pending"): 10, (None, "identify", "processed"): 30}
    assert _tally_sums(engine) == {(None, "identify", "processed"): 30}

    downgrade(scratch_url, "0018_tally_updates_unjoined")
    assert _tally_sums(engine) == {(None, "identify", "pending"): 10, (None, "identify", "processed"): 30}
    with engine.begin() as conn:  # 0018's triggers again: pending events tallied as they come
        conn.execute(text("UPDATE events SET status = 'pending', processed_at = NULL WHERE id = 'evt_a1'"))
    assert _tally_sums(engine) == {(None, "identify", "pending"): 11, (None, "identify", "processed"): 29}
    engine.dispose()


def test_an_ingest_statement_writes_no_tally(runtime: Runtime, client: FlaskClient) -> None:
    """Identify, ping and webhooks store pending events: their statements leave the tallies alone,
    so PostgreSQL runs no second INSERT inside each one (migration 0019), nor any statement of the
    tallies' trigger (0021: no transition table kept, no EXISTS over it)."""
    token = make_key(runtime, ["ingest"])
    for i in range(3):
        identify(client, token, email=f"untallied{i}@example.com")
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(EventCount)) == 0
        assert tally_counts(session) == {(None, "identify", "pending"): 3}
        row = session.execute(select(Event.__table__)).mappings().first()
    assert row is not None
    again = {name: value for name, value in row.items() if name in ROW_COLUMNS and name != "payload"} | {
        "id": sortable_id("evt"),
        "dedup_key": None,
        "status": "pending",
    }
    with runtime.db.engine.connect() as conn, nested_plans(conn) as plans:
        assert insert_rows(conn, [again]) == {again["id"]}
        conn.rollback()
    ran = [p.get("Query Text", "") for p in plans]
    tallying = [sql for sql in ran if any(n in sql for n in ("new_rows", "event_counts", "event_latency"))]
    assert ran and not tallying, ran


def test_the_update_tally_reads_its_transition_tables_without_a_join(
    runtime: Runtime, client: FlaskClient
) -> None:
    """PostgreSQL plans a trigger's statements at their first call in a session and keeps the plan.
    When that call saw no rows (a sweep that updated nothing), a join of `old_rows` with `new_rows`
    was kept as a nested loop: a batch of 500 events then cost 250,000 comparisons per statement,
    a fifth of PostgreSQL's CPU in the drain (bench/README.md). The update trigger (migration 0018)
    sums the old rows out and the new ones in, with no join whatever the plan."""
    token = make_key(runtime, ["ingest"])
    for i in range(12):
        identify(client, token, email=f"planned{i}@example.com")
    with runtime.db.engine.connect() as conn, nested_plans(conn) as plans:
        conn.execute(update(Event).where(text("false")).values(status="failed"))  # plans, no rows
        conn.execute(update(Event).values(status="failed"))  # the kept plans, 12 rows
        conn.rollback()
    tallies = [p for p in plans if "INSERT INTO event_" in p.get("Query Text", "")]
    assert len(tallies) == 4, [p.get("Query Text") for p in plans]
    joins = [node for p in tallies for node in plan_nodes(p["Plan"]) if node.endswith(("Loop", "Join"))]
    assert joins == []
