"""Auth0 Log Streams: the contract suite, the three content formats, every tracked log type,
deduplication by log_id, and a signup -> login -> email change -> deletion run end to end."""

from __future__ import annotations

import json
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
    source_config,
    stored_events,
)
from tests.helpers import auth, customer
from tributary.connectors.auth0 import split_records
from tributary.connectors.base import Headers, InboundRequest, MalformedPayload, VerificationFailed
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, static_secret_headers
from tributary.runtime.process import Runtime

TOKEN = "a0-stream-token-Vb7Qm2Xk9Lp4Rz8T"
USER = "auth0|665b2f1c9e4d7a0012f3c8b1"
IDENTITY = IdentityRef("auth0", USER)
RECORDS = ["ss", "s", "sce", "sapi.user_update", "sdu"]


class Auth0Case(WebhookCase):
    connector = "auth0"
    secret = TOKEN
    other_secret = "a0-stream-token-other-Wc1Nd6"
    signed_timestamps = False
    signs_body = False

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        record = fixture("auth0/ss.json")
        record["log_id"] = record["data"]["log_id"] = event_id
        record["data"]["user_id"] = event_id
        record["data"]["details"]["body"]["email"] = record["data"]["user_name"] = f"{event_id}@example.com"
        return dumps([record])

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        record = fixture("auth0/fp.json")
        record["log_id"] = record["data"]["log_id"] = event_id
        return dumps([record])

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return static_secret_headers(secret)


class TestAuth0Contract(ConnectorContract):
    case = Auth0Case()


def request(body: bytes) -> InboundRequest:
    return InboundRequest(body, Headers({"Authorization": TOKEN}))


def changes_for(name: str) -> list[CustomerChange]:
    [envelope] = envelopes("auth0", request(dumps(fixture(f"auth0/{name}.json"))))
    return normalize("auth0", envelope)


# -- formats ---------------------------------------------------------------------------------------


def test_array_lines_and_single_object_bodies_give_the_same_envelopes() -> None:
    records = [fixture(f"auth0/{name}.json") for name in RECORDS]
    array = dumps(records)
    lines = b"\n".join(dumps(r) for r in records) + b"\n\n"
    expected = [(e.event_id, e.type) for e in envelopes("auth0", request(array))]
    assert [(e.event_id, e.type) for e in envelopes("auth0", request(lines))] == expected
    assert len(expected) == 5 and expected[0] == (records[0]["log_id"], "ss")
    [single] = envelopes("auth0", request(dumps(records[2])))
    assert (single.event_id, single.type) == expected[2]


def test_bare_log_events_without_the_wrapper_are_read_too() -> None:
    bare = fixture("auth0/s.json")["data"]
    [envelope] = envelopes("auth0", request(dumps(bare)))
    assert (envelope.event_id, envelope.type) == (bare["log_id"], "s")


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"[1]",
        b'{"log_id": "x"}',
        b'{"a": 1}\n{not json}',
        b"\xff\xfe",
        b"   ",
        b'[{"data": {"type": "s"}}]',
    ],
)
def test_malformed_deliveries_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        envelopes("auth0", request(body))


def test_split_records_reads_json_lines_with_blank_lines() -> None:
    assert split_records(b'{"a": 1}\n\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]


# -- every tracked log type ------------------------------------------------------------------------


def test_ss_is_a_signup_and_gets_the_connection_prefix_on_a_bare_user_id() -> None:
    [change] = changes_for("ss")
    assert (change.email, change.identity, change.status_if_absent) == ("linus@example.com", IDENTITY, "free")


def test_s_is_activity_at_the_log_time() -> None:
    [change] = changes_for("s")
    assert change.activity and change.identity == IDENTITY and change.email == "linus@example.com"
    assert change.occurred_at.isoformat() == "2024-06-02T10:15:00.334000+00:00"


def test_sce_changes_the_email_to_the_new_address() -> None:
    [change] = changes_for("sce")
    assert change.email == "linus@kernel.example" and change.email_change and change.identity == IDENTITY


def test_a_management_api_user_update_changes_name_and_email() -> None:
    [change] = changes_for("sapi.user_update")
    assert (change.name, change.email, change.identity) == (
        "Linus Torvalds",
        "linus@kernel.example",
        IDENTITY,
    )
    [envelope] = envelopes("auth0", request(dumps(fixture("auth0/sapi.user_update.json"))))
    assert envelope.email is None  # the log's user_name is the admin who made the call


def test_a_management_api_user_deletion_and_sdu_forget_the_identity() -> None:
    [change] = changes_for("sdu")
    assert change.forget_identity and change.identity == IDENTITY
    record = fixture("auth0/sapi.user_update.json")
    record["data"]["details"]["request"]["method"] = "delete"
    [envelope] = envelopes("auth0", request(dumps(record)))
    [change] = normalize("auth0", envelope)
    assert change.forget_identity and change.identity == IDENTITY


def test_failures_and_other_api_calls_are_ignored() -> None:
    [envelope] = envelopes("auth0", request(dumps(fixture("auth0/fp.json"))))
    assert "fp" in ignored_reason("auth0", envelope)
    record = fixture("auth0/sapi.user_update.json")
    record["data"]["details"]["request"]["path"] = "/api/v2/clients/abc"
    [envelope] = envelopes("auth0", request(dumps(record)))
    assert "does not update or delete a user" in ignored_reason("auth0", envelope)


def test_the_authorization_value_must_match_verbatim_or_as_bearer() -> None:
    source = source_config("auth0", (TOKEN,))
    connector = registry().get("auth0")
    for value in (TOKEN, f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        connector.verify(InboundRequest(b"[]", Headers({"Authorization": value})), source)
    for value in ("", "Bearer", TOKEN[:-1], f"Basic {TOKEN}"):
        with pytest.raises(VerificationFailed):
            connector.verify(InboundRequest(b"[]", Headers({"Authorization": value})), source)


# -- end to end ------------------------------------------------------------------------------------


def test_a_batch_stores_each_log_once_and_replays_nothing(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    source_id = make_source(runtime, "auth0", [TOKEN])
    records = [fixture(f"auth0/{name}.json") for name in RECORDS]
    first = client.post(
        f"/webhooks/{source_id}", data=dumps(records[:3] + records[:1]), headers={"Authorization": TOKEN}
    )
    assert first.get_json() == {"received": 3, "duplicates": 1}
    # Auth0 retries a batch it thinks failed: the logs already stored are acknowledged, not stored again.
    again = b"\n".join(dumps(r) for r in records)
    assert client.post(f"/webhooks/{source_id}", data=again, headers={"Authorization": TOKEN}).get_json() == {
        "received": 2,
        "duplicates": 3,
    }
    drain()
    events = stored_events(runtime, source_id)
    assert sorted(e.provider_event_id for e in events) == sorted(r["log_id"] for r in records)
    assert {e.status for e in events} == {"processed"}
    record = customer(client, admin_key, "linus@kernel.example")
    assert record["name"] == "Linus Torvalds" and record["past_emails"] == ["linus@example.com"]
    assert record["projects"]["default"]["status"] == "free"
    assert record["last_activity_at"] == "2024-06-02T10:15:00.334000Z"
    assert record["identities"] == []  # deleted by sdu, the customer kept
    timeline = client.get(f"/v1/customers/{record['id']}/timeline", headers=auth(admin_key)).get_json()
    assert any(entry["data"].get("identity_removed") == ["auth0", USER] for entry in timeline["data"])
    assert json.loads(events[0].body)  # Auth0 deliveries are stored as received
