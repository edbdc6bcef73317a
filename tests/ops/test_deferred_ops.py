"""A `deferred` event (waiting for a person, workers/deferred.py) through the operator's surface: the
events filter (API, OpenAPI enum and CLI), the awaited identity in the detail, `/metrics` by source
and connector, and retention, which never purges it."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.connectors.provider_fixtures import dumps, fixture, make_source
from tests.helpers import identify
from tests.ops.test_cli import _json, _run
from tests.ops.test_metrics import scrape, value
from tests.ops.test_retention import _age_all
from tributary.connectors.testkit import svix_headers
from tributary.models import Event
from tributary.runtime.process import Runtime
from tributary.workers.retention import purge

SECRET = "whsec_" + "QkVJTkcgQUxJVkUgSVMgQSBMT05HIFNUT1JZ"
USER = "user_2pX9dLrV7kQm3TzW8bN4cHfYs1A"


def _deferred(client: FlaskClient, runtime: Runtime, drain: Callable[[], None]) -> tuple[str, str]:
    """A Clerk session of a user nothing has named yet: deferred. Returns (source id, event id)."""
    source_id = make_source(runtime, "clerk", [SECRET])
    body = dumps(fixture("clerk/session.created.json"))
    headers = {**svix_headers(body, SECRET, msg_id="msg_session"), "Content-Type": "application/json"}
    assert client.post(f"/webhooks/{source_id}", data=body, headers=headers).status_code == 200
    drain()
    with runtime.db.session() as session:
        [event] = session.query(Event).filter(Event.provider_event_id == "msg_session").all()
        assert event.status == "deferred"
        return source_id, event.id


def test_deferred_events_are_listed_shown_and_counted(
    app: Flask, client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    identify(client, token, email="ada@example.com")
    source_id, event_id = _deferred(client, runtime, drain)

    listed = client.get("/v1/events?status=deferred", headers=admin)
    assert listed.status_code == 200, listed.get_json()
    [item] = listed.get_json()["data"]
    assert (item["id"], item["status"], item["awaiting"]) == (event_id, "deferred", f"clerk:{USER}")
    detail = client.get(f"/v1/events/{event_id}", headers=admin).get_json()
    assert detail["status"] == "deferred" and detail["awaiting"] == f"clerk:{USER}"
    assert f"no customer is known for clerk id '{USER}' yet" in detail["last_error"]
    processed = client.get("/v1/events?status=processed", headers=admin).get_json()["data"]
    assert [e["awaiting"] for e in processed] == [None]

    spec = client.get("/openapi.json").get_json()
    [status] = [p for p in spec["paths"]["/v1/events"]["get"]["parameters"] if p["name"] == "status"]
    assert "deferred" in status["schema"]["enum"]

    data = scrape(client)
    assert value(data, "tributary_events", source=source_id, connector="clerk", status="deferred") == 1
    assert value(data, "tributary_events", source="", connector="identify", status="processed") == 1
    assert value(data, "tributary_pending_events") == 0

    assert [e["id"] for e in _json(app, "events", "list", "--status", "deferred")["data"]] == [event_id]
    human = _run(app, "events", "list", "--status", "deferred")
    assert human.exit_code == 0 and event_id in human.output and "deferred" in human.output
    shown = _run(app, "events", "show", event_id)
    assert shown.exit_code == 0 and f"clerk:{USER}" in shown.output


def test_retention_never_purges_a_deferred_event(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    processed = identify(client, token, email="ada@example.com")["event_id"]
    _, deferred = _deferred(client, runtime, drain)
    _age_all(runtime, 400)
    assert purge(runtime) == 1
    with runtime.db.session() as session:
        kept, gone = session.get(Event, deferred), session.get(Event, processed)
        assert kept is not None and gone is not None
        assert kept.status == "deferred" and kept.purged_at is None and kept.body and kept.payload
        assert gone.purged_at is not None
