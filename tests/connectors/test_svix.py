"""The Svix / Standard Webhooks envelope helper shared by Clerk and `standard`: which header set
verifies, where the id and the time come from, and what a malformed message says."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from tributary.connectors.base import Headers, InboundRequest, MalformedPayload, VerificationFailed
from tributary.connectors.svix import read_message, verify_svix
from tributary.connectors.testkit import new_standard_secret, standard_webhook_headers

PREFIXES = ("svix", "webhook")


def test_the_first_header_set_present_gives_the_id_and_the_body_gives_the_time() -> None:
    body = {"type": "user.created", "timestamp": 1_700_000_000_000, "data": {"id": "u_1"}}
    headers = Headers({"webhook-id": "msg_webhook", "svix-id": "msg_svix"})
    message = read_message(body, headers, prefixes=PREFIXES, shape="bad")
    assert message.message_id == "msg_svix" and message.type == "user.created"
    assert message.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert message.data == {"id": "u_1"}
    only_webhook = read_message(body, Headers({"webhook-id": "msg_w"}), prefixes=PREFIXES, shape="bad")
    assert only_webhook.message_id == "msg_w"


def test_without_a_body_timestamp_the_signed_header_time_is_used() -> None:
    body = {"type": "ping", "data": {}}
    headers = Headers({"webhook-id": "msg_1", "webhook-timestamp": "1700000000"})
    message = read_message(body, headers, shape="bad")
    assert message.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)


@pytest.mark.parametrize(
    "body", [{}, {"type": "", "data": {}}, {"type": "x", "data": []}, {"type": 1, "data": {}}]
)
def test_a_message_without_type_or_data_object_is_malformed_with_the_callers_words(
    body: dict[str, object],
) -> None:
    with pytest.raises(MalformedPayload, match=r"^the body must be so$"):
        read_message(body, Headers({"webhook-id": "m"}), shape="the body must be so")


def test_a_missing_id_names_the_first_header_set() -> None:
    body = {"type": "ping", "timestamp": int(time.time()), "data": {}}
    with pytest.raises(MalformedPayload, match="missing svix-id header"):
        read_message(body, Headers(), prefixes=PREFIXES, shape="bad")
    with pytest.raises(MalformedPayload, match="missing webhook-id header"):
        read_message(body, Headers(), shape="bad")


def test_a_future_event_time_is_refused() -> None:
    body = {"type": "ping", "timestamp": int(time.time()) + 3600, "data": {}}
    with pytest.raises(MalformedPayload, match="in the future"):
        read_message(body, Headers({"webhook-id": "m"}), shape="bad")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_verify_svix_accepts_either_header_set(prefix: str) -> None:
    secret = new_standard_secret()
    raw = json.dumps({"type": "ping", "data": {}}).encode()
    headers = standard_webhook_headers(raw, secret, msg_id="msg_1", prefix=prefix)
    verify_svix(InboundRequest(raw, Headers(headers)), [secret], PREFIXES)
    with pytest.raises(VerificationFailed):
        verify_svix(InboundRequest(raw, Headers(headers)), [new_standard_secret()], PREFIXES)


def test_verify_svix_without_signatures_names_the_last_header_set() -> None:
    with pytest.raises(VerificationFailed, match="webhook-id, webhook-timestamp and webhook-signature"):
        verify_svix(InboundRequest(b"{}", Headers()), [new_standard_secret()], PREFIXES)
