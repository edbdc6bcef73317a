"""`tributary connectors list|test`."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.connectors.fake_dist import fake_distribution
from tributary.app.cli import cli
from tributary.connectors.registry import build_registry, use_registry
from tributary.connectors.testkit import stripe_signature
from tributary.models import Customer, Event
from tributary.runtime.process import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
SECRET = "whsec_cli_test_0123456789"


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    importlib.import_module("tributary.app.cli.connectors")
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.output


def _nothing_written(runtime: Runtime) -> bool:
    with runtime.db.session() as session:
        return not session.scalar(select(func.count()).select_from(Event)) and not session.scalar(
            select(func.count()).select_from(Customer)
        )


def _fresh(event_type: str) -> bytes:
    """A fixture as the raw bytes Stripe would send."""
    return (FIXTURES / f"{event_type}.json").read_bytes()


def test_list_shows_origin_distribution_and_version(app: Flask, tmp_path: Path) -> None:
    code, out = _invoke(app, "connectors", "list", "--json")
    assert code == 0
    stripe = next(r for r in json.loads(out) if r["name"] == "stripe")
    assert stripe["origin"] == "builtin" and stripe["distribution"] == "tributary" and stripe["version"]
    plugin = """
from tributary.connectors.base import Connector

class Plugin(Connector):
    name = "acme"
    title = "Acme"

    def verify(self, request, source): ...

    def envelopes(self, request, source):
        return []

    def normalize(self, envelope, context):
        return []
"""
    with (
        fake_distribution(
            tmp_path,
            "tributary-acme",
            "2.0.1",
            entry_points={"acme": "cli_acme:Plugin"},
            modules={"cli_acme": plugin},
        ),
        use_registry(build_registry(modules=[], disabled=["okta"])),
    ):
        code, out = _invoke(app, "connectors", "list")
    assert code == 0
    acme_line = next(line for line in out.splitlines() if line.startswith("acme"))
    assert acme_line.split()[:4] == ["acme", "entry_point", "tributary-acme", "2.0.1"]
    assert not any(line.startswith("okta") for line in out.splitlines())
    assert "disabled (TRIBUTARY_DISABLED_CONNECTORS): okta" in out


def test_show_prints_each_event_type_with_its_handler_docstring(app: Flask) -> None:
    from tributary.connectors.auth0 import HANDLERS as AUTH0_HANDLERS
    from tributary.connectors.handlers import handler_doc
    from tributary.connectors.stripe import HANDLERS as STRIPE_HANDLERS

    code, out = _invoke(app, "connectors", "show", "stripe")
    assert code == 0, out
    assert out.startswith("stripe: Stripe customers")
    for kind, handler in STRIPE_HANDLERS.items():
        assert f"  {kind}: {handler_doc(handler)}\n" in out, kind
    code, out = _invoke(app, "connectors", "show", "auth0", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["origin"] == "builtin" and shown["secret_options"] == []
    assert shown["event_types"] == {kind: handler_doc(h) for kind, h in AUTH0_HANDLERS.items()}
    assert shown["event_types"]["sdu"].endswith("the Auth0 user id is removed from the customer, who is kept")
    code, out = _invoke(app, "connectors", "show", "nope")
    assert code == 1 and "no connector named 'nope'" in out


def test_list_with_events_prints_every_connectors_table(app: Flask) -> None:
    from tributary.connectors.registry import registry

    code, out = _invoke(app, "connectors", "list", "--events")
    assert code == 0, out
    for registration in registry():
        for kind, effect in registration.connector.event_types.items():
            assert f"    {kind}: {effect}\n" in out + "\n", (registration.name, kind)
    code, out = _invoke(app, "connectors", "list", "--events", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["standard"]["event_types"] == {
        "identify": "as POST /v1/identify: email, name, status, params, params_once, params_unset; activity",
        "ping": "as POST /v1/ping: activity",
    }
    code, out = _invoke(app, "connectors", "list", "--json")
    assert "event_types" not in json.loads(out)[0]


def test_test_verifies_and_prints_changes_without_writing(
    app: Flask, runtime: Runtime, tmp_path: Path
) -> None:
    raw = _fresh("customer.subscription.updated")
    delivery = tmp_path / "delivery.json"
    delivery.write_text(
        json.dumps({"headers": {"Stripe-Signature": stripe_signature(raw, SECRET)}, "body": raw.decode()})
    )
    code, out = _invoke(app, "connectors", "test", "stripe", str(delivery), "--secret", SECRET, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["signature"] == "valid"
    [envelope] = report["envelopes"]
    assert envelope["type"] == "customer.subscription.updated"
    # No database: the identity is "unknown", so the change names only the Stripe customer id.
    [change] = envelope["changes"]
    assert change["identity"] == ["stripe", "cus_TQ8cZ3XbWm2kLp"] and "email" not in change
    assert change["status"] == "paid" and change["params"]["mrr"] == 15700
    assert _nothing_written(runtime)

    code, out = _invoke(app, "connectors", "test", "stripe", str(delivery), "--secret", SECRET)
    assert code == 0 and "signature: valid" in out and '"status": "paid"' in out


def test_test_takes_a_raw_body_with_header_options(app: Flask, tmp_path: Path) -> None:
    raw = _fresh("customer.created")
    body = tmp_path / "body.json"
    body.write_bytes(raw)
    header = f"Stripe-Signature={stripe_signature(raw, SECRET)}"
    code, out = _invoke(
        app, "connectors", "test", "stripe", str(body), "--header", header, "--secret", SECRET
    )
    assert code == 0, out
    assert "signature: valid" in out and '"email": "ada@example.com"' in out
    colon = f"Stripe-Signature: {stripe_signature(raw, SECRET)}"
    assert (
        _invoke(app, "connectors", "test", "stripe", str(body), "--header", colon, "--secret", SECRET)[0] == 0
    )
    code, out = _invoke(app, "connectors", "test", "stripe", str(body))
    assert code == 0 and "signature: not checked (no --secret)" in out


def test_test_reports_failures_with_exit_status_1(app: Flask, tmp_path: Path) -> None:
    raw = _fresh("customer.created")
    body = tmp_path / "body.json"
    body.write_bytes(raw)
    stale = f"Stripe-Signature={stripe_signature(raw, SECRET, int(time.time()) - 3600)}"
    code, out = _invoke(app, "connectors", "test", "stripe", str(body), "--header", stale, "--secret", SECRET)
    assert code == 1 and "signature: FAILED" in out and "tolerance" in out
    assert '"email": "ada@example.com"' in out  # still normalized, to see what it would do

    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not json")
    code, out = _invoke(app, "connectors", "test", "stripe", str(garbage))
    assert code == 1 and "malformed body" in out

    code, out = _invoke(app, "connectors", "test", "nope", str(garbage))
    assert code == 1 and "no connector named 'nope'" in out
    code, out = _invoke(app, "connectors", "test", "stripe", str(body), "--option", "livemode=perhaps")
    assert code == 1 and "invalid options: livemode must be true or false" in out
    code, out = _invoke(app, "connectors", "test", "stripe", str(body), "--header", "nonsense")
    assert code == 2 and "expected NAME=VALUE" in out


def test_test_shows_ignored_events(app: Flask, tmp_path: Path) -> None:
    payload = json.loads(_fresh("customer.created"))
    payload["type"] = "charge.captured"
    body = tmp_path / "body.json"
    body.write_text(json.dumps(payload))
    code, out = _invoke(app, "connectors", "test", "stripe", str(body))
    assert code == 0 and "ignored: stripe event type 'charge.captured' is not tracked" in out
    code, out = _invoke(app, "connectors", "test", "stripe", str(body), "--option", "livemode=true")
    assert code == 0


@pytest.mark.parametrize(
    "document", [{"body": {"id": "evt_1"}, "headers": []}, {"body": "x", "headers": {"a": 1}}]
)
def test_test_refuses_bad_header_objects(app: Flask, tmp_path: Path, document: dict[str, object]) -> None:
    path = tmp_path / "delivery.json"
    path.write_text(json.dumps(document))
    code, out = _invoke(app, "connectors", "test", "stripe", str(path))
    assert code == 2 and "`headers` must be an object of strings" in out
