"""Replay through today's connector code: a dry run writes nothing and answers the diff; a real
run applies it; bulk replays run in the background, report progress and can be cancelled."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, insert, select, update

from tests.connectors.stripe_helpers import EMAIL, create_source, event, load, post
from tests.helpers import identify, outage_redis
from tributary.app import create_app
from tributary.app.accounts import ensure_account, get_project
from tributary.models import Customer, Event, Project, Replay, Source, TimelineEntry
from tributary.models.base import sortable_id, utcnow
from tributary.runtime.doorbell import ring
from tributary.runtime.process import Runtime
from tributary.workers.replay import replay_step, run_replay
from tributary.workers.worker import TributaryWorker


def _status(client: FlaskClient, admin: dict[str, str]) -> Any:
    token = admin["Authorization"].split()[1]
    record = client.get(f"/v1/customers/{EMAIL}", headers={"Authorization": f"Bearer {token}"}).get_json()
    return record["projects"]["default"]["status"]


def _counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.db.session() as session:
        changes = session.scalar(select(func.count()).select_from(TimelineEntry))
        customers = session.scalar(select(func.count()).select_from(Customer))
    return int(changes or 0), int(customers or 0)


def _stripe_past_due(
    client: FlaskClient, admin: dict[str, str], drain: Callable[[], None]
) -> tuple[str, str]:
    source_id = create_source(client, admin)
    post(client, source_id, load("customer.created"))
    subscription = event("customer.subscription.updated", event_id="evt_sub_past_due", status="past_due")
    post(client, source_id, subscription)
    drain()
    events = client.get("/v1/events?type=customer.subscription.updated", headers=admin).get_json()["data"]
    assert [e["status"] for e in events] == ["processed"]
    return source_id, events[0]["id"]


def test_dry_run_of_a_processed_event_shows_no_diff_and_writes_nothing(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    _, event_id = _stripe_past_due(client, admin, drain)
    before = _counts(runtime)
    attempts = client.get(f"/v1/events/{event_id}", headers=admin).get_json()["attempt_history"]
    answer = client.post(f"/v1/events/{event_id}/replay?dry_run=true", headers=admin)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["dry_run"] is True and body["status"] == "processed" and body["diff"] == []
    assert _counts(runtime) == before
    detail = client.get(f"/v1/events/{event_id}", headers=admin).get_json()
    assert detail["attempt_history"] == attempts  # nothing written, not even an attempt


def test_dry_run_after_an_option_change_shows_the_diff_then_a_real_replay_applies_it(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id, event_id = _stripe_past_due(client, admin, drain)
    assert _status(client, admin) == "past_due"
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(Source).where(Source.id == source_id).values(options={"status.past_due": "paid"})
        )

    answer = client.post(f"/v1/events/{event_id}/replay", json={"dry_run": True}, headers=admin)
    assert answer.status_code == 200, answer.get_json()
    diff = answer.get_json()["diff"]
    status_diff = [d for d in diff if d["field"] == "projects.default.status"]
    assert status_diff == [
        {
            "customer_id": status_diff[0]["customer_id"],
            "email": EMAIL,
            "field": "projects.default.status",
            "before": "past_due",
            "after": "paid",
        }
    ]
    assert _status(client, admin) == "past_due"  # the dry run wrote nothing

    real = client.post(f"/v1/events/{event_id}/replay", headers=admin).get_json()
    assert real["dry_run"] is False and real["status"] == "processed"
    assert [d["after"] for d in real["diff"] if d["field"] == "projects.default.status"] == ["paid"]
    assert _status(client, admin) == "paid"
    detail = client.get(f"/v1/events/{event_id}", headers=admin).get_json()
    assert [a["outcome"] for a in detail["attempt_history"]] == ["processed", "processed"]
    # Replaying again changes nothing more.
    assert client.post(f"/v1/events/{event_id}/replay?dry_run=1", headers=admin).get_json()["diff"] == []


def test_replay_re_splits_the_raw_body_with_todays_connector(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    _, event_id = _stripe_past_due(client, admin, drain)
    # A stored split from an older connector version that lost the status: the raw body still has it.
    with runtime.db.session() as session, session.begin():
        stored = session.get(Event, event_id)
        assert stored is not None
        payload = json.loads(json.dumps(stored.payload))
        payload["data"]["object"]["status"] = "active"
        stored.payload = payload
    answer = client.post(f"/v1/events/{event_id}/replay?dry_run=true", headers=admin).get_json()
    assert answer["diff"] == []  # re-split from the body: past_due, as applied


def test_replay_errors(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    _, event_id = _stripe_past_due(client, admin, drain)
    assert client.post("/v1/events/evt_nope/replay", headers=admin).status_code == 404
    for query in ("dry_run=maybe", "dry_run=true&dry_run=false", "force=1"):
        answer = client.post(f"/v1/events/{event_id}/replay?{query}", headers=admin)
        assert answer.status_code == 400, query
        assert answer.get_json()["error"]["code"] == "validation_error"
    for body in (b"{", b"[]", b'{"dry_run": "yes"}', b'{"other": 1}'):
        answer = client.post(
            f"/v1/events/{event_id}/replay", data=body, headers={**admin, "Content-Type": "application/json"}
        )
        assert answer.status_code == 400, body
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == event_id).values(purged_at=utcnow(), body=b""))
    answer = client.post(f"/v1/events/{event_id}/replay", headers=admin)
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "event_purged"


def _many_identifies(runtime: Runtime, count: int) -> None:
    now = utcnow()
    with runtime.db.session() as session, session.begin():
        project = session.scalar(select(Project).where(Project.slug == "default"))
        assert project is not None
        rows = []
        for index in range(count):
            email = f"user{index}@example.com"
            body = {"email": email, "status": "trial", "params": {"n": index}}
            rows.append(
                {
                    "id": sortable_id("evt"),
                    "account_id": project.account_id,
                    "project_id": project.id,
                    "channel": "identify",
                    "type": "identify",
                    "email": email,
                    "occurred_at": now - timedelta(seconds=count - index),
                    "received_at": now,
                    "body": json.dumps(body).encode(),
                    "headers": {},
                    "status": "pending",
                    "attempts": 0,
                }
            )
        session.execute(insert(Event), rows)


def test_bulk_replay_of_1000_events_with_progress_and_cancellation(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        get_project(session, account.id, "default")
    _many_identifies(runtime, 1000)
    ring(runtime)
    drain()
    assert client.get("/v1/events?status=pending", headers=admin).get_json()["data"] == []

    plan = client.post("/v1/events/replay", json={"connector": "identify", "dry_run": True}, headers=admin)
    assert plan.status_code == 200, plan.get_json()
    assert plan.get_json()["count"] == 1000
    assert len(plan.get_json()["sample"]) == 20 and all(s["diff"] == [] for s in plan.get_json()["sample"])

    started = client.post("/v1/events/replay", json={"connector": "identify"}, headers=admin)
    assert started.status_code == 202, started.get_json()
    replay = started.get_json()
    assert (replay["state"], replay["total"], replay["done"]) == ("queued", 1000, 0)
    assert replay_step(runtime, replay["id"]) and replay_step(runtime, replay["id"])
    progress = client.get(f"/v1/replays/{replay['id']}", headers=admin).get_json()
    assert (progress["state"], progress["done"], progress["failed"]) == ("running", 200, 0)
    cancelled = client.delete(f"/v1/replays/{replay['id']}", headers=admin).get_json()
    assert cancelled["state"] == "cancelled"
    assert run_replay(replay["id"]) == "done"  # the queued job finds it cancelled and stops
    assert client.get(f"/v1/replays/{replay['id']}", headers=admin).get_json()["done"] == 200

    # A full replay runs from the low-priority queue through a real worker.
    second = client.post("/v1/events/replay", json={"connector": "identify"}, headers=admin).get_json()
    drain()
    final = client.get(f"/v1/replays/{second['id']}", headers=admin).get_json()
    assert (final["state"], final["done"], final["failed"], final["total"]) == ("completed", 1000, 0, 1000)
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Replay)) == 2
        attempts = session.execute(select(func.min(Event.attempts), func.max(Event.attempts))).one()
    # The first run and the completed replay; the cancelled one reached 200 of them.
    assert tuple(attempts) == (2, 3)


def test_bulk_replay_requires_a_filter_and_validates_it(client: FlaskClient, admin: dict[str, str]) -> None:
    for body in (
        {},
        {"dry_run": True},
        {"status": "weird"},
        {"since": "yesterday"},
        {"bogus": 1},
        {"email": 5},
    ):
        answer = client.post("/v1/events/replay", json=body, headers=admin)
        assert answer.status_code == 400, body
    assert client.post("/v1/events/replay", data=b"[1]", headers=admin).status_code == 400
    assert client.get("/v1/replays/rpl_missing", headers=admin).status_code == 404
    assert client.delete("/v1/replays/rpl_missing", headers=admin).status_code == 404


def test_a_queued_replay_waits_behind_fresh_traffic(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    identify(client, token, email="old@example.com")
    drain()
    replay = client.post("/v1/events/replay", json={"connector": "identify"}, headers=admin).get_json()
    fresh = identify(client, token, email="fresh@example.com")["event_id"]
    # One job: the worker takes the fresh event's drain job from the main queue first.
    TributaryWorker(runtime).work(burst=True, max_jobs=1, logging_level="WARNING")
    assert client.get(f"/v1/events/{fresh}", headers=admin).get_json()["status"] == "processed"
    assert client.get(f"/v1/replays/{replay['id']}", headers=admin).get_json()["state"] == "queued"
    drain()
    assert client.get(f"/v1/replays/{replay['id']}", headers=admin).get_json()["state"] == "completed"


def test_bulk_replay_with_redis_down_is_a_503_and_leaves_no_replay_waiting(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    identify(client, admin["Authorization"].split()[1], email="a@example.com")
    drain()
    broken = Runtime(runtime.settings, db=runtime.db, redis=outage_redis(socket_connect_timeout=0.2))
    answer = (
        create_app({"TESTING": True}, runtime=broken)
        .test_client()
        .post("/v1/events/replay", json={"connector": "identify"}, headers=admin)
    )
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "queue_unavailable"
    with runtime.db.session() as session:
        [replay] = session.scalars(select(Replay))
    assert (replay.state, replay.error) == ("failed", "the queue was unreachable")


def test_an_erased_customers_events_are_never_replayed(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    erased = identify(client, token, email="gone@example.com", name="Gone")["event_id"]
    kept = identify(client, token, email="kept@example.com")["event_id"]
    drain()
    assert client.delete("/v1/customers/gone@example.com", headers=admin).status_code == 204
    answer = client.post(f"/v1/events/{erased}/replay", headers=admin)
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "event_erased"
    started = client.post("/v1/events/replay", json={"connector": "identify"}, headers=admin).get_json()
    drain()
    final = client.get(f"/v1/replays/{started['id']}", headers=admin).get_json()
    assert (final["state"], final["done"]) == ("completed", 2)
    assert client.get("/v1/customers/gone@example.com", headers=admin).status_code == 404
    assert client.get(f"/v1/events/{kept}", headers=admin).get_json()["attempts"] == 2
