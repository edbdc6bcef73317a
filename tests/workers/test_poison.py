"""Poison events: an event the database refuses fails alone and never halts the pipeline.

The hostile rows go straight into the `events` table on a test channel that parses them as
the API channel did before ingest and normalization learned to refuse unstorable values
(`connectors/safe_json.py`), so these tests hold whatever validation accepts or rejects: they
prove the isolation, not the validation. PostgreSQL refuses NUL in text and lone surrogates in
JSON; SQLite stores those (JSON as text), but no driver encodes a lone surrogate into a text
column. What a backend stores is simply applied. A non-finite number is the exception: no backend
stores one faithfully, so every channel's changes are checked for them before any write
(workers/normalize.py), and such an event fails there, alone, on every backend.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq.registry import ScheduledJobRegistry
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.helpers import auth, customer, identify
from tributary.app.accounts import get_project
from tributary.connectors.changes import CustomerChange
from tributary.models import Customer, Database, Event, Project
from tributary.runtime.process import Runtime
from tributary.workers.isolation import apply_isolated
from tributary.workers.jobs import EventFailed, drain_batch, process_event
from tributary.workers.normalize import INTERNAL_CHANNELS

# kind -> (identify body, refused by SQLite too)
HOSTILE_BODIES: dict[str, tuple[bytes, bool]] = {
    "nul-in-name": (json.dumps({"name": "a\u0000b"}).encode(), False),
    "nul-in-param": (json.dumps({"params": {"k": "a\u0000b"}}).encode(), False),
    "nul-in-param-key": (json.dumps({"params": {"a\u0000b": 1}}).encode(), False),
    "nul-in-status": (json.dumps({"status": "a\u0000b"}).encode(), False),
    "lone-surrogate-param": (b'{"params": {"k": "\\udfff"}}', False),
    "lone-surrogate-name": (b'{"name": "a\\ud800b"}', True),
    "lone-surrogate-status": (b'{"status": "\\udc80"}', True),
}


# kind -> (identify body, where the number is): refused before any write, on every backend
# (workers/normalize.py), since no database stores one and the bulk writes' encoder would write it
# as null.
NON_FINITE_BODIES: dict[str, tuple[bytes, str]] = {
    "nan-param": (b'{"params": {"n": NaN}}', "params.n"),
    "huge-param": (b'{"params": {"n": 1e400}}', "params.n"),
    "minus-huge-param": (b'{"params": {"n": -1e400}}', "params.n"),
    "nan-param-once": (b'{"params_once": {"n": NaN}}', "params_once.n"),
    "nested": (b'{"params": {"tiers": [1, {"x": Infinity}]}}', "params.tiers[1].x"),
}


RAW_CHANNEL = "raw-identify"


def _raw_identify(_session: Session, event: Event) -> list[CustomerChange]:
    """Identify as the API channel applied it before validation existed: whatever the body holds."""
    data: dict[str, Any] = json.loads(event.body)
    return [
        CustomerChange(
            occurred_at=event.occurred_at,
            email=event.email,
            name=data.get("name"),
            status=data.get("status"),
            params=data.get("params") or {},
            params_once=data.get("params_once") or {},
            activity=True,
        )
    ]


@pytest.fixture(autouse=True)
def _raw_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(INTERNAL_CHANNELS, RAW_CHANNEL, _raw_identify)


def insert_event(runtime: Runtime, project_id: str, email: str, body: bytes) -> str:
    """A raw identify event, as if ingest had stored it."""
    with runtime.db.session() as session, session.begin():
        project = session.get(Project, project_id)
        assert project is not None
        event = Event(
            account_id=project.account_id,
            project_id=project_id,
            channel=RAW_CHANNEL,
            type="identify",
            email=email,
            occurred_at=datetime.now(UTC),
            body=body,
        )
        session.add(event)
        session.flush()
        return event.id


@pytest.fixture
def project_id(runtime: Runtime, account_id: str) -> str:
    with runtime.db.session() as session:
        return get_project(session, account_id, "default").id


def events_by_id(runtime: Runtime) -> dict[str, Event]:
    with runtime.db.session() as session:
        return {event.id: event for event in session.scalars(select(Event))}


def drain_all(runtime: Runtime, limit: int | None = None) -> None:
    for _ in range(100):
        if drain_batch(runtime, limit) == 0:
            return
    raise AssertionError("events still pending after 100 batches")


def assert_failed_alone(runtime: Runtime, event: Event, attempts: int = 1) -> None:
    assert event.status == "failed"
    assert event.attempts == attempts
    assert event.last_error and "refused" in event.last_error
    assert "\x00" not in event.last_error
    assert event.changes is None
    assert f"event-{event.id}" in ScheduledJobRegistry(queue=runtime.queue).get_job_ids()


def drain_among_good_events(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str, body: bytes
) -> Event:
    """One batch: four good events, the raw one with `body`, four more good ones. Checks that every
    good one applied once; returns the raw one's row."""
    good = [
        identify(client, admin_key, email=f"g{i}@example.com", name=f"G{i}")["event_id"] for i in range(4)
    ]
    poison = insert_event(runtime, project_id, "poison@example.com", body)
    good += [identify(client, admin_key, email=f"h{i}@ex.com", name=f"H{i}")["event_id"] for i in range(4)]
    assert drain_batch(runtime) == 9  # one batch holds all of them
    events = events_by_id(runtime)
    assert {i: (events[i].status, events[i].attempts) for i in good} == dict.fromkeys(good, ("processed", 1))
    return events[poison]


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
def test_a_poison_event_fails_alone_and_the_pipeline_goes_on(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str, kind: str
) -> None:
    body, refused_by_sqlite = HOSTILE_BODIES[kind]
    poison = drain_among_good_events(client, admin_key, runtime, project_id, body)
    if runtime.db.is_postgres or refused_by_sqlite:
        assert_failed_alone(runtime, poison)
    else:
        assert (poison.status, poison.attempts) == ("processed", 1)
    assert customer(client, admin_key, "h3@ex.com")["name"] == "H3"

    # Later events are applied as usual: nothing is left pending to block them.
    later = identify(client, admin_key, email="later@example.com", name="Later")["event_id"]
    assert drain_batch(runtime) == 1
    assert events_by_id(runtime)[later].status == "processed"


@pytest.mark.parametrize("kind", sorted(NON_FINITE_BODIES))
def test_a_non_finite_number_fails_its_event_before_any_write_on_every_backend(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str, kind: str
) -> None:
    body, where = NON_FINITE_BODIES[kind]
    event = drain_among_good_events(client, admin_key, runtime, project_id, body)
    assert (event.status, event.attempts, event.changes) == ("failed", 1, None)
    assert event.last_error == f"NormalizeError: the change cannot be stored: {where} is not a finite number"
    assert f"event-{event.id}" in ScheduledJobRegistry(queue=runtime.queue).get_job_ids()
    with runtime.db.session() as session:  # nothing of it was written
        assert session.scalar(select(Customer).where(Customer.email == "poison@example.com")) is None


def test_many_poison_events_in_one_batch_each_fail_alone(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str
) -> None:
    poison: dict[str, bool] = {}
    good: list[str] = []
    for n, (body, refused_by_sqlite) in enumerate(HOSTILE_BODIES.values()):
        good.append(identify(client, admin_key, email=f"g{n}@example.com", params={"n": n})["event_id"])
        poison[insert_event(runtime, project_id, f"p{n}@example.com", body)] = refused_by_sqlite

    assert drain_batch(runtime) == len(good) + len(poison)
    events = events_by_id(runtime)
    assert all(events[i].status == "processed" for i in good)
    refused = [i for i, by_sqlite in poison.items() if runtime.db.is_postgres or by_sqlite]
    assert refused
    for event_id in refused:
        assert_failed_alone(runtime, events[event_id])
    if runtime.db.is_postgres:
        errors = " ".join(events[i].last_error or "" for i in refused)
        assert "NUL" in errors and "json" in errors  # the driver's own words


def history(client: FlaskClient, admin_key: str, event_id: str) -> list[tuple[int, str, bool]]:
    """The event's attempt history as operators read it: (number, outcome, refused by the database)."""
    response = client.get(f"/v1/events/{event_id}", headers=auth(admin_key))
    assert response.status_code == 200, response.get_json()
    return [
        (a["number"], a["outcome"], "refused" in (a["error"] or ""))
        for a in response.get_json()["attempt_history"]
    ]


def test_the_retry_job_counts_each_attempt_and_raises_so_rq_retries(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str
) -> None:
    body, _ = HOSTILE_BODIES["lone-surrogate-name"]  # refused by every backend
    poison = insert_event(runtime, project_id, "poison@example.com", body)
    drain_all(runtime)
    assert_failed_alone(runtime, events_by_id(runtime)[poison])
    for attempt in (2, 3):
        with pytest.raises(EventFailed, match="refused"):
            process_event(poison)
        event = events_by_id(runtime)[poison]
        assert (event.status, event.attempts) == ("failed", attempt)

    # The operator repairs the body; the next retry applies it.
    with runtime.db.session() as session, session.begin():
        repaired = session.get(Event, poison)
        assert repaired is not None
        repaired.body = b'{"name": "Repaired"}'
    assert process_event(poison) == "processed"
    assert events_by_id(runtime)[poison].attempts == 4
    # Every attempt is in the history once: the isolated failure, both retries refused at commit, the
    # successful one.
    assert history(client, admin_key, poison) == [
        (1, "failed", True),
        (2, "failed", True),
        (3, "failed", True),
        (4, "processed", False),
    ]


def test_a_batch_whose_commit_fails_is_isolated_too(
    client: FlaskClient, admin_key: str, runtime: Runtime, project_id: str
) -> None:
    """Whatever raises in the batch transaction (here the COMMIT itself) is bisected down to the
    one event it comes from."""
    ids = [insert_event(runtime, project_id, f"c{i}@example.com", b'{"name": "C"}') for i in range(9)]
    doomed = ids[5]

    def refuse(session: Session) -> None:
        events = [obj for obj in session.identity_map.values() if isinstance(obj, Event)]
        if any(event.id == doomed and event.status == "processed" for event in events):
            raise RuntimeError("commit refused")

    sa_event.listen(runtime.db.WriteSession, "before_commit", refuse)
    try:
        assert drain_batch(runtime) == 9
        first, first_history = events_by_id(runtime), history(client, admin_key, doomed)
        with pytest.raises(EventFailed, match="commit refused"):
            process_event(doomed)  # its retry job, refused at commit again
    finally:
        sa_event.remove(runtime.db.WriteSession, "before_commit", refuse)
    assert [first[i].status for i in ids] == ["processed"] * 5 + ["failed"] + ["processed"] * 3
    assert (
        first[doomed].last_error == "the database refused this event's writes: RuntimeError: commit refused"
    )
    assert first[doomed].attempts == 1
    # The rolled-back tries left no attempt behind; each attempt that counted is recorded once.
    assert first_history == [(1, "failed", True)]
    assert history(client, admin_key, doomed) == [(1, "failed", True), (2, "failed", True)]
    assert process_event(doomed) == "processed"
    assert history(client, admin_key, doomed)[2:] == [(3, "processed", False)]
    events = events_by_id(runtime)
    assert [events[i].status for i in ids] == ["processed"] * 9
    assert events[doomed].attempts == 3
    assert {i: history(client, admin_key, i) for i in ids if i != doomed} == {
        i: [(1, "processed", False)] for i in ids if i != doomed
    }


# --- property: random hostile events among good ones ---------------------------------------------

HOSTILE_STRINGS = st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfffy", "\x00\udc00"])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def hostile_body(draw: st.DrawFn) -> dict[str, Any]:
    text = st.text(max_size=5)
    spiked = st.builds(lambda a, h, b: a + h + b, text, HOSTILE_STRINGS, text)
    where = draw(st.sampled_from(["name", "status", "param", "param_key", "param_once", "number"]))
    if where == "name":
        return {"name": draw(spiked)}
    if where == "status":
        return {"status": draw(spiked)}
    if where == "param_key":
        return {"params": {draw(spiked): 1}}
    if where == "number":
        return {"params": {"n": draw(NON_FINITE)}}
    field = "params" if where == "param" else "params_once"
    return {field: {"k": draw(st.one_of(spiked, NON_FINITE))}}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def refused(body: dict[str, Any], postgres: bool) -> bool:
    """What each backend refuses: every backend a non-finite number (at normalization);
    PostgreSQL any NUL or lone surrogate; SQLite only a lone surrogate in a text column (its JSON
    is text with escapes)."""

    def surrogate(text: str) -> bool:
        return any(0xD800 <= ord(c) <= 0xDFFF for c in text)

    numbers = [v for field in ("params", "params_once") for v in (body.get(field) or {}).values()]
    if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
        return True  # refused before any write, on every backend
    if not postgres:
        return any(surrogate(body.get(column) or "") for column in ("name", "status"))
    return any("\x00" in s or surrogate(s) for s in _strings(body))


_serial = itertools.count()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(st.one_of(st.none(), hostile_body()), min_size=1, max_size=30), limit=st.integers(4, 40)
)
def test_property_every_good_event_applies_and_every_refused_one_fails_alone(
    runtime: Runtime, project_id: str, batch: list[dict[str, Any] | None], limit: int
) -> None:
    run = next(_serial)
    good: dict[str, str] = {}
    hostile: dict[str, dict[str, Any]] = {}
    for n, body in enumerate(batch):
        email = f"r{run}-{n}@example.com"
        if body is None:
            good[insert_event(runtime, project_id, email, json.dumps({"name": f"N{n}"}).encode())] = email
        else:
            hostile[insert_event(runtime, project_id, email, json.dumps(body).encode())] = body
    drain_all(runtime, limit)

    events = events_by_id(runtime)
    assert {i: events[i].status for i in good} == dict.fromkeys(good, "processed")
    with runtime.db.session() as session:
        names = set(session.scalars(select(Customer.name).where(Customer.email.in_(good.values()))))
    assert names == {f"N{n}" for n, body in enumerate(batch) if body is None}
    for event_id, body in hostile.items():
        event = events[event_id]
        expected = "failed" if refused(body, runtime.db.is_postgres) else "processed"
        assert (event.status, event.attempts) == (expected, 1), (body, event.last_error)
        if expected == "failed":
            assert event.last_error and "\x00" not in event.last_error


def test_a_lost_database_is_not_blamed_on_the_events(runtime: Runtime, project_id: str) -> None:
    """Isolation splits only while the database answers: losing it marks nothing failed."""
    ids = [insert_event(runtime, project_id, f"d{i}@example.com", b'{"name": "D"}') for i in range(4)]
    dead = Runtime(runtime.settings, db=Database("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    attempts: list[object] = []
    sa_event.listen(dead.db.engine, "do_connect", lambda *args: attempts.append(args))
    with pytest.raises(OperationalError):
        apply_isolated(dead, ids)
    assert len(attempts) == 2  # the first part, then the check that gave up: no bisecting
    events = events_by_id(runtime)
    assert {(events[i].status, events[i].attempts) for i in ids} == {("pending", 0)}
