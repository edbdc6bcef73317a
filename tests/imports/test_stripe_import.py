"""`tributary import stripe`: a multi-page Stripe API with 429s and 500s, resumed after an
interruption, ending in the records the webhooks for the same history give."""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.connectors.stripe_helpers import API_KEY, SECRET, load, post
from tests.helpers import customer
from tests.imports.fake_apis import FakeStripe, stripe_customer, stripe_subscription
from tributary.app.cli import cli
from tributary.models import Event, ImportCheckpoint
from tributary.runtime.process import Runtime
from tributary.workers.importers.stripe_list import Backoff, ImportFailed
from tributary.workers.imports import execute

NO_WAIT = Backoff(attempts=3, base=0.0, cap=0.0)
T0 = 1767225600
DAY = 86400


def _source(client: FlaskClient, admin: dict[str, str], project: str = "default") -> str:
    if project != "default":
        client.post("/v1/projects", json={"slug": project}, headers=admin)
    response = client.post(
        "/v1/sources",
        json={
            "connector": "stripe",
            "project": project,
            "secrets": [SECRET],
            "options": {"api_key": API_KEY},
        },
        headers=admin,
    )
    assert response.status_code == 201, response.get_json()
    source_id: str = response.get_json()["id"]
    return source_id


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    """Exit code and stdout (the progress bar goes to stderr)."""
    importlib.import_module("tributary.app.cli.imports")
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def _start(runtime: Runtime, source_id: str, kind: str = "stripe", dry_run: bool = False) -> str:
    from tributary.app.accounts import ensure_account
    from tributary.app.import_runs import create_import

    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        return create_import(session, account.id, kind=kind, source_id=source_id, dry_run=dry_run).id


def _subscription_objects() -> dict[str, dict[str, Any]]:
    """The fixture subscription in each state a history can end in."""
    active = load("customer.subscription.updated")["data"]["object"]
    trialing = load("customer.subscription.created")["data"]["object"]
    canceled = load("customer.subscription.deleted")["data"]["object"]
    past_due = copy.deepcopy(active)
    past_due["status"] = "past_due"
    return {"trialing": trialing, "active": active, "past_due": past_due, "canceled": canceled}


def _world(count: int) -> FakeStripe:
    states = _subscription_objects()
    names = list(states)
    customers = [stripe_customer(n, T0 + n * 60) for n in range(count)]
    subscriptions = [
        stripe_subscription(n, states[names[n % len(names)]], customer=customers[n])
        for n in range(count)
        if n % 5 != 4  # every fifth customer has no subscription
    ]
    # Stripe lists newest first.
    return FakeStripe(customers[::-1], subscriptions[::-1])


def test_import_stripe_cli_pages_through_everything_and_summarizes(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    fake = _world(10)
    with responses.RequestsMock() as api:
        fake.register(api)
        code, out = _invoke(app, "import", "stripe", "--source", source_id)
    assert code == 0, out
    assert "created    10" in out and "updated    8" in out and "skipped    0" in out
    assert len(fake.calls_to("customers")) == 4 and len(fake.calls_to("subscriptions")) == 3
    token = admin["Authorization"].split()[1]
    record = customer(client, token, "person1@example.com")
    assert record["name"] == "Person 1"
    assert record["projects"]["default"]["status"] == "paid"
    assert record["identities"] == [{"source": "stripe", "external_id": "cus_Import00001"}]
    assert customer(client, token, "person3@example.com")["projects"]["default"]["status"] == "churned"
    assert "status" not in customer(client, token, "person4@example.com")["projects"]["default"] or (
        customer(client, token, "person4@example.com")["projects"]["default"]["status"] is None
    )
    timeline = client.get(f"/v1/customers/{record['id']}/timeline", headers=admin).get_json()
    assert {entry["event"]["channel"] for entry in timeline["data"]} == {"import"}
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ImportCheckpoint)) == 0

    # Twice: nothing new is stored, nothing changes.
    with responses.RequestsMock() as api:
        fake.register(api)
        code, out = _invoke(app, "import", "stripe", "--source", source_id, "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["counts"]["stored"] == 0 and summary["counts"]["unchanged"] == 18
    assert summary["counts"]["created"] == summary["counts"]["updated"] == 0


def test_dry_run_counts_and_stores_nothing(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    customers = [stripe_customer(n, T0 + n) for n in range(4)]
    customers.append(stripe_customer(9, T0, email=None))
    fake = FakeStripe(customers, [])
    with responses.RequestsMock() as api:
        fake.register(api)
        code, out = _invoke(app, "import", "stripe", "--source", source_id, "--dry-run", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["counts"]["listed"] == 5 and summary["counts"]["stored"] == 4
    assert summary["skipped"] == {"stripe customer … has no email": 1}
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_429_and_500_mid_way_are_retried_from_the_last_object(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    fake = _world(12)
    fake.failures = {1: 429, 2: 500, 6: 429}
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)
    assert tally.counts["created"] == 12 and tally.counts["failed"] == 0
    # The retried page asks again from the last object read.
    assert fake.calls[1] == fake.calls[2] == fake.calls[3]
    assert "starting_after=cus_Import00009" in fake.calls[1]


def test_an_interrupted_import_resumes_from_its_checkpoint(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    fake = _world(12)
    fake.fail_from = 2  # two pages of customers, then Stripe is down for good
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        with pytest.raises(ImportFailed, match="Stripe kept failing after 3 attempts"):
            execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)
    with runtime.db.session() as session:
        [checkpoint] = session.scalars(select(ImportCheckpoint))
        assert (checkpoint.stream, checkpoint.cursor, checkpoint.done) == (
            "customers",
            "cus_Import00006",
            False,
        )
        assert session.scalar(select(func.count()).select_from(Event)) == 6

    fake.fail_from, fake.calls = None, []
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)
    assert "starting_after=cus_Import00006" in fake.calls[0]
    assert tally.counts["listed"] == 6 + 10 and tally.counts["failed"] == 0
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 12 + 10
        assert session.scalar(select(func.count()).select_from(ImportCheckpoint)) == 0
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "person11@example.com")["projects"]["default"]["status"] == "churned"


def test_import_gives_the_records_that_the_webhooks_for_the_same_history_give(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
) -> None:
    """One webhook source (project `hooks`) receives every person's history; an import source
    (project `imports`) reads the API's current objects. Both projects end up the same."""
    hooks = _source(client, admin, "hooks")
    imports = _source(client, admin, "imports")
    history = [
        load("customer.created"),
        load("customer.subscription.created"),
        load("customer.subscription.updated"),
        load("customer.subscription.deleted"),
    ]
    customers, subscriptions, deliveries = [], [], []
    for n, length in enumerate((2, 3, 4, 1, 3)):
        events = json.loads(
            json.dumps(history[:length])
            .replace("cus_TQ8cZ3XbWm2kLp", f"cus_Hist{n:04d}")
            .replace("ada@example.com", f"hist{n}@example.com")
            .replace("Ada@Example.com", f"hist{n}@example.com")
        )
        for index, event in enumerate(events):
            event["id"] = f"evt_hist_{n}_{index}"
        deliveries.append(events)
        customers.append(events[0]["data"]["object"])
        if length > 1:
            subscription = copy.deepcopy(events[-1]["data"]["object"])
            subscription["id"] = f"sub_Hist{n:04d}"
            subscription["customer"] = events[0]["data"]["object"]
            subscriptions.append(subscription)
    # Customers first: a subscription event names only the customer id (its own batch would not
    # see the identity yet, and would wait for its retry).
    for events in deliveries:
        assert post(client, hooks, events[0]).status_code == 200
    drain()
    for events in deliveries:
        for event in events[1:]:
            assert post(client, hooks, event).status_code == 200
    drain()
    with runtime.db.session() as session:
        assert {e.status for e in session.scalars(select(Event))} == {"processed"}
    fake = FakeStripe(customers[::-1], subscriptions[::-1], page_size=2)
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, imports), backoff=NO_WAIT)
    assert tally.counts["failed"] == 0 and tally.counts["listed"] == 9
    token = admin["Authorization"].split()[1]
    for n in range(5):
        record = customer(client, token, f"hist{n}@example.com")
        assert record["projects"]["imports"]["status"] == record["projects"]["hooks"]["status"], n
        assert record["projects"]["imports"]["params"] == record["projects"]["hooks"]["params"], n


def _webhook(status: str, created: int, event_id: str) -> dict[str, Any]:
    event = load("customer.subscription.updated")
    event["id"], event["created"] = event_id, created
    obj = event["data"]["object"]
    obj.update(id="sub_Import00000", customer="cus_Import00000", status=status)
    return event


@pytest.mark.parametrize("webhook_first", [False, True])
def test_a_newer_webhook_wins_over_the_import_in_either_order_and_an_older_one_never_does(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    webhook_first: bool,
) -> None:
    source_id = _source(client, admin)
    person = stripe_customer(0, T0)
    active = _subscription_objects()["active"]
    subscription = stripe_subscription(0, active, customer=person)
    changed_at = max(
        subscription["created"], *(i["current_period_start"] for i in subscription["items"]["data"])
    )
    fake = FakeStripe([person], [subscription])

    def run_import() -> None:
        fake.calls = []
        with responses.RequestsMock() as api:
            fake.register(api)
            execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)

    known = load("customer.created")
    known["id"], known["created"], known["data"]["object"] = "evt_known", T0, person
    assert post(client, source_id, known).status_code == 200
    drain()
    newer = _webhook("past_due", changed_at + 3600, "evt_newer")
    if webhook_first:
        assert post(client, source_id, newer).status_code == 200
        drain()
        run_import()
    else:
        run_import()
        assert post(client, source_id, newer).status_code == 200
        drain()
    # An older webhook arriving after the import does not undo what the import read.
    assert post(client, source_id, _webhook("trialing", changed_at - 3600, "evt_older")).status_code == 200
    drain()
    with runtime.db.session() as session:
        assert {e.status for e in session.scalars(select(Event))} == {"processed"}
    token = admin["Authorization"].split()[1]
    record = customer(client, token, "person0@example.com")["projects"]["default"]
    assert record["status"] == "past_due"
    assert record["params"]["subscription_status"] == "past_due"


def test_an_older_webhook_arriving_after_the_import_does_not_undo_it(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], stripe_api: None
) -> None:
    source_id = _source(client, admin)
    person = stripe_customer(0, T0)
    subscription = stripe_subscription(0, _subscription_objects()["active"], customer=person)
    renewed = max(i["current_period_start"] for i in subscription["items"]["data"])
    fake = FakeStripe([person], [subscription])
    with responses.RequestsMock() as api:
        fake.register(api)
        execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)
    # Delayed in transit: the trial that ended before the renewal the import already saw.
    assert post(client, source_id, _webhook("trialing", renewed - 3600, "evt_late")).status_code == 200
    drain()
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "person0@example.com")["projects"]["default"]["status"] == "paid"
