"""Supabase: Database Webhooks on auth.users (shared secret) and the before-user-created Auth
Hook (Standard Webhooks): contract suites, every event, and that credentials in `auth.users` rows
are never stored."""

from __future__ import annotations

import json
import uuid
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
from tests.helpers import customer
from tributary.connectors.base import (
    Headers,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.supabase import ROW_COLUMNS
from tributary.connectors.testkit import (
    ConnectorContract,
    WebhookCase,
    new_standard_secret,
    standard_webhook_headers,
    static_secret_headers,
)
from tributary.runtime.process import Runtime

USER = "8c3f6a1e-2b7d-4e59-9f14-6d2a0c8b3e71"
IDENTITY = IdentityRef("supabase", USER)
DB_SECRET = "sb-db-webhook-7Hq2LxP9vR4mT8wN"
CREDENTIALS = (
    "encrypted_password",
    "confirmation_token",
    "recovery_token",
    "email_change_token_new",
    "email_change_token_current",
    "phone_change_token",
    "reauthentication_token",
)
SECRET_VALUES = ("$2a$10$", "b1946ac92492d2347c6235b4d2611184", "9e107d9d372bb6826bd81d3542a419d6")


class DatabaseWebhookCase(WebhookCase):
    connector = "supabase"
    secret = DB_SECRET
    other_secret = "sb-db-webhook-other-3Kd8Pq1Z"
    signed_timestamps = False
    signs_body = False

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("supabase/auth.users.insert.json")
        payload["record"]["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, event_id))
        payload["record"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("supabase/public.orders.insert.json")
        payload["record"]["id"] = event_id
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return static_secret_headers(secret, scheme="Bearer")


class TestDatabaseWebhookContract(ConnectorContract):
    case = DatabaseWebhookCase()


class AuthHookCase(WebhookCase):
    connector = "supabase"
    # As the Supabase dashboard shows it: `v1,whsec_<base64>`.
    secret = "v1," + new_standard_secret()
    other_secret = "v1," + new_standard_secret()

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = fixture("supabase/hook.before-user-created.json")
        payload["metadata"]["time"] = timestamp
        payload["user"]["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, event_id))
        payload["user"]["email"] = f"{event_id}@example.com"
        return dumps(payload)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        payload = json.loads(self.body(event_id=event_id, timestamp=timestamp))
        payload["metadata"]["name"] = "custom-access-token"
        return dumps(payload)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return standard_webhook_headers(
            body, secret.removeprefix("v1,"), msg_id=event_id, timestamp=timestamp
        )


class TestAuthHookContract(ConnectorContract):
    case = AuthHookCase()


def row_request(path: str, **headers: str) -> InboundRequest:
    return InboundRequest(dumps(fixture(path)), Headers({"Authorization": f"Bearer {DB_SECRET}", **headers}))


def changes_for(path: str) -> list[CustomerChange]:
    [envelope] = envelopes("supabase", row_request(path))
    return normalize("supabase", envelope)


# -- every event -----------------------------------------------------------------------------------


def test_insert_is_a_signup() -> None:
    [change] = changes_for("supabase/auth.users.insert.json")
    assert (change.email, change.identity, change.name, change.status_if_absent) == (
        "grace@example.com",
        IDENTITY,
        "Grace Hopper",
        "free",
    )
    assert change.email_change and not change.activity


def test_an_update_with_a_new_sign_in_is_activity_at_the_sign_in_time() -> None:
    [change] = changes_for("supabase/auth.users.update.sign_in.json")
    assert change.activity and change.email == "grace@example.com"
    assert change.occurred_at.isoformat() == "2024-06-02T14:30:05.551203+00:00"


def test_an_update_with_a_new_email_is_an_email_change_and_takes_the_new_name() -> None:
    [change] = changes_for("supabase/auth.users.update.email.json")
    assert change.email == "grace.hopper@navy.example" and change.email_change
    assert change.name == "Grace Brewster Hopper" and not change.activity


def test_an_update_of_untracked_columns_only_is_ignored() -> None:
    payload = fixture("supabase/auth.users.update.sign_in.json")
    payload["record"] = {
        **payload["old_record"],
        "recovery_token": "f00d",
        "updated_at": payload["record"]["updated_at"],
    }
    [envelope] = envelopes("supabase", InboundRequest(dumps(payload), Headers({"Authorization": DB_SECRET})))
    assert "no tracked column" in ignored_reason("supabase", envelope)


def test_a_soft_delete_and_a_delete_forget_the_identity() -> None:
    [change] = changes_for("supabase/auth.users.delete.json")
    assert change.identity == IDENTITY and change.forget_identity and change.email is None
    soft = fixture("supabase/auth.users.update.email.json")
    soft["old_record"] = soft["record"]
    soft["record"] = {
        **soft["record"],
        "deleted_at": "2024-06-04T00:00:00+00:00",
        "updated_at": "2024-06-04T00:00:00+00:00",
    }
    [envelope] = envelopes("supabase", InboundRequest(dumps(soft), Headers({"Authorization": DB_SECRET})))
    [change] = normalize("supabase", envelope)
    assert change.forget_identity and change.identity == IDENTITY


def test_the_before_user_created_hook_is_a_signup() -> None:
    secret = AuthHookCase.secret
    body = dumps(fixture("supabase/hook.before-user-created.json"))
    headers = standard_webhook_headers(body, secret.removeprefix("v1,"), msg_id="msg_hook_1")
    request = InboundRequest(body, Headers(headers))
    source = source_config("supabase", (secret,))
    registry().get("supabase").verify(request, source)
    [envelope] = envelopes("supabase", request, source)
    assert (envelope.event_id, envelope.type) == ("msg_hook_1", "hook.before-user-created")
    [change] = normalize("supabase", envelope)
    assert (change.email, change.identity, change.status_if_absent) == ("grace@example.com", IDENTITY, "free")


def test_other_tables_and_phone_only_signups_are_ignored() -> None:
    [envelope] = envelopes("supabase", row_request("supabase/public.orders.insert.json"))
    assert "public.orders.insert" in ignored_reason("supabase", envelope)
    payload = fixture("supabase/auth.users.insert.json")
    payload["record"].update(email=None, phone="+15555550123")
    [envelope] = envelopes("supabase", InboundRequest(dumps(payload), Headers({})))
    assert "no email" in ignored_reason("supabase", envelope)


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.update(type="TRUNCATE"),
        lambda p: p.pop("schema"),
        lambda p: p.update(record=None),
        lambda p: p["record"].pop("id"),
        lambda p: p["record"].update(created_at="not a time"),
    ],
)
def test_malformed_rows_are_refused(edit: Any) -> None:
    payload = fixture("supabase/auth.users.insert.json")
    edit(payload)
    with pytest.raises(MalformedPayload):
        envelopes("supabase", InboundRequest(dumps(payload), Headers({})))


# -- secrets ---------------------------------------------------------------------------------------


def test_envelopes_keep_only_allowlisted_columns() -> None:
    for path in ("supabase/auth.users.insert.json", "supabase/auth.users.update.email.json"):
        [envelope] = envelopes("supabase", row_request(path))
        for row in (envelope.payload["record"], envelope.payload["old_record"]):
            assert row is None or set(row) <= ROW_COLUMNS
            assert not any(column in (row or {}) for column in CREDENTIALS)


def test_the_stored_event_holds_no_password_hash_or_token(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any
) -> None:
    source_id = make_source(runtime, "supabase", [DB_SECRET])
    for path in ("supabase/auth.users.insert.json", "supabase/auth.users.update.email.json"):
        request = row_request(path)
        response = client.post(f"/webhooks/{source_id}", data=request.body, headers=dict(request.headers))
        assert response.status_code == 200, response.get_json()
    drain()
    events = stored_events(runtime, source_id)
    assert [e.status for e in events] == ["processed", "processed"]
    for event in events:
        stored = event.body.decode() + json.dumps(event.payload) + json.dumps(event.headers)
        for needle in (*CREDENTIALS, *SECRET_VALUES, DB_SECRET):
            assert needle not in stored, needle
        assert json.loads(event.body) == event.payload  # the body is the redacted payload
    # The redacted body is still enough to replay the event's effect.
    record = customer(client, admin_key, "grace.hopper@navy.example")
    assert record["past_emails"] == ["grace@example.com"] and record["name"] == "Grace Brewster Hopper"


# -- verification and options ----------------------------------------------------------------------


def test_the_header_option_names_the_secret_header() -> None:
    source = source_config("supabase", (DB_SECRET,), header="X-Webhook-Secret")
    body = dumps(fixture("supabase/auth.users.insert.json"))
    registry().get("supabase").verify(InboundRequest(body, Headers({"X-Webhook-Secret": DB_SECRET})), source)
    with pytest.raises(VerificationFailed, match="X-Webhook-Secret"):
        registry().get("supabase").verify(InboundRequest(body, Headers({"Authorization": DB_SECRET})), source)


def test_the_wrong_secret_header_value_is_refused() -> None:
    source = source_config("supabase", (DB_SECRET,))
    body = dumps(fixture("supabase/auth.users.insert.json"))
    for value in ("Bearer wrong", f"Basic {DB_SECRET}", DB_SECRET + " ", ""):
        with pytest.raises(VerificationFailed):
            registry().get("supabase").verify(
                InboundRequest(body, Headers({"Authorization": value + "x"})), source
            )


def test_hook_secrets_in_the_future_pipe_form_rotate() -> None:
    first, second = new_standard_secret(), new_standard_secret()
    body = dumps(fixture("supabase/hook.before-user-created.json"))
    source = source_config("supabase", (f"v1,{first}|v1,{second}",))
    for secret in (first, second):
        headers = standard_webhook_headers(body, secret, msg_id="msg_1")
        registry().get("supabase").verify(InboundRequest(body, Headers(headers)), source)


@pytest.mark.parametrize(
    "options", [{"header": ""}, {"header": "Bad Header"}, {"unknown": "x"}, {"header": 3}]
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptions):
        registry().get("supabase").validate_options(options)
