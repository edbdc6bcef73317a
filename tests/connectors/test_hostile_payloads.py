"""Provider payloads that carry what cannot be stored. Policy (connectors/safe_json.py): NUL and
lone surrogates are removed from provider text, so a signed delivery carrying them is stored and
applied; `NaN`, `Infinity` and numbers that overflow a double are not JSON any provider writes, so
a delivery carrying one is refused with a 400 (the provider sees it) and nothing is stored."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from tests.connectors.test_auth0 import Auth0Case
from tests.connectors.test_clerk import ClerkCase
from tests.connectors.test_mapping import MappingCase
from tests.connectors.test_okta import OktaCase
from tests.connectors.test_stripe import StripeCase
from tests.connectors.test_supabase import AuthHookCase, DatabaseWebhookCase
from tests.connectors.test_workos import WorkOSCase
from tributary.app.testing import AppHarness
from tributary.connectors import safe_json
from tributary.connectors.base import MalformedPayload
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import load_json, parse_time
from tributary.connectors.testkit import WebhookCase
from tributary.models import Event
from tributary.workers.normalize import storable_change

PROVIDERS: list[WebhookCase] = [
    Auth0Case(),
    ClerkCase(),
    MappingCase(),
    OktaCase(),
    StripeCase(),
    DatabaseWebhookCase(),
    AuthHookCase(),
    WorkOSCase(),
]
IDS = [f"{type(case).__name__}" for case in PROVIDERS]
POISON = "\u0000\ud800"


def _poison(value: Any) -> Any:
    """Every string (keys too) with a NUL and a lone surrogate inserted, plus a poisoned key."""
    if isinstance(value, str):
        return value[:1] + POISON + value[1:]
    if isinstance(value, dict):
        return {_poison(k): _poison(v) for k, v in value.items()} | {f"x{POISON}": f"y{POISON}"}
    if isinstance(value, list):
        return [_poison(v) for v in value]
    return value


def _documents(body: bytes) -> list[Any]:
    try:
        return [json.loads(body)]
    except ValueError:  # JSON lines (Auth0 log streams)
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def _encode(documents: list[Any], original: bytes) -> bytes:
    if len(documents) == 1 and not original.lstrip().startswith(b"{\n{"):
        return json.dumps(documents[0]).encode()
    return b"\n".join(json.dumps(d).encode() for d in documents)


def _deliver(harness: AppHarness, case: WebhookCase, edit: Any) -> tuple[str, int, Any]:
    source_id = harness.create_source(case.connector, secrets=[case.secret], options=case.options)
    event_id = case.new_event_id()
    clean = case.body(event_id=event_id, timestamp=int(datetime.now(UTC).timestamp()))
    body = edit(clean)
    status, answer = harness.post(source_id, case.request(body, event_id=event_id))
    return source_id, status, answer


@pytest.mark.parametrize("case", PROVIDERS, ids=IDS)
def test_nul_and_lone_surrogates_in_provider_text_are_scrubbed_and_applied(
    tributary_harness: AppHarness, case: WebhookCase
) -> None:
    def poisoned(body: bytes) -> bytes:
        return _encode([_poison(d) for d in _documents(body)], body)

    source_id, status, answer = _deliver(tributary_harness, case, poisoned)
    assert status == 200, answer
    assert answer["received"] >= 1
    tributary_harness.drain()
    with tributary_harness.runtime.db.session() as session:
        events = list(session.scalars(select(Event).where(Event.source_id == source_id)))
    assert events and {e.status for e in events} == {case.expected_status}, [e.last_error for e in events]
    for event in events:
        # The delivery is kept as received (Supabase's redacted copy aside); its parsed form is clean.
        assert b"\\u0000" in event.body or case.connector == "supabase"
        assert safe_json.problem(event.payload) is None
        assert safe_json.problem([event.provider_event_id, event.type, event.email]) is None


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("case", PROVIDERS, ids=IDS)
def test_non_finite_numbers_are_refused_and_nothing_is_stored(
    tributary_harness: AppHarness, case: WebhookCase, token: str
) -> None:
    def with_number(body: bytes) -> bytes:
        lines = body.splitlines() if not body.lstrip().startswith(b"[") else [body]
        first = lines[0].lstrip()
        # A number inside the first JSON object or array of the delivery.
        lines[0] = first[:1] + b'"poison": ' + token.encode() + b", " + first[1:]
        if first.startswith(b"["):
            lines[0] = b"[" + token.encode() + b", " + first[1:]
        return b"\n".join(lines)

    source_id, status, answer = _deliver(tributary_harness, case, with_number)
    assert status == 400 and answer["error"]["code"] == "malformed_body", answer
    assert tributary_harness.events(source_id) == []


# -- the readers and the scrubber on their own --------------------------------------------------------


@pytest.mark.parametrize("raw", ["NaN", "-Infinity", "[1, Infinity]", '{"a": {"b": 1e400}}', "-1e400"])
def test_strict_json_refuses_non_finite_numbers(raw: str) -> None:
    with pytest.raises(ValueError, match=r"not a JSON value|out of range"):
        safe_json.loads(raw)
    with pytest.raises(MalformedPayload):
        load_json(raw)


def test_strict_json_keeps_every_finite_number() -> None:
    assert safe_json.loads("[1e308, -1e-320, 123456789012345678901234567890, 0.1]") == [
        1e308,
        -1e-320,
        123456789012345678901234567890,
        0.1,
    ]


def test_problem_names_where() -> None:
    assert safe_json.problem({"a": [1, {"b": math.inf}]}) == "a[1].b: not a finite number"
    assert safe_json.problem({"a": "x\x00"}) == "a: contains a NUL character or a lone surrogate"
    assert safe_json.problem({"k\ud800": 1}) == "object: a key contains a NUL character or a lone surrogate"
    assert safe_json.problem({"fine": ["text", 1.5, None, True, 10**40]}) is None


def test_scrub_cleans_text_and_drops_non_finite_numbers() -> None:
    dirty = {"a\x00": "b\ud800c", "n": math.nan, "list": [1, math.inf, "\x00x"], "deep": {"m": -math.inf}}
    assert safe_json.scrub(dirty) == {"a": "bc", "list": [1, "x"], "deep": {}}
    assert safe_json.problem(safe_json.scrub(dirty)) is None


def test_load_json_scrubs_unless_asked_not_to() -> None:
    raw = '{"name": "Ada\\u0000 Lovelace\\udc00"}'
    assert load_json(raw) == {"name": "Ada Lovelace"}
    assert load_json(raw, scrub=False) == {"name": "Ada\x00 Lovelace\udc00"}


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"])
def test_times_whose_utc_instant_overflows_are_malformed(value: str) -> None:
    with pytest.raises(MalformedPayload, match="outside the years"):
        parse_time(value)


def test_a_connectors_changes_are_made_storable_in_the_worker() -> None:
    """Whatever a connector (a third-party one included) puts in a change is scrubbed before it
    is applied: text loses NUL and lone surrogates, params lose non-finite numbers."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    change = CustomerChange(
        occurred_at=at,
        email="a\x00@example.com",
        identity=IdentityRef("acme", "u\x001"),
        name="Ada\ud800",
        status="paid\x00",
        params={"n": math.nan, "k\x00": "v\x00", "ok": 1.5},
        params_once={"m": [math.inf, 1]},
        params_unset=("x\x00",),
    )
    clean = storable_change(change)
    assert clean.email == "a@example.com" and clean.name == "Ada" and clean.status == "paid"
    assert clean.identity == IdentityRef("acme", "u1")
    assert clean.params == {"k": "v", "ok": 1.5} and clean.params_once == {"m": [1]}
    assert clean.params_unset == ("x",)
    untouched = CustomerChange(occurred_at=at, email="a@example.com", params={"n": 1})
    assert storable_change(untouched) is untouched


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "Ada\\u0000 Lovelace\\udc00"}',  # escapes in UTF-8
        b'{"name": "Ada Lovelace\xed\xb0\x80"}',  # an encoded lone surrogate, read with surrogatepass
        '{"name": "Ada\\u0000 Lovelace\\udc00"}'.encode("utf-16"),  # the escapes in UTF-16
        '{"name": "Ada\\u0000 Lovelace\\udc00"}'.encode("utf-32-le"),
    ],
)
def test_load_json_scrubs_bodies_in_every_encoding_json_reads(raw: bytes) -> None:
    assert load_json(raw) == {"name": "Ada Lovelace"}


def test_load_json_leaves_a_clean_body_as_loaded() -> None:
    raw = '{"name": "Åda Lovelace", "n": [1, 2.5, {"k": "v"}]}'.encode()
    assert load_json(raw) == json.loads(raw)
