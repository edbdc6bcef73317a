"""Okta Event Hooks: the contract suite, the one-time verification GET, batches, and every
tracked event type."""

from __future__ import annotations

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
from tributary.connectors.base import Challenge, Headers, InboundRequest, InvalidOptions, MalformedPayload
from tributary.connectors.changes import IdentityRef
from tributary.connectors.registry import registry
from tributary.connectors.testkit import ConnectorContract, WebhookCase, static_secret_headers
from tributary.runtime.process import Runtime

SECRET = "okta-hook-secret-Tf6Lw2Qz9Bn3"
USER = IdentityRef("okta", "00ub0oNGTSWTBKOLGLNR")
CHALLENGE = "Zq4XuBm2K7tPj0yVfR8eWc3LsN6hG1dA"


class OktaCase(WebhookCase):
    connector = "okta"
    secret = SECRET
    other_secret = "okta-hook-secret-other-Hd5Xc"
    signed_timestamps = False
    signs_body = False

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        delivery = fixture("okta/lifecycle.batch.json")
        event = delivery["data"]["events"][0]
        event["uuid"] = event_id
        event["target"][0]["id"] = f"00u{event_id}"
        event["target"][0]["alternateId"] = f"{event_id}@example.com"
        delivery["data"]["events"] = [event]
        return dumps(delivery)

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        delivery = fixture("okta/group.user_membership.add.json")
        delivery["data"]["events"][0]["uuid"] = event_id
        return dumps(delivery)

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        return static_secret_headers(secret)


class TestOktaContract(ConnectorContract):
    case = OktaCase()


def request(name: str) -> InboundRequest:
    return InboundRequest(dumps(fixture(f"okta/{name}.json")), Headers({"Authorization": SECRET}))


def get(headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(b"", Headers(headers), method="GET")


# -- the verification handshake --------------------------------------------------------------------


def test_the_challenge_is_echoed() -> None:
    source = source_config("okta", (SECRET,))
    okta = registry().get("okta")
    assert okta.challenge(get({"X-Okta-Verification-Challenge": CHALLENGE}), source) == Challenge(
        200, {"verification": CHALLENGE}
    )
    with_secret = get({"X-Okta-Verification-Challenge": CHALLENGE, "Authorization": SECRET})
    assert okta.challenge(with_secret, source) == Challenge(200, {"verification": CHALLENGE})
    # Not a handshake: a POST, or a GET without the header.
    assert (
        okta.challenge(InboundRequest(b"{}", Headers({"X-Okta-Verification-Challenge": "x"})), source) is None
    )
    assert okta.challenge(get({}), source) is None


def test_a_challenge_with_a_wrong_secret_or_an_oversized_value_is_refused() -> None:
    source = source_config("okta", (SECRET,))
    okta = registry().get("okta")
    wrong = okta.challenge(get({"X-Okta-Verification-Challenge": CHALLENGE, "Authorization": "nope"}), source)
    assert wrong is not None and wrong.status == 400 and "verification" not in wrong.body
    huge = okta.challenge(get({"X-Okta-Verification-Challenge": "x" * 600}), source)
    assert huge is not None and huge.status == 400


def test_the_handshake_through_the_endpoint(client: FlaskClient, runtime: Runtime) -> None:
    source_id = make_source(runtime, "okta", [SECRET])
    answer = client.get(
        f"/webhooks/{source_id}",
        headers={"X-Okta-Verification-Challenge": CHALLENGE, "Authorization": SECRET},
    )
    assert (answer.status_code, answer.get_json()) == (200, {"verification": CHALLENGE})
    assert client.get(f"/webhooks/{source_id}").status_code == 405
    refused = client.get(
        f"/webhooks/{source_id}",
        headers={"X-Okta-Verification-Challenge": CHALLENGE, "Authorization": "wrong"},
    )
    assert refused.status_code == 400 and refused.get_json()["error"]["message"]
    assert stored_events(runtime, source_id) == []


# -- batches and events ----------------------------------------------------------------------------


def test_a_batch_becomes_one_envelope_per_event() -> None:
    create, activate = envelopes("okta", request("lifecycle.batch"))
    assert (create.event_id, create.type) == ("f3a1b2c4-5d6e-11ef-9a8b-0242ac120002", "user.lifecycle.create")
    assert (activate.type, activate.email) == ("user.lifecycle.activate", "katherine@example.com")
    [change] = normalize("okta", create)
    assert (change.email, change.identity, change.name, change.status_if_absent) == (
        "katherine@example.com",
        USER,
        "Katherine Johnson",
        "free",
    )
    [change] = normalize("okta", activate)
    assert change.params == {"okta_status": "active"} and change.status_if_absent == "free"


def test_a_profile_update_carries_the_new_login_as_an_email_change() -> None:
    [envelope] = envelopes("okta", request("user.account.update_profile"))
    [change] = normalize("okta", envelope)
    assert (change.email, change.name, change.email_change) == (
        "k.johnson@nasa.example",
        "Katherine G. Johnson",
        True,
    )


def test_sign_ins_are_activity_and_failed_ones_are_ignored() -> None:
    success, failure = envelopes("okta", request("user.session.start"))
    [change] = normalize("okta", success)
    assert change.activity and change.identity == USER and change.email == "k.johnson@nasa.example"
    # The actor's display name is the user's name (issue #12, defect 3).
    assert change.name == "Katherine G. Johnson"
    assert "FAILURE" in ignored_reason("okta", failure)


def test_suspension_is_an_okta_param_never_the_status() -> None:
    [envelope] = envelopes("okta", request("user.lifecycle.suspend"))
    [change] = normalize("okta", envelope)
    assert change.params == {"okta_status": "suspended"} and change.status is None


def test_deletion_forgets_the_identity() -> None:
    [envelope] = envelopes("okta", request("user.lifecycle.delete.initiated"))
    [change] = normalize("okta", envelope)
    assert change.forget_identity and change.identity == USER and change.email is None


def test_untracked_events_and_non_email_logins_are_ignored() -> None:
    [envelope] = envelopes("okta", request("group.user_membership.add"))
    assert "group.user_membership.add" in ignored_reason("okta", envelope)
    delivery = fixture("okta/lifecycle.batch.json")
    delivery["data"]["events"][0]["target"][0]["alternateId"] = "kjohnson"
    create, _ = envelopes("okta", InboundRequest(dumps(delivery), Headers({})))
    assert "not an email" in ignored_reason("okta", create)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("data"),
        lambda d: d["data"].update(events={}),
        lambda d: d["data"]["events"].append("x"),
        lambda d: d["data"]["events"][0].pop("uuid"),
        lambda d: d["data"]["events"][0].update(published="never"),
    ],
)
def test_malformed_batches_are_refused(edit: Any) -> None:
    delivery = fixture("okta/lifecycle.batch.json")
    edit(delivery)
    with pytest.raises(MalformedPayload):
        envelopes("okta", InboundRequest(dumps(delivery), Headers({})))


def test_the_header_option(runtime: Runtime, client: FlaskClient) -> None:
    source_id = make_source(runtime, "okta", [SECRET], header="X-Okta-Secret")
    body = dumps(fixture("okta/lifecycle.batch.json"))
    assert (
        client.post(f"/webhooks/{source_id}", data=body, headers={"Authorization": SECRET}).status_code == 400
    )
    assert (
        client.post(f"/webhooks/{source_id}", data=body, headers={"X-Okta-Secret": SECRET}).status_code == 200
    )
    with pytest.raises(InvalidOptions):
        registry().get("okta").validate_options({"header": "two words"})
    with pytest.raises(InvalidOptions):
        registry().get("okta").validate_options({"secret": SECRET})


def test_an_okta_user_end_to_end(client: FlaskClient, admin_key: str, runtime: Runtime, drain: Any) -> None:
    source_id = make_source(runtime, "okta", [SECRET])
    for name in (
        "user.session.start",
        "user.lifecycle.delete.initiated",
        "user.account.update_profile",
        "lifecycle.batch",
        "user.lifecycle.suspend",
    ):
        response = client.post(
            f"/webhooks/{source_id}", data=request(name).body, headers={"Authorization": SECRET}
        )
        assert response.status_code == 200, response.get_json()
    drain()
    record = customer(client, admin_key, "k.johnson@nasa.example")
    assert record["past_emails"] == ["katherine@example.com"] and record["name"] == "Katherine G. Johnson"
    assert record["projects"]["default"]["params"] == {"okta_status": "suspended"}
    assert record["projects"]["default"]["status"] == "free"
    assert record["identities"] == [] and record["last_activity_at"] == "2024-06-03T08:00:00.777000Z"
