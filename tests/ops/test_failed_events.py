"""An operator's day: a Stripe event fails (the Stripe API lookup fails), is listed with its
error and every attempt, lands in the failed registry after its retries, is fixed and retried, and
ends processed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import responses
from flask.testing import FlaskClient

from tests.connectors.stripe_helpers import API_KEY, CUSTOMER_ID, EMAIL, create_source, load, post
from tests.helpers import sqlite_walks, statements_sent
from tributary.runtime.process import Runtime
from tributary.workers.worker import TributaryWorker

LOOKUP = f"https://api.stripe.com/v1/customers/{CUSTOMER_ID}"
STRIPE_DOWN = {
    "status": 500,
    "json": {"error": {"message": "Stripe is having a bad day", "type": "api_error"}},
}


@pytest.fixture
def fast_retries(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two automatic retries, due at once (the schedule is configuration, not code)."""
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0, 0)))


def work(runtime: Runtime) -> None:
    """A real worker with its scheduler, in burst mode: due retries are enqueued, then run."""
    for _ in range(4):
        TributaryWorker(runtime).work(burst=True, with_scheduler=True, logging_level="WARNING")


def test_failed_stripe_event_is_listed_retried_and_processed(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    fast_retries: None,
) -> None:
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        api.get(LOOKUP, **STRIPE_DOWN)
        api.get(LOOKUP, **STRIPE_DOWN)
        assert post(client, source_id, load("customer.subscription.updated")).status_code == 200
        drain()
        work(runtime)
        assert len(api.calls) == 3  # the batch, then the two scheduled retries

    listed = client.get("/v1/events?status=failed", headers=admin).get_json()
    [item] = listed["data"]
    assert listed["next_cursor"] is None
    assert (item["status"], item["attempts"], item["connector"], item["source"]) == (
        "failed",
        3,
        "stripe",
        source_id,
    )
    assert item["type"] == "customer.subscription.updated"
    assert "Stripe is having a bad day" in item["last_error"]

    detail = client.get(f"/v1/events/{item['id']}", headers=admin).get_json()
    assert [a["outcome"] for a in detail["attempt_history"]] == ["failed"] * 3
    assert all("Stripe is having a bad day" in a["error"] for a in detail["attempt_history"])
    assert detail["body_encoding"] == "json" and detail["body"]["type"] == "customer.subscription.updated"
    assert set(detail["headers"]) == {"content-type", "user-agent"}  # what the connector stores
    assert detail["changes"] == []

    [job] = client.get("/v1/jobs/failed", headers=admin).get_json()["data"]
    assert job["id"] == f"event-{item['id']}" and job["event_id"] == item["id"]
    assert job["exception_type"] == "CustomerLookupFailed"
    assert job["exception"].endswith("failed: APIError: Stripe is having a bad day")
    assert job["attempts"] == 3 and job["event_status"] == "failed" and job["failed_at"]
    assert client.get(f"/v1/jobs/failed/{job['id']}", headers=admin).get_json()["id"] == job["id"]

    # Fixed: Stripe answers again. The operator retries the job.
    with responses.RequestsMock() as api:
        api.get(LOOKUP, json={"id": CUSTOMER_ID, "object": "customer", "email": EMAIL})
        retried = client.post(f"/v1/jobs/failed/{job['id']}/retry", headers=admin)
        assert retried.status_code == 202, retried.get_json()
        work(runtime)
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []
    detail = client.get(f"/v1/events/{item['id']}", headers=admin).get_json()
    assert detail["status"] == "processed" and detail["last_error"] is None
    assert [a["outcome"] for a in detail["attempt_history"]] == ["failed", "failed", "failed", "processed"]
    [change] = detail["changes"]
    assert change["customer"]["email"] == EMAIL and change["project"] == "default"
    assert client.get("/v1/events?status=failed", headers=admin).get_json()["data"] == []


def test_deleting_a_failed_job_leaves_the_event_failed_and_listed(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        api.get(LOOKUP, **STRIPE_DOWN)
        post(client, source_id, load("customer.subscription.updated"))
        drain()
        work(runtime)
    [job] = client.get("/v1/jobs/failed", headers=admin).get_json()["data"]
    assert client.delete(f"/v1/jobs/failed/{job['id']}", headers=admin).status_code == 204
    assert client.get(f"/v1/jobs/failed/{job['id']}", headers=admin).status_code == 404
    assert client.delete(f"/v1/jobs/failed/{job['id']}", headers=admin).status_code == 404
    [item] = client.get("/v1/events?status=failed", headers=admin).get_json()["data"]
    assert item["id"] == job["event_id"]


def test_retry_all_requeues_every_failed_job(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    source_id = create_source(client, admin, api_key=API_KEY)
    bodies = [load("customer.subscription.updated") for _ in range(3)]
    for index, body in enumerate(bodies):
        body["id"] = f"evt_fail_{index}"
    with responses.RequestsMock() as api:
        for _ in range(6):
            api.get(LOOKUP, **STRIPE_DOWN)
        for body in bodies:
            post(client, source_id, body)
        drain()
        work(runtime)
    with statements_sent(runtime) as sent:
        assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 3
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.get(LOOKUP, json={"id": CUSTOMER_ID, "object": "customer", "email": EMAIL})
        with statements_sent(runtime) as retried:
            answer = client.post("/v1/jobs/failed/retry", headers=admin)
        assert answer.status_code == 202 and answer.get_json()["requeued"] == 3
        work(runtime)
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []
    # The jobs' events are found by id: beside the account's condition, SQLite read every event of
    # the account to find them.
    assert sqlite_walks(runtime, sent + retried, "events") == []
    statuses = {e["status"] for e in client.get("/v1/events", headers=admin).get_json()["data"]}
    assert statuses == {"processed"}


def test_replaying_a_dead_letter_event_clears_its_failed_job(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        api.get(LOOKUP, **STRIPE_DOWN)
        post(client, source_id, load("customer.subscription.updated"))
        drain()
        work(runtime)
    [job] = client.get("/v1/jobs/failed", headers=admin).get_json()["data"]
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        dry = client.post(f"/v1/events/{job['event_id']}/replay?dry_run=true", headers=admin).get_json()
        assert dry["status"] == "failed" and "Stripe is having a bad day" in dry["error"]
    assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 1
    with responses.RequestsMock() as api:
        api.get(LOOKUP, json={"id": CUSTOMER_ID, "object": "customer", "email": EMAIL})
        replayed = client.post(f"/v1/events/{job['event_id']}/replay", headers=admin).get_json()
    assert (replayed["status_before"], replayed["status"]) == ("failed", "processed")
    assert [d["after"] for d in replayed["diff"] if d["field"] == "projects.default.status"] == ["paid"]
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []
