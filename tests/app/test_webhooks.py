"""`POST /webhooks/<source id>` beyond any one connector: handshakes, batches in one transaction,
disabled connectors, and the database or Redis being down."""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.helpers import outage_redis
from tributary.app import create_app
from tributary.connectors.base import (
    Challenge,
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import ConnectorRegistry, registry, use_registry
from tributary.connectors.testkit import registered
from tributary.models import Database, Event
from tributary.runtime.process import Runtime

TOKEN = "batch-token-0123456789"


class BatchConnector(Connector):
    """A shared-secret connector whose deliveries carry several events, with an Okta-style GET."""

    name = "batch-test"
    stored_headers = ("content-type", "x-batch-origin")

    def challenge(self, request: InboundRequest, source: SourceConfig) -> Challenge | None:
        value = request.headers.get("x-verification-challenge")
        if request.method == "GET" and value:
            return Challenge(200, {"verification": value})
        return None

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        offered = request.headers.get("x-batch-token", "")
        if not any(hmac.compare_digest(offered, secret) for secret in source.secrets):
            raise VerificationFailed("bad token")

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        try:
            events = json.loads(request.body)["events"]
            return [
                Envelope(e["id"], e["type"], datetime.fromisoformat(e["at"]), e, email=e.get("email"))
                for e in events
            ]
        except (ValueError, KeyError, TypeError):
            raise MalformedPayload("expected {events: [{id, type, at}]}") from None

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        if envelope.type != "seen":
            raise EventIgnored(f"type {envelope.type} is not tracked")
        return [
            CustomerChange(occurred_at=envelope.occurred_at, email=envelope.payload["email"], activity=True)
        ]


@pytest.fixture
def batch() -> Iterator[Connector]:
    with registered(BatchConnector) as connector:
        yield connector


@pytest.fixture
def source_id(client: FlaskClient, admin: dict[str, str], batch: Connector) -> str:
    response = client.post("/v1/sources", json={"connector": "batch-test", "secrets": [TOKEN]}, headers=admin)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _body(*events: tuple[str, str]) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "id": event_id,
                    "type": kind,
                    "at": "2026-01-01T00:00:00+00:00",
                    "email": f"{event_id}@example.com",
                }
                for event_id, kind in events
            ]
        }
    ).encode()


def _post(client: FlaskClient, source_id: str, body: bytes, token: str = TOKEN, **headers: str) -> Any:
    return client.post(f"/webhooks/{source_id}", data=body, headers={"X-Batch-Token": token, **headers})


def _stored(runtime: Runtime) -> list[Event]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Event).order_by(Event.provider_event_id)))


def test_a_batch_is_stored_whole_with_duplicates_counted(
    client: FlaskClient, source_id: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    first = _post(client, source_id, _body(("a", "seen"), ("b", "seen")), **{"X-Batch-Origin": "eu-1"})
    assert first.get_json() == {"received": 2, "duplicates": 0}
    again = _post(client, source_id, _body(("b", "seen"), ("c", "other"), ("c", "other")))
    assert again.get_json() == {"received": 1, "duplicates": 2}
    stored = _stored(runtime)
    assert [e.provider_event_id for e in stored] == ["a", "b", "c"]
    assert [e.dedup_key for e in stored] == [f"{source_id}:a", f"{source_id}:b", f"{source_id}:c"]
    assert stored[0].headers == {"x-batch-origin": "eu-1"}  # only the connector's stored_headers
    assert stored[0].email == "a@example.com" and stored[0].payload["id"] == "a"
    drain()
    assert [e.status for e in _stored(runtime)] == ["processed", "processed", "ignored"]
    assert _stored(runtime)[2].last_error == "type other is not tracked"


def test_one_bad_event_refuses_the_whole_delivery(
    client: FlaskClient, source_id: str, runtime: Runtime
) -> None:
    body = json.loads(_body(("a", "seen")))
    body["events"].append({"id": "x" * 256, "type": "seen", "at": "2026-01-01T00:00:00+00:00"})
    response = _post(client, source_id, json.dumps(body).encode())
    assert response.status_code == 400 and "event ids are limited" in response.get_json()["error"]["message"]
    assert _stored(runtime) == []


def test_handshake_is_answered_without_storing(client: FlaskClient, source_id: str, runtime: Runtime) -> None:
    response = client.get(f"/webhooks/{source_id}", headers={"X-Verification-Challenge": "abc123"})
    assert (response.status_code, response.get_json()) == (200, {"verification": "abc123"})
    plain = client.get(f"/webhooks/{source_id}")
    assert plain.status_code == 405 and plain.headers["Allow"] == "POST"
    assert client.get("/webhooks/src_unknownunknownunknown00").status_code == 404
    assert _stored(runtime) == []


def test_verification_failure_touches_nothing(client: FlaskClient, source_id: str, runtime: Runtime) -> None:
    response = _post(client, source_id, _body(("a", "seen")), token="wrong")
    assert response.status_code == 400
    assert response.get_json()["error"] == {"code": "invalid_signature", "message": "bad token"}
    assert _stored(runtime) == []


def test_no_api_key_is_needed_and_one_is_not_accepted_instead_of_the_secret(
    client: FlaskClient, source_id: str, admin: dict[str, str]
) -> None:
    response = client.post(f"/webhooks/{source_id}", data=_body(("a", "seen")), headers=admin)
    assert response.status_code == 400


def test_a_disabled_connector_asks_the_provider_to_retry(
    app: Any, client: FlaskClient, source_id: str, runtime: Runtime
) -> None:
    with use_registry(ConnectorRegistry()):
        response = _post(client, source_id, _body(("a", "seen")))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "connector_unavailable"
    assert response.headers["Retry-After"] == "60"
    assert _stored(runtime) == []


def test_events_of_a_connector_removed_later_fail_with_the_reason(
    client: FlaskClient, source_id: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    _post(client, source_id, _body(("a", "seen")))
    registry().unregister("batch-test")
    drain()
    [event] = _stored(runtime)
    assert event.status == "failed" and "no connector named 'batch-test' is installed" in (
        event.last_error or ""
    )


def test_database_down_is_a_503_and_redis_down_still_stores(
    client: FlaskClient, source_id: str, runtime: Runtime
) -> None:
    # Redis unreachable: the event is committed and acknowledged; the sweeper will schedule it.
    no_redis = Runtime(runtime.settings, db=runtime.db, redis=outage_redis(socket_timeout=1))
    response = (
        create_app({"TESTING": True}, runtime=no_redis)
        .test_client()
        .post(f"/webhooks/{source_id}", data=_body(("a", "seen")), headers={"X-Batch-Token": TOKEN})
    )
    assert response.get_json() == {"received": 1, "duplicates": 0}
    assert [e.status for e in _stored(runtime)] == ["pending"]

    # Database unreachable after the source was read (it is cached): the insert fails, 503.
    settings = dataclasses.replace(runtime.settings, key_cache_seconds=60.0)
    flaky = Runtime(settings, db=runtime.db, redis=runtime.redis)
    flaky_client = create_app({"TESTING": True}, runtime=flaky).test_client()
    assert _post(flaky_client, source_id, _body(("b", "seen"))).status_code == 200
    flaky.db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    down = _post(flaky_client, source_id, _body(("c", "seen")))
    assert down.status_code == 503 and down.get_json()["error"]["code"] == "database_unavailable"
    # And with nothing cached the source lookup itself is what fails.
    cold = create_app({"TESTING": True}, runtime=Runtime(runtime.settings, db=flaky.db, redis=runtime.redis))
    assert _post(cold.test_client(), source_id, _body(("d", "seen"))).status_code == 503
    assert [e.provider_event_id for e in _stored(runtime)] == ["a", "b"]


def test_event_times_are_stored_in_utc(client: FlaskClient, source_id: str, runtime: Runtime) -> None:
    body = json.dumps({"events": [{"id": "tz", "type": "seen", "at": "2026-01-01T02:00:00+02:00"}]}).encode()
    assert _post(client, source_id, body).status_code == 200
    [event] = _stored(runtime)
    assert event.occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
