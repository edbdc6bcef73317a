"""A batch's writes cost the same statements whatever its size (workers/batch/write_back_pg.py on
PostgreSQL, its last writes in one statement; one executemany per kind of row on SQLite:
write_back_sqlite.py), and every kind of write lands as the ORM path would write it (both
backends)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from tests.helpers import customer, identify, statements_sent
from tests.workers.test_email_change import (  # noqa: F401 - the fixture registers the channel
    _changes_channel,
    at,
    deletion,
    post,
    signup,
)
from tributary.models import Customer, Event, EventAttempt, Identity, IdentityTombstone, TimelineEntry
from tributary.models.base import to_micros
from tributary.models.sql import json_rows
from tributary.runtime.process import Runtime
from tributary.workers.batch import row_source
from tributary.workers.jobs import drain_batch

# Quotes, a backslash, an escape's look-alike and characters beyond ASCII and the BMP: the bulk
# statements carry rows as one JSON document (workers/batch/write_back_pg.py).
ODD = 'Zoë "q" \\ \\u00e9 😀'


def _batch(client: FlaskClient, admin_key: str, tag: str, size: int) -> dict[str, list[str]]:
    """`size` of each: a new customer, a known one renamed and moved to `paid`, an event whose
    stored body cannot be applied. Returns the event ids by kind."""
    ids: dict[str, list[str]] = {"new": [], "known": [], "broken": []}
    for i in range(size):
        ids["new"].append(
            identify(
                client, admin_key, email=f"{tag}-new{i}@example.com", name=f"N{i} {ODD}", status="trial"
            )["event_id"]
        )
        ids["known"].append(
            identify(
                client,
                admin_key,
                email=f"{tag}-known{i}@example.com",
                name=f"Renamed {i}",
                status="paid",
                params={"seats": i},
                timestamp="2026-06-01T00:00:00Z",
            )["event_id"]
        )
        ids["broken"].append(identify(client, admin_key, email=f"{tag}-broken{i}@example.com")["event_id"])
    return ids


def _drain_counting(runtime: Runtime) -> int:
    """Statements one batch sends. On PostgreSQL an executemany counts once per row (the server
    runs each); on SQLite, in the worker's own process, once (its rows cost no round trip)."""
    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 1000) > 0
    if runtime.db.is_postgres:
        return sum(len(s.parameters) if s.many else 1 for s in sent)
    return len(sent)


def _round(client: FlaskClient, admin_key: str, runtime: Runtime, tag: str, size: int) -> int:
    for i in range(size):
        identify(
            client,
            admin_key,
            email=f"{tag}-known{i}@example.com",
            name="Old",
            status="trial",
            timestamp="2026-01-01T00:00:00Z",
        )
    drain_batch(runtime, 1000)
    ids = _batch(client, admin_key, tag, size)
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id.in_(ids["broken"])).values(body=b"{not json"))
    statements = _drain_counting(runtime)

    for i in range(size):
        known = customer(client, admin_key, f"{tag}-known{i}@example.com")
        assert known["name"] == f"Renamed {i}"
        assert known["projects"]["default"]["status"] == "paid"
        assert known["projects"]["default"]["params"] == {"seats": i}
        new = customer(client, admin_key, f"{tag}-new{i}@example.com")
        assert new["name"] == f"N{i} {ODD}" and new["projects"]["default"]["status"] == "trial"
    with runtime.db.session() as session:
        for kind, status in (("new", "processed"), ("known", "processed"), ("broken", "failed")):
            events = list(session.scalars(select(Event).where(Event.id.in_(ids[kind]))))
            assert {e.status for e in events} == {status}
            assert {e.attempts for e in events} == {1}
            assert all(e.processed_at is not None for e in events)
            if status == "failed":
                assert all(e.last_error and "JSONDecodeError" in e.last_error for e in events)
                assert all(e.changes is None for e in events)
            else:
                assert all(e.last_error is None and e.changes for e in events)
            # One attempt each, as the event's outcome tells it (one statement writes both on
            # PostgreSQL), numbered in the batch's order.
            attempts = list(
                session.scalars(
                    select(EventAttempt).where(EventAttempt.event_id.in_(ids[kind])).order_by(EventAttempt.id)
                )
            )
            assert [a.event_id for a in attempts] == sorted(ids[kind])
            by_id = {e.id: e for e in events}
            for a in attempts:
                e = by_id[a.event_id]
                assert (a.number, a.outcome, a.error) == (1, e.status, e.last_error)
                assert a.attempted_at == e.processed_at
        rows = list(
            session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.event_id.in_(ids["new"] + ids["known"]))
                .order_by(TimelineEntry.id)
            )
        )
        # One row per applied event, in the batch's order (ids follow the events').
        assert [r.event_id for r in rows] == sorted(ids["new"] + ids["known"])
    return statements


def test_a_batch_costs_the_same_statements_whatever_its_size(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    few = _round(client, admin_key, runtime, "few", 2)
    many = _round(client, admin_key, runtime, "many", 12)
    assert many == few


def test_the_last_writes_of_a_batch_are_one_statement_on_postgresql(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    # Project rows, timeline and event outcomes with their attempts (write_back_pg.finish_batch):
    # a trickle's batch pays each of its statements per event.
    for i in range(3):
        identify(client, admin_key, email=f"last{i}@example.com", status="trial", params={"n": i})
    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 100) == 3

    last = [s for s in sent if "event_attempts" in s.sql]
    if runtime.db.is_postgres:
        (statement,) = last
        assert "INSERT INTO customer_projects" in statement.sql
        assert "INSERT INTO customer_changes" in statement.sql
        assert "UPDATE events" in statement.sql
    for i in range(3):
        project = customer(client, admin_key, f"last{i}@example.com")["projects"]["default"]
        assert (project["status"], project["params"]) == ("trial", {"n": i})
    with runtime.db.session() as session:
        assert len(list(session.scalars(select(EventAttempt)))) == 3
        assert len(list(session.scalars(select(TimelineEntry)))) == 3


def test_rows_go_as_json_unless_they_hold_a_nul_or_a_lone_surrogate() -> None:
    # The bulk statements' choice of row source (workers/batch/row_source.py): what JSON cannot
    # carry goes as arrays, for the driver to refuse in its own words.
    safe = row_source._json_safe
    assert safe(json.dumps([{"name": "plain"}]))
    assert safe(json.dumps([{"name": ODD}], ensure_ascii=False))
    assert not safe(json.dumps([{"name": "a\x00b"}], ensure_ascii=False))
    assert not safe(json.dumps([{"name": "a\ud800b"}], ensure_ascii=False))
    # Text that only looks like the escape is escaped itself, and takes the arrays to no harm.
    assert not safe(json.dumps([{"name": "\\u0000"}], ensure_ascii=False))


def _read_back(runtime: Runtime, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """`rows` through the row source the bulk statements would give them, read back by PostgreSQL."""
    columns = [("t", "text"), ("j", "jsonb"), ("at", "timestamptz"), ("i", "int"), ("b", "boolean")]
    source, params = row_source._source("rows", columns, rows)
    query = f"SELECT v.t, v.j IS NULL, v.j::text, v.at, v.i, v.b, v.n FROM {source} ORDER BY v.n"
    with runtime.db.session() as session:
        return [tuple(row) for row in session.execute(text(query), params)]


def test_a_payload_too_long_for_jsonb_goes_as_arrays_and_reads_the_same(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `_JSONB_TEXT_LIMIT` the rows go as one array per column (workers/batch/row_source.py),
    and PostgreSQL reads them as it reads the JSON: a None is SQL NULL in both, JSON `null` in
    neither."""
    if not runtime.db.is_postgres:
        pytest.skip("the row sources are PostgreSQL's bulk statements")
    moment = datetime(2026, 12, 5, 3, 0, 0, 123456, tzinfo=UTC)
    nested = {"tiers": [1, 2.5, None], "big": 2**70, "at": moment}
    rows: list[dict[str, Any]] = [
        {"t": ODD, "j": nested, "at": moment, "i": 7, "b": True},
        {"t": None, "j": None, "at": None, "i": None, "b": None},
        {"t": "", "j": [], "at": moment.replace(microsecond=0), "i": -(2**31), "b": False},
    ]
    as_json = _read_back(runtime, rows)
    monkeypatch.setattr(row_source, "_JSONB_TEXT_LIMIT", 0)
    as_arrays = _read_back(runtime, rows)
    assert as_arrays == as_json
    assert as_json[1][:3] == (None, True, None)


def test_jsonb_takes_the_densest_payload_the_limit_lets_through(runtime: Runtime) -> None:
    """`_JSONB_TEXT_LIMIT` sits below what PostgreSQL's `jsonb` refuses (its binary form's cap, its
    parser's allocation per array): one array of one-digit numbers, the densest JSON there is, as
    long as the limit lets a payload be."""
    if not runtime.db.is_postgres:
        pytest.skip("the row sources are PostgreSQL's bulk statements")
    head, tail = '[{"j":[', "1]}]"
    payload = head + "1," * ((row_source._JSONB_TEXT_LIMIT - len(head) - len(tail)) // 2) + tail
    assert row_source._json_safe(payload) and len(payload) > row_source._JSONB_TEXT_LIMIT - 2
    query = "SELECT jsonb_array_length(v.j) FROM jsonb_to_recordset(CAST(:p AS jsonb)) AS v(j jsonb)"
    with runtime.db.session() as session:
        assert session.scalar(text(query), {"p": payload}) == (len(payload) - len(head) - len(tail)) // 2 + 1


def test_the_bulk_rows_encode_as_the_standard_encoder_would() -> None:
    """orjson encodes the rows; what it refuses (a lone surrogate, an integer beyond 64 bits) the
    standard encoder takes, as before. Either way the JSON means the same rows."""
    moment = datetime(2026, 12, 3, 9, 30, 0, 123456, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"name": ODD, "at": moment, "whole": moment.replace(microsecond=0), "none": None},
        {"params": {"seats": 3, "ratio": 0.25, "flag": True, "tiers": [1, {"x": "y"}]}, "pair": ("a", 1)},
        {"clock": {"name": {"t": 1796245559420886}}, "past": []},
    ]

    def standard(value: list[dict[str, Any]]) -> str:
        return json.dumps(value, default=lambda v: v.isoformat(), ensure_ascii=False)

    assert json.loads(json_rows(rows, row_source._default)) == json.loads(standard(rows))
    for odd in ({"big": 2**70, "small": -(2**65)}, {"text": "a\ud800b"}):
        expected = json.dumps([odd], separators=(",", ":"), ensure_ascii=False)
        assert json_rows([odd], row_source._default) == expected


def test_integers_beyond_64_bits_are_stored_exactly(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    params = {"big": 2**70, "small": -(2**65), "plain": 7}
    identify(client, admin_key, email="big@example.com", name=ODD, params=params)
    drain_batch(runtime)
    found = customer(client, admin_key, "big@example.com")
    assert (found["projects"]["default"]["params"], found["name"]) == (params, ODD)


def _identity_round(runtime: Runtime, tag: str, size: int) -> int:
    """One batch of `size` of each: a signup (a new link), a deletion of a linked identity (an
    unlink and a new tombstone), a later deletion of a deleted one (its tombstone moves on).
    Returns the statements the batch sent, after checking what it wrote."""
    for i in range(size):
        post(runtime, signup(f"{tag}-old{i}", f"{tag}-old{i}@example.com", 0))
        post(runtime, signup(f"{tag}-gone{i}", f"{tag}-gone{i}@example.com", 0))
    drain_batch(runtime, 1000)
    for i in range(size):
        post(runtime, deletion(f"{tag}-gone{i}", 5))
    drain_batch(runtime, 1000)
    for i in range(size):
        post(runtime, signup(f"{tag}-new{i}", f"{tag}-new{i}@example.com", 10))
        post(runtime, deletion(f"{tag}-old{i}", 20))
        post(runtime, deletion(f"{tag}-gone{i}", 25))
    statements = _drain_counting(runtime)

    with runtime.db.session() as session:
        owners = dict(session.execute(select(Customer.email, Customer.id)).all())
        links = dict(
            session.execute(
                select(Identity.external_id, Identity.customer_id).where(
                    Identity.external_id.like(f"{tag}-%")
                )
            ).all()
        )
        assert links == {f"{tag}-new{i}": owners[f"{tag}-new{i}@example.com"] for i in range(size)}
        tombstones = {
            t.external_id: (t.customer_id, t.forgotten_at, t.event_id is not None)
            for t in session.scalars(
                select(IdentityTombstone).where(IdentityTombstone.external_id.like(f"{tag}-%"))
            )
        }
        assert tombstones == {
            **{
                f"{tag}-old{i}": (owners[f"{tag}-old{i}@example.com"], to_micros(at(20)), True)
                for i in range(size)
            },
            **{
                f"{tag}-gone{i}": (owners[f"{tag}-gone{i}@example.com"], to_micros(at(25)), True)
                for i in range(size)
            },
        }
    return statements


def test_identity_links_and_tombstones_cost_the_same_statements_whatever_the_batch_size(
    runtime: Runtime,
) -> None:
    few = _identity_round(runtime, "few", 2)
    many = _identity_round(runtime, "many", 7)
    assert many == few
