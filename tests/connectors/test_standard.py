"""`standard`: identify/ping from a custom app over Standard Webhooks. The contract suite, the
same validation as the API, and the same effect as the API."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.connectors.provider_fixtures import (
    dumps,
    envelopes,
    fixture,
    ignored_reason,
    make_source,
    normalize,
)
from tests.helpers import customer, identify
from tributary.connectors.base import Headers, InboundRequest, MalformedPayload
from tributary.connectors.changes import CustomerChange
from tributary.connectors.testkit import (
    ConnectorContract,
    WebhookCase,
    new_standard_secret,
    standard_webhook_headers,
)
from tributary.models import base
from tributary.runtime.process import Runtime

SECRET = new_standard_secret()


class StandardCase(WebhookCase):
    connector = "standard"
    secret = SECRET
    other_secret = new_standard_secret()

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("standard/identify.json")
        payload["data"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        return dumps(fixture("standard/unknown.json"))

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return standard_webhook_headers(body, secret, msg_id=event_id, timestamp=timestamp)


class TestStandardContract(ConnectorContract):
    case = StandardCase()


def signed(payload: Any, msg_id: str = "msg_1") -> InboundRequest:
    body = dumps(payload)
    return InboundRequest(body, Headers(standard_webhook_headers(body, SECRET, msg_id=msg_id)))


def test_identify_carries_every_identify_field() -> None:
    [envelope] = envelopes("standard", signed(fixture("standard/identify.json")))
    assert (envelope.event_id, envelope.type, envelope.email) == ("msg_1", "identify", "hedy@example.com")
    [change] = normalize("standard", envelope)
    assert change == CustomerChange(
        occurred_at=envelope.occurred_at,
        email="hedy@example.com",
        name="Hedy Lamarr",
        status="trial",
        params={"plan": "team", "seats": 5},
        params_once={"signup_source": "webinar"},
        params_unset=("coupon",),
        activity=True,
    )


def test_ping_is_activity_only() -> None:
    [envelope] = envelopes("standard", signed(fixture("standard/ping.json")))
    [change] = normalize("standard", envelope)
    assert change == CustomerChange(occurred_at=envelope.occurred_at, email="hedy@example.com", activity=True)


def test_other_types_are_stored_and_ignored() -> None:
    [envelope] = envelopes("standard", signed(fixture("standard/unknown.json")))
    assert "invoice.paid" in ignored_reason("standard", envelope)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["data"].update(email="not-an-address"), "data.email"),
        (lambda p: p["data"].update(params={"plan": None}), "null"),
        (lambda p: p["data"].update(status="Not A Slug"), "data.status"),
        (lambda p: p["data"].update(paramz={}), "paramz"),
        (lambda p: p["data"].update(project="other"), "project"),
        (lambda p: p["data"].update(timestamp="2024-01-01T00:00:00Z"), "timestamp"),
        (lambda p: p.update(timestamp="last tuesday"), "timestamp"),
        (lambda p: p.update(timestamp="2999-01-01T00:00:00Z"), "future"),
        (lambda p: p.pop("data"), "data"),
    ],
)
def test_invalid_payloads_are_refused_like_the_api_would(edit: Any, message: str) -> None:
    payload = fixture("standard/identify.json")
    edit(payload)
    with pytest.raises(MalformedPayload, match=message):
        envelopes("standard", signed(payload))


def test_a_webhook_identify_has_the_same_effect_as_the_api(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    source_id = make_source(runtime, "standard", [SECRET])
    payload = fixture("standard/identify.json")
    request = signed(payload, msg_id="msg_identify")
    assert (
        client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers)).status_code
        == 200
    )
    api = {**payload["data"], "email": "hedy.api@example.com", "timestamp": payload["timestamp"]}
    identify(client, admin_key, **api)
    ping = signed(fixture("standard/ping.json"), msg_id="msg_ping")
    assert (
        client.post(f"/webhooks/{source_id}", data=ping.body, headers=dict(ping.headers)).status_code == 200
    )
    drain()
    by_webhook = customer(client, admin_key, "hedy@example.com")
    by_api = customer(client, admin_key, "hedy.api@example.com")
    webhook_project, api_project = by_webhook["projects"]["default"], by_api["projects"]["default"]
    for key in ("status", "params", "first_seen_at"):
        assert webhook_project[key] == api_project[key]
    assert api_project["last_activity_at"] == "2024-06-01T09:00:00.000000Z"  # identify is activity too
    assert by_webhook["name"] == by_api["name"] == "Hedy Lamarr"
    assert by_webhook["last_activity_at"] == "2024-06-02T09:00:00.000000Z"  # the ping
    # Redelivered by the sender's retry: acknowledged, not applied again.
    again = client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers))
    assert again.get_json() == {"received": 0, "duplicates": 1}
    assert json.loads(request.body)["type"] == "identify"


def send_seats(client: FlaskClient, source_id: str, seats: int, timestamp: str | None) -> None:
    """The fixture's identify webhook with `seats` (and `timestamp`, when given), delivered."""
    payload = fixture("standard/identify.json")
    if timestamp is not None:
        payload["timestamp"] = timestamp
    payload["data"]["params"] = {"seats": seats}
    request = signed(payload, msg_id=f"msg_seats_{seats}_{timestamp}")
    answer = client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers))
    assert answer.status_code == 200


def test_changes_with_one_event_time_end_as_they_arrived(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten changes of one field with the same event time tie, and a tie goes to the one applied
    last. The worker applies events in id order and a process's ids only grow, even within one
    millisecond (the ids' clock is held still here), so the last to arrive wins."""
    now = time.time()
    monkeypatch.setattr(base, "time", SimpleNamespace(time=lambda: now))
    source_id = make_source(runtime, "standard", [SECRET])
    for seats in range(1, 11):
        send_seats(client, source_id, seats, None)  # the fixture's `timestamp` in every one
    drain()
    project = customer(client, admin_key, "hedy@example.com")["projects"]["default"]
    assert project["params"]["seats"] == 10


def test_a_bodys_fractions_of_a_second_order_two_changes_within_one(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    """The signed header's time is whole seconds: two changes of one field inside a second would tie
    (the one applied last wins). A body `timestamp` with fractions orders them, whatever the order
    of their delivery."""
    source_id = make_source(runtime, "standard", [SECRET])
    for stamp, seats in [("09:00:00.900", 9), ("09:00:00.100", 1)]:
        send_seats(client, source_id, seats, f"2024-06-01T{stamp}Z")
    drain()
    project = customer(client, admin_key, "hedy@example.com")["projects"]["default"]
    assert project["params"]["seats"] == 9
    assert project["last_activity_at"] == "2024-06-01T09:00:00.900000Z"
