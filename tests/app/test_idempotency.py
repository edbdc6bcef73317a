"""`message_id` / `Idempotency-Key`: the same message again is a 202 duplicate; another message
under the same id is a 409 `idempotency_conflict`, and the first one is kept.

"The same message" is the canonical validated message (app/api/ingest.py `message_fingerprint`):
key order, spacing, email case, defaults and the spelling of a UTC offset do not matter; any value
the user sent does, and so does the endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.helpers import auth, customer
from tributary.models import Event
from tributary.runtime.process import Runtime


def _post(client: FlaskClient, key: str, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    response = client.post(path, json=body, headers={**auth(key), **headers})
    return response.status_code, response.get_json()


def _events(runtime: Runtime) -> list[Event]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


SAME_MESSAGE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("email case and spaces", {"email": "a@example.com"}, {"email": " A@Example.COM "}),
    ("defaults spelled out", {"email": "a@example.com"}, {"email": "a@example.com", "params": {}}),
    (
        "key order",
        {"email": "a@example.com", "params": {"x": 1, "y": 2}, "name": "A"},
        {"name": "A", "params": {"y": 2, "x": 1}, "email": "a@example.com"},
    ),
    (
        "offset spelling",
        {"email": "a@example.com", "timestamp": "2026-01-01T00:00:00Z"},
        {"email": "a@example.com", "timestamp": "2026-01-01T01:00:00+01:00"},
    ),
]

OTHER_MESSAGE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("another name", {"email": "a@example.com", "name": "A"}, {"email": "a@example.com", "name": "B"}),
    ("a name added", {"email": "a@example.com"}, {"email": "a@example.com", "name": "B"}),
    ("another email", {"email": "a@example.com"}, {"email": "b@example.com"}),
    (
        "another param",
        {"email": "a@example.com", "params": {"x": 1}},
        {"email": "a@example.com", "params": {"x": 2}},
    ),
    (
        "1 versus 1.0",
        {"email": "a@example.com", "params": {"x": 1}},
        {"email": "a@example.com", "params": {"x": 1.0}},
    ),
    (
        "another time",
        {"email": "a@example.com", "timestamp": "2026-01-01T00:00:00Z"},
        {"email": "a@example.com", "timestamp": "2026-01-01T00:00:01Z"},
    ),
    (
        "a time added",
        {"email": "a@example.com"},
        {"email": "a@example.com", "timestamp": "2026-01-01T00:00:00Z"},
    ),
    (
        "the project named, not implied",
        {"email": "a@example.com"},
        {"email": "a@example.com", "project": "default"},
    ),
]


@pytest.mark.parametrize(("why", "first", "second"), SAME_MESSAGE, ids=[c[0] for c in SAME_MESSAGE])
def test_the_same_message_is_a_duplicate(
    client: FlaskClient, admin_key: str, runtime: Runtime, why: str, first: Any, second: Any
) -> None:
    status, one = _post(client, admin_key, "/v1/identify", {**first, "message_id": "m-1"})
    assert status == 202 and one["duplicate"] is False
    status, two = _post(client, admin_key, "/v1/identify", {**second, "message_id": "m-1"})
    assert (status, two) == (202, {"event_id": one["event_id"], "duplicate": True})
    assert len(_events(runtime)) == 1


@pytest.mark.parametrize(("why", "first", "second"), OTHER_MESSAGE, ids=[c[0] for c in OTHER_MESSAGE])
def test_another_message_under_the_same_id_is_a_409_and_the_first_is_kept(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    drain: Callable[[], None],
    why: str,
    first: Any,
    second: Any,
) -> None:
    status, one = _post(client, admin_key, "/v1/identify", {**first, "message_id": "m-1"})
    assert status == 202
    status, two = _post(client, admin_key, "/v1/identify", {**second, "message_id": "m-1"})
    assert status == 409
    assert two["error"]["code"] == "idempotency_conflict"
    assert two["error"]["details"] == {"event_id": one["event_id"]}
    # And again: the first message still holds the id.
    assert _post(client, admin_key, "/v1/identify", {**first, "message_id": "m-1"})[1]["duplicate"] is True
    [event] = _events(runtime)
    assert event.id == one["event_id"]
    drain()
    assert customer(client, admin_key, "a@example.com")["name"] == first.get("name")


def test_the_header_and_the_body_field_are_one_id(client: FlaskClient, admin_key: str) -> None:
    status, one = _post(client, admin_key, "/v1/ping", {"email": "a@example.com"}, **{"Idempotency-Key": "k"})
    assert status == 202
    status, two = _post(client, admin_key, "/v1/ping", {"email": "a@example.com", "message_id": "k"})
    assert (status, two["event_id"], two["duplicate"]) == (202, one["event_id"], True)
    status, three = _post(
        client, admin_key, "/v1/ping", {"email": "b@example.com"}, **{"Idempotency-Key": "k"}
    )
    assert status == 409 and three["error"]["code"] == "idempotency_conflict"


def test_identify_and_ping_are_different_messages(client: FlaskClient, admin_key: str) -> None:
    body = {"email": "a@example.com", "message_id": "m"}
    assert _post(client, admin_key, "/v1/ping", body)[0] == 202
    status, answer = _post(client, admin_key, "/v1/identify", body)
    assert status == 409 and answer["error"]["code"] == "idempotency_conflict"


def test_messages_are_compared_by_their_stored_body_and_no_hash_is_stored(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    """The fingerprint is computed when a message id is met again, from the stored body; storing a
    message computes none (it was an eighth of `/v1/batch`'s CPU)."""
    body = {"email": "a@example.com", "name": "A", "message_id": "new"}
    event_id = _post(client, admin_key, "/v1/identify", body)[1]["event_id"]
    batched = client.post(
        "/v1/batch",
        json={"batch": [{"type": "ping", "email": "b@example.com", "message_id": "p"}]},
        headers=auth(admin_key),
    )
    assert batched.status_code == 202
    assert [event.body_hash for event in _events(runtime)] == [None, None]
    assert _post(client, admin_key, "/v1/identify", {**body, "email": "A@Example.com"})[1] == {
        "event_id": event_id,
        "duplicate": True,
    }
    assert _post(client, admin_key, "/v1/identify", {**body, "name": "B"})[0] == 409


def test_a_hash_stored_by_an_earlier_version_is_what_is_compared(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    """Events stored before 2026-12-03 carry their message's fingerprint in `body_hash`: it is
    compared instead of the body (here a body that would say otherwise, to tell which is read)."""
    from tributary.app.api.ingest import message_fingerprint
    from tributary.app.schemas import IdentifyRequest

    body = {"email": "a@example.com", "name": "A", "message_id": "old"}
    event_id = _post(client, admin_key, "/v1/identify", body)[1]["event_id"]
    fingerprint = message_fingerprint("identify", IdentifyRequest.model_validate(body))
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).values(body_hash=fingerprint, body=b'{"email": "z@example.com"}'))
    assert _post(client, admin_key, "/v1/identify", body)[1] == {"event_id": event_id, "duplicate": True}
    assert _post(client, admin_key, "/v1/identify", {**body, "name": "B"})[0] == 409


def test_an_erased_message_id_stays_a_duplicate(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    """Erasure redacts the body and its hash: a retry is acknowledged, never a 409 that would
    reveal what the erased message said, and never applied again."""
    body = {"email": "a@example.com", "name": "A", "message_id": "m"}
    event_id = _post(client, admin_key, "/v1/identify", body)[1]["event_id"]
    drain()
    assert client.delete("/v1/customers/a@example.com", headers=auth(admin_key)).status_code == 204
    [event] = _events(runtime)
    assert event.body_hash is None
    for retry in (body, {**body, "name": "B"}):
        assert _post(client, admin_key, "/v1/identify", retry)[1] == {"event_id": event_id, "duplicate": True}


def _race(app: Flask, key: str, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Send the bodies at once, one thread and client each, released together."""
    barrier = threading.Barrier(len(bodies))
    results: list[tuple[int, Any]] = [(0, None)] * len(bodies)

    def send(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        results[index] = _post(client, key, "/v1/identify", bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_different_bodies_one_wins_the_other_is_a_409(
    app: Flask, admin_key: str, runtime: Runtime, round_: int
) -> None:
    bodies = [{"email": "a@example.com", "name": name, "message_id": f"race-{round_}"} for name in "AB"]
    results = _race(app, admin_key, bodies)
    statuses = sorted(status for status, _ in results)
    assert statuses == [202, 409], results
    [winner] = [body for (status, body) in results if status == 202]
    [loser] = [body for (status, body) in results if status == 409]
    assert winner["duplicate"] is False
    assert loser["error"] == {**loser["error"], "code": "idempotency_conflict"}
    assert loser["error"]["details"] == {"event_id": winner["event_id"]}
    [event] = _events(runtime)
    assert event.id == winner["event_id"]


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_same_bodies_one_is_stored_the_other_is_a_duplicate(
    app: Flask, admin_key: str, runtime: Runtime, round_: int
) -> None:
    body = {"email": "a@example.com", "name": "A", "message_id": f"same-{round_}"}
    results = _race(app, admin_key, [body, dict(body), dict(body)])
    assert {status for status, _ in results} == {202}
    assert sorted(answer["duplicate"] for _, answer in results) == [False, True, True]
    assert len({answer["event_id"] for _, answer in results}) == 1
    assert len(_events(runtime)) == 1
