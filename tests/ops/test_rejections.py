"""Refused deliveries are counted per source and reason, the last 100 kept without their body."""

from __future__ import annotations

import hashlib
import json
import time

from flask import Flask
from flask.testing import FlaskClient

import tributary.app.cli.sources  # noqa: F401 - registers the command group, as main() does
from tests.connectors.stripe_helpers import OTHER_SECRET, SECRET, create_source, load, post
from tests.helpers import make_key
from tributary.app.cli import cli
from tributary.app.rejections import KEEP
from tributary.connectors.testkit import stripe_headers
from tributary.runtime.process import Runtime

GOOD = json.dumps(load("customer.created")).encode()


def test_refusals_are_counted_per_reason_and_the_recent_ones_kept_without_body(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    forged = client.post(
        f"/webhooks/{source_id}",
        data=GOOD,
        headers={"User-Agent": "Forger/1.0", **stripe_headers(GOOD, OTHER_SECRET)},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert forged.status_code == 400
    stale = stripe_headers(GOOD, SECRET, timestamp=int(time.time()) - 400)
    assert client.post(f"/webhooks/{source_id}", data=GOOD, headers=stale).status_code == 400
    assert (
        client.post(f"/webhooks/{source_id}", data=b"[]", headers=stripe_headers(b"[]", SECRET)).status_code
        == 400
    )
    big = b"x" * (1024 * 1024 + 1)
    assert (
        client.post(f"/webhooks/{source_id}", data=big, headers=stripe_headers(big, SECRET)).status_code
        == 413
    )
    assert post(client, source_id, load("customer.created")).status_code == 200  # accepted: not counted
    assert post(client, "src_" + "x" * 24, load("customer.created")).status_code == 404  # no such source

    answer = client.get(f"/v1/sources/{source_id}/rejections", headers=admin)
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()
    assert data["counts"] == {
        "invalid_signature": 1,
        "malformed_body": 1,
        "payload_too_large": 1,
        "timestamp_outside_tolerance": 1,
    }
    newest, *_, oldest = data["recent"]
    assert newest["reason"] == "payload_too_large" and newest["body_bytes"] == len(big)
    assert oldest == {
        "at": oldest["at"],
        "reason": "invalid_signature",
        "status": 400,
        "remote_addr": "203.0.113.9",
        "user_agent": "Forger/1.0",
        "body_bytes": len(GOOD),
        "body_sha256": hashlib.sha256(GOOD).hexdigest(),
    }
    assert "Ada" not in json.dumps(data)  # nothing of the body itself
    # The unknown source's id exactly: a glob such as `src_x*` also matched real ids starting so.
    assert runtime.redis.keys(f"tributary:rejections:*{'src_' + 'x' * 24}*") == []


def test_the_history_is_bounded(client: FlaskClient, admin: dict[str, str]) -> None:
    source_id = create_source(client, admin)
    for _ in range(KEEP + 20):
        client.post(f"/webhooks/{source_id}", data=GOOD, headers={"Stripe-Signature": "nope"})
    data = client.get(f"/v1/sources/{source_id}/rejections", headers=admin).get_json()
    assert data["counts"] == {"invalid_signature": KEEP + 20}
    assert len(data["recent"]) == KEEP


def test_rejections_are_admin_only_and_project_bound(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    client.post("/v1/projects", json={"slug": "other", "name": "Other"}, headers=admin)
    for scopes, project, status in (
        (["read"], None, 403),
        (["ingest"], None, 403),
        (["admin"], "other", 404),
        (["admin"], "default", 200),
    ):
        key = make_key(runtime, scopes, project)
        answer = client.get(f"/v1/sources/{source_id}/rejections", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == status, (scopes, project)
    assert client.get(f"/v1/sources/{source_id}/rejections").status_code == 401


def test_sources_show_prints_the_refusals(app: Flask, client: FlaskClient, admin: dict[str, str]) -> None:
    source_id = create_source(client, admin)
    client.post(f"/webhooks/{source_id}", data=GOOD, headers={"Stripe-Signature": "nope"})
    result = app.test_cli_runner().invoke(cli, ["sources", "show", source_id])
    assert result.exit_code == 0, result.output
    assert "refused deliveries: invalid_signature 1; most recent:" in result.output
    assert f"{len(GOOD)} bytes" in result.output
    data = json.loads(app.test_cli_runner().invoke(cli, ["sources", "show", source_id, "--json"]).output)
    assert data["rejections"]["counts"] == {"invalid_signature": 1}
