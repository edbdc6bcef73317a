"""`tributary reconcile stripe`: planted drift is found, shown, and fixed through the pipeline."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.helpers import customer
from tests.imports.fake_apis import FakeStripe
from tests.imports.test_stripe_import import NO_WAIT, _source, _start, _world
from tributary.app.cli import cli
from tributary.models import CustomerProject, Identity
from tributary.runtime.process import Runtime
from tributary.workers.imports import execute, reconcile_if_due


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    importlib.import_module("tributary.app.cli.imports")
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def _plant(runtime: Runtime, stripe_id: str, **changes: object) -> None:
    """Drift planted behind the pipeline's back, as a lost webhook would leave it."""
    with runtime.db.session() as session, session.begin():
        customer_id = session.scalar(select(Identity.customer_id).where(Identity.external_id == stripe_id))
        row = session.scalar(select(CustomerProject).where(CustomerProject.customer_id == customer_id))
        assert row is not None
        if "status" in changes:
            row.status = str(changes["status"])
        if "mrr" in changes:
            row.params = {**row.params, "mrr": changes["mrr"]}


def test_reconcile_finds_and_fixes_planted_drift(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    fake = _world(8)
    with responses.RequestsMock() as api:
        fake.register(api)
        execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)

    def reconcile(*extra: str) -> tuple[int, str]:
        fake.calls = []
        with responses.RequestsMock() as api:
            fake.register(api)
            api.assert_all_requests_are_fired = False  # reconcile reads subscriptions only
            return _invoke(app, "reconcile", "stripe", "--source", source_id, *extra)

    code, out = reconcile()
    assert code == 0 and "no drift" in out, out

    token = admin["Authorization"].split()[1]
    mrr = customer(client, token, "person2@example.com")["projects"]["default"]["params"]["mrr"]
    assert mrr > 1
    _plant(runtime, "cus_Import00001", status="churned")  # Stripe: active -> paid
    _plant(runtime, "cus_Import00002", mrr=1)
    code, out = reconcile("--json")
    assert code == 0, out
    drift = json.loads(out)["drift"]
    assert {(d["stripe_customer"], d["field"], d["tributary"], d["stripe"]) for d in drift} == {
        ("cus_Import00001", "status", "churned", "paid"),
        ("cus_Import00002", "mrr", 1, mrr),
    }
    code, out = reconcile()
    assert "cus_Import00001" in out and "churned" in out and "2 difference(s)" in out

    code, out = reconcile("--fix")
    assert code == 0 and "fixed: 2 record(s) updated" in out, out
    assert customer(client, token, "person1@example.com")["projects"]["default"]["status"] == "paid"
    code, out = reconcile()
    assert "no drift" in out, out


def test_reconcile_reports_stripe_customers_tributary_does_not_know(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, stripe_api: None
) -> None:
    source_id = _source(client, admin)
    world = _world(3)
    fake = FakeStripe([], world.subscriptions)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake.register(api)
        code, out = _invoke(app, "reconcile", "stripe", "--source", source_id, "--json", "--fix")
    assert code == 0, out
    result = json.loads(out)
    assert {d["field"] for d in result["drift"]} == {"missing"}
    assert result["fixed"]["counts"]["created"] == 3


def test_the_periodic_reconcile_fixes_drift_in_a_worker(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
) -> None:
    source_id = _source(client, admin)
    fake = _world(4)
    with responses.RequestsMock() as api:
        fake.register(api)
        execute(runtime, _start(runtime, source_id), backoff=NO_WAIT)
    _plant(runtime, "cus_Import00001", status="churned")
    object.__setattr__(runtime.settings, "reconcile_interval_seconds", 3600)
    try:
        assert reconcile_if_due(runtime)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
            fake.register(api)
            drain()
    finally:
        object.__setattr__(runtime.settings, "reconcile_interval_seconds", 0)
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "person1@example.com")["projects"]["default"]["status"] == "paid"
