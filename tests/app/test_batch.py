"""`POST /v1/batch`: per-message validation, one statement, dedup, order of results, limits."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.helpers import auth, customer, identify, make_key
from tributary.app.api.batch import MAX_MESSAGES, _answer, _encoded, _messages
from tributary.connectors.safe_json import problem, storable_encoded
from tributary.models import Event
from tributary.runtime.process import Runtime


def _post(client: FlaskClient, token: str, batch: Any) -> Any:
    return client.post("/v1/batch", json={"batch": batch}, headers=auth(token))


def _count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_valid_messages_are_stored_and_applied_and_bad_ones_reported_in_order(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    response = _post(
        client,
        admin_key,
        [
            {"type": "identify", "email": "ada@example.com", "status": "paid", "params": {"plan": "pro"}},
            {"type": "identify", "email": "not an email"},
            {"type": "ping", "email": "bob@example.com", "timestamp": "2026-02-01T00:00:00Z"},
            {"type": "track", "email": "x@example.com"},
            {"type": "ping", "email": "c@example.com", "paramz": {}},
            "not an object",
            {"type": "identify", "email": "d@example.com", "project": "nope"},
        ],
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    results = body["results"]
    assert len(results) == 7
    assert results[0]["event_id"].startswith("evt_") and results[0]["duplicate"] is False
    assert results[1]["status"] == 400 and results[1]["error"]["code"] == "validation_error"
    assert results[1]["error"]["details"][0]["field"] == "email"
    assert results[2]["event_id"].startswith("evt_")
    assert results[3]["error"]["details"] == [{"field": "type"}]
    assert results[4]["status"] == 400 and results[4]["error"]["details"][0]["field"] == "paramz"
    assert results[5]["error"]["code"] == "malformed_body"
    assert results[6]["status"] == 404 and results[6]["error"]["code"] == "project_not_found"
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 5)
    assert _count(runtime) == 2
    drain()
    assert customer(client, admin_key, "ada@example.com")["projects"]["default"]["status"] == "paid"
    bob = customer(client, admin_key, "bob@example.com")
    assert bob["last_activity_at"] == "2026-02-01T00:00:00.000000Z"


def test_message_ids_deduplicate_across_batches_single_calls_and_within_a_batch(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    single = identify(client, admin_key, email="a@example.com", message_id="m-1")
    # Same fields in another order and spacing: still the same message.
    message = {"message_id": "m-1", "email": "a@example.com", "type": "identify"}
    fresh = {"type": "ping", "email": "a@example.com", "message_id": "m-2"}
    first = _post(client, admin_key, [message, fresh, dict(fresh)]).get_json()
    assert first["results"][0] == {"event_id": single["event_id"], "duplicate": True}
    assert first["results"][1]["duplicate"] is False
    assert first["results"][2] == {"event_id": first["results"][1]["event_id"], "duplicate": True}
    keyed = client.post(
        "/v1/ping", json={"email": "k@example.com"}, headers={**auth(admin_key), "Idempotency-Key": "k-1"}
    )
    by_header = _post(client, admin_key, [{"type": "ping", "email": "k@example.com", "message_id": "k-1"}])
    assert by_header.get_json()["results"] == [{"event_id": keyed.get_json()["event_id"], "duplicate": True}]
    again = _post(client, admin_key, [message, fresh]).get_json()
    assert again["results"] == [
        {"event_id": single["event_id"], "duplicate": True},
        {"event_id": first["results"][1]["event_id"], "duplicate": True},
    ]
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert _count(runtime) == 3


def test_each_message_is_stored_as_its_own_body_without_the_type(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    _post(client, admin_key, [{"type": "identify", "email": "A@Example.com", "name": "Ådæ"}])
    with runtime.db.session() as session:
        event = session.scalars(select(Event)).one()
    assert event.channel == "identify" and event.email == "a@example.com"
    assert json.loads(event.body) == {"email": "A@Example.com", "name": "Ådæ"}


def test_nothing_valid_is_a_400_with_the_results(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    response = _post(client, admin_key, [{"type": "ping"}, {"type": "identify", "email": "a@b.co", "x": 1}])
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "no_valid_messages" and len(error["details"]["results"]) == 2
    assert _count(runtime) == 0


def test_non_finite_numbers_are_refused_per_message(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    raw = (
        b'{"batch": [{"type": "identify", "email": "a@example.com", "params": {"x": NaN}},'
        b' {"type": "identify", "email": "b@example.com", "params": {"x": 1.5}}]}'
    )
    response = client.post(
        "/v1/batch", data=raw, headers={**auth(admin_key), "Content-Type": "application/json"}
    )
    assert response.status_code == 202
    results = response.get_json()["results"]
    assert results[0]["status"] == 400 and "finite" in results[0]["error"]["message"]
    assert results[1]["event_id"].startswith("evt_")
    assert _count(runtime) == 1
    surrogate = b'{"batch": [{"type": "identify", "email": "a@example.com", "name": "\\ud800"}]}'
    response = client.post(
        "/v1/batch", data=surrogate, headers={**auth(admin_key), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "Unicode" in response.get_json()["error"]["details"]["results"][0]["error"]["message"]


def test_a_nul_anywhere_in_a_message_is_refused_per_message(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    messages = [
        {"type": "identify", "email": "a@example.com", "params": {"x": "a\x00b"}},
        {"type": "identify", "email": "b@example.com", "params": {"k\x00": 1}},
        {"type": "identify", "email": "c@example.com", "name": "\x00"},
        {"type": "identify", "email": "d@example.com", "name": "spells \\u0000, holds none"},
    ]
    response = _post(client, admin_key, messages)
    assert response.status_code == 202
    results = response.get_json()["results"]
    assert [r.get("status") for r in results[:3]] == [400, 400, 400]
    assert all("NUL" in str(r["error"]["details"]) for r in results[:3]), results
    assert results[3]["event_id"].startswith("evt_")
    assert _count(runtime) == 1


_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ud800"]))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.just("\\u0000"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(_json)
def test_a_message_passed_as_storable_never_decodes_to_an_unstorable_value(value: Any) -> None:
    """A batch's message skips `storable_text` for `storable_encoded`: what either encoder of
    `_encoded` writes cannot hold any unstorable value but an escaped NUL."""
    body = json.dumps({"batch": [{"type": "identify", "params": {"v": value}}]}).encode(
        "utf-8", "surrogatepass"
    )
    messages, finite = _messages(body)
    fields = dict(messages[0])
    fields.pop("type")
    try:
        encoded = _encoded(fields, finite)
    except ValueError:  # refused as the message's 400 (UnicodeEncodeError is one too)
        return
    if storable_encoded(encoded):
        assert problem(json.loads(encoded)) is None, encoded


def test_every_number_is_stored_as_sent_and_an_infinite_one_refused(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    # A batch of finite numbers is encoded by orjson, which takes no integer beyond 64 bits: that
    # message is encoded by the standard encoder instead, exactly. 1e400 parses as infinity.
    headers = {**auth(admin_key), "Content-Type": "application/json"}
    big = 123456789012345678901234567890
    raw = (
        b'{"batch": [{"type": "identify", "email": "big@example.com", "params": {"n": %d, "f": 1e-7}},'
        b' {"type": "identify", "email": "small@example.com", "params": {"n": 7, "f": 0.5}}]}' % big
    )
    assert client.post("/v1/batch", data=raw, headers=headers).get_json()["accepted"] == 2
    raw = (
        b'{"batch": [{"type": "identify", "email": "inf@example.com", "params": {"x": 1e400}},'
        b' {"type": "identify", "email": "fine@example.com", "params": {"x": 2.5}}]}'
    )
    results = client.post("/v1/batch", data=raw, headers=headers).get_json()["results"]
    assert results[0]["status"] == 400 and "finite" in results[0]["error"]["message"]
    assert results[1]["event_id"].startswith("evt_")
    with runtime.db.session() as session:
        bodies = {e.email: json.loads(e.body) for e in session.scalars(select(Event))}
    assert bodies["big@example.com"]["params"] == {"n": big, "f": 1e-7}
    assert bodies["small@example.com"]["params"] == {"n": 7, "f": 0.5}
    assert bodies["fine@example.com"]["params"] == {"x": 2.5}
    assert "inf@example.com" not in bodies


def test_a_project_refused_is_refused_for_every_message_naming_it(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    ping = {"type": "ping", "email": "a@example.com"}
    batch = [{**ping, "project": "nope"}, ping, {**ping, "project": "nope"}, {**ping, "project": "default"}]
    results = _post(client, admin_key, batch).get_json()["results"]
    assert [r.get("status") for r in results] == [404, None, 404, None]
    assert results[2]["error"]["code"] == "project_not_found"
    assert _count(runtime) == 2


def test_envelope_errors_and_limits(client: FlaskClient, admin_key: str, runtime: Runtime) -> None:
    headers = {**auth(admin_key), "Content-Type": "application/json"}
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "malformed_json"),
        (b"[]", 400, "malformed_body"),
        (b'{"batch": {}}', 400, "malformed_body"),
        (b'{"batch": []}', 400, "validation_error"),
        (b'{"batch": [], "extra": 1}', 400, "validation_error"),
        (b"\xff\xfe", 400, "malformed_json"),
        (b'{"batch": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", 400, "malformed_json"),
    ]
    too_many = {"batch": [{"type": "ping", "email": "a@example.com"}] * (MAX_MESSAGES + 1)}
    cases.append((json.dumps(too_many).encode(), 400, "batch_too_large"))
    big = {"batch": [{"type": "identify", "email": "a@example.com", "name": "x" * 400}] * 3000}
    cases.append((json.dumps(big).encode(), 413, "payload_too_large"))
    for raw, status, code in cases:
        response = client.post("/v1/batch", data=raw, headers=headers)
        assert response.status_code == status, (raw[:40], response.get_json())
        assert response.get_json()["error"]["code"] == code
    assert _count(runtime) == 0


def test_keys_scopes_and_project_binding(client: FlaskClient, runtime: Runtime, admin_key: str) -> None:
    message = {"type": "ping", "email": "a@example.com"}
    assert client.post("/v1/batch", json={"batch": [message]}).status_code == 401
    read_only = make_key(runtime, ["read"])
    assert _post(client, read_only, [message]).status_code == 403
    client.post("/v1/projects", json={"slug": "web"}, headers=auth(admin_key))
    client.post("/v1/projects", json={"slug": "other"}, headers=auth(admin_key))
    bound = make_key(runtime, ["ingest"], project="web")
    body = _post(client, bound, [message, {**message, "project": "web"}, {**message, "project": "other"}])
    results = body.get_json()["results"]
    assert results[0]["event_id"] and results[1]["event_id"]
    assert results[2]["status"] == 403 and results[2]["error"]["code"] == "project_forbidden"
    with runtime.db.session() as session:
        assert len(set(session.scalars(select(Event.project_id)))) == 1


def test_future_timestamp_is_refused_like_the_single_call(client: FlaskClient, admin_key: str) -> None:
    body = _post(client, admin_key, [{"type": "ping", "email": "a@example.com", "timestamp": "2999-01-01"}])
    assert body.status_code == 400
    assert body.get_json()["error"]["details"]["results"][0]["error"]["code"] == "timestamp_in_future"


def test_batch_is_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/v1/batch"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("BatchRequest")
    assert "BatchAccepted" in document["components"]["schemas"]


def test_a_message_id_reused_for_a_different_message_is_a_409_for_that_message(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    first = identify(client, admin_key, email="a@example.com", name="Ada", message_id="m-1")
    body = _post(
        client,
        admin_key,
        [
            {"type": "identify", "email": "a@example.com", "name": "Eve", "message_id": "m-1"},
            {"type": "ping", "email": "a@example.com", "message_id": "m-1"},
            {"type": "ping", "email": "b@example.com", "message_id": "m-2"},
            {"type": "ping", "email": "c@example.com", "message_id": "m-2"},
        ],
    ).get_json()
    conflict = body["results"][0]
    assert conflict["status"] == 409 and conflict["error"]["code"] == "idempotency_conflict"
    assert conflict["error"]["details"] == {"event_id": first["event_id"]}
    assert body["results"][1]["status"] == 409  # same id, other type
    assert body["results"][2]["duplicate"] is False
    assert body["results"][3]["status"] == 409  # reused within the batch
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 0, 3)
    assert _count(runtime) == 2


def test_a_retry_after_erasure_is_a_duplicate_not_a_conflict(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    message = {"type": "identify", "email": "gone@example.com", "name": "Gone", "message_id": "m-9"}
    first = _post(client, admin_key, [message]).get_json()["results"][0]
    drain()
    record = customer(client, admin_key, "gone@example.com")
    assert client.delete(f"/v1/customers/{record['id']}", headers=auth(admin_key)).status_code == 204
    with runtime.db.session() as session:
        assert b"Gone" not in session.scalars(select(Event.body)).one()
    again = _post(client, admin_key, [message]).get_json()["results"][0]
    assert again == {"event_id": first["event_id"], "duplicate": True}


def test_an_answer_orjson_refuses_is_written_by_the_apps_encoder(app: Flask) -> None:
    # No answer the view builds holds a lone surrogate today (such a message is refused without
    # echoing it); if one ever did, the answer must still be valid JSON, not a 500.
    answer = {"results": [{"error": {"code": "x", "message": "\ud800", "details": None}}], "accepted": 0}
    response = _answer(app, answer)
    assert response.status_code == 202 and response.mimetype == "application/json"
    assert json.loads(response.get_data()) == answer


def test_the_answer_is_compact_json_ending_in_a_newline(client: FlaskClient, admin_key: str) -> None:
    response = _post(client, admin_key, [{"type": "identify", "email": "ada@example.com"}])
    text = response.get_data(as_text=True)
    assert response.status_code == 202 and text.endswith("}\n") and ", " not in text
    assert json.loads(text)["accepted"] == 1
