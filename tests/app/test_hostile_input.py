"""Hostile input, one table: every case is a 4xx JSON error with the expected code, and nothing is
stored (no event, project, key, source or secret) nor, after a worker run, processed.

Classes covered: non-finite numbers (NaN, ±Infinity, ±1e400) anywhere in an API body; NUL and lone
surrogates in any stored string (names, param keys and values, message ids, slugs, secrets,
options); timestamps whose UTC instant overflows; NUL in path parameters and query strings;
signed `standard` and Stripe webhooks carrying the same; a chunked body over the size limit.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from tests.connectors.provider_fixtures import make_source
from tests.connectors.stripe_helpers import SECRET as STRIPE_SECRET
from tests.connectors.stripe_helpers import load, stripe_headers
from tributary.connectors.testkit import new_standard_secret, standard_webhook_headers
from tributary.models import ApiKey, Customer, Event, Project, Source
from tributary.runtime.process import Runtime

STANDARD_SECRET = new_standard_secret()
OVERFLOWING_TIMES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59")
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")


@dataclass
class Case:
    name: str
    method: str
    path: str  # `{standard}`/`{stripe}`/`{source}` are replaced by ids made for the case
    body: bytes | None = None
    status: int = 400
    code: str = "validation_error"
    headers: Callable[[bytes], dict[str, str]] = field(default=lambda body: {})
    chunked: bool = False


def _identify(raw: str) -> bytes:
    return ('{"email": "a@example.com", ' + raw + "}").encode()


def _standard(data: str, timestamp: str = '"2024-06-01T09:00:00Z"') -> bytes:
    return ('{"type": "identify", "timestamp": ' + timestamp + ', "data": {' + data + "}}").encode()


def _standard_signed(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        **standard_webhook_headers(body, STANDARD_SECRET, msg_id="msg_hostile"),
    }


def _stripe(
    edit: Callable[[dict[str, Any]], Any] | None = None, raw: tuple[bytes, bytes] | None = None
) -> bytes:
    event = load("customer.created")
    if edit:
        edit(event)
    body = json.dumps(event).encode()
    return body.replace(*raw) if raw else body


def _stripe_signed(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", **stripe_headers(body, STRIPE_SECRET)}


CASES: list[Case] = [
    # Non-finite numbers in identify bodies (Python's json and pydantic both read them).
    *(
        Case(f"identify params {t}", "POST", "/v1/identify", _identify('"params": {"n": ' + t + "}"))
        for t in NON_FINITE
    ),
    Case("identify nested 1e400", "POST", "/v1/identify", _identify('"params": {"n": {"deep": [1, 1e400]}}')),
    Case("identify params_once NaN", "POST", "/v1/identify", _identify('"params_once": {"n": NaN}')),
    # NUL and lone surrogates in stored strings.
    Case("identify name NUL", "POST", "/v1/identify", _identify('"name": "a\\u0000b"')),
    Case("identify param value NUL", "POST", "/v1/identify", _identify('"params": {"k": "a\\u0000b"}')),
    Case("identify param key NUL", "POST", "/v1/identify", _identify('"params": {"a\\u0000b": 1}')),
    Case("identify nested NUL", "POST", "/v1/identify", _identify('"params": {"k": {"x": ["\\u0000"]}}')),
    Case("identify params_unset NUL", "POST", "/v1/identify", _identify('"params_unset": ["a\\u0000"]')),
    Case(
        "identify name lone surrogate",
        "POST",
        "/v1/identify",
        _identify('"name": "a\\ud800b"'),
        code="malformed_json",
    ),
    Case(
        "identify value lone surrogate",
        "POST",
        "/v1/identify",
        _identify('"params": {"k": "\\udc00"}'),
        code="malformed_json",
    ),
    Case("identify message_id NUL", "POST", "/v1/identify", _identify('"message_id": "m\\u0000"')),
    Case("ping message_id NUL", "POST", "/v1/ping", _identify('"message_id": "\\u0000"')),
    Case("identify email NUL", "POST", "/v1/identify", b'{"email": "a\\u0000@example.com"}'),
    Case("identify project NUL", "POST", "/v1/identify", _identify('"project": "de\\u0000fault"')),
    # Timestamps valid in ISO 8601 whose UTC instant is outside Python's years 1-9999.
    *(
        Case(f"identify time {t}", "POST", "/v1/identify", _identify(f'"timestamp": "{t}"'))
        for t in OVERFLOWING_TIMES
    ),
    *(
        Case(f"ping time {t}", "POST", "/v1/ping", _identify(f'"timestamp": "{t}"'))
        for t in OVERFLOWING_TIMES
    ),
    # The admin API: names, slugs, secrets, options.
    Case("project slug NUL", "POST", "/v1/projects", b'{"slug": "a\\u0000"}'),
    Case("project name NUL", "POST", "/v1/projects", b'{"slug": "ok", "name": "a\\u0000b"}'),
    Case("key name NUL", "POST", "/v1/keys", b'{"scopes": ["read"], "name": "a\\u0000b"}'),
    Case("key project NUL", "POST", "/v1/keys", b'{"scopes": ["read"], "project": "\\u0000"}'),
    Case("key scope NUL", "POST", "/v1/keys", b'{"scopes": ["read\\u0000"]}'),
    Case("source name NUL", "POST", "/v1/sources", b'{"connector": "standard", "name": "a\\u0000b"}'),
    Case(
        "source secret NUL", "POST", "/v1/sources", b'{"connector": "standard", "secrets": ["whsec_\\u0000"]}'
    ),
    Case("source connector NUL", "POST", "/v1/sources", b'{"connector": "stan\\u0000dard"}'),
    Case(
        "source option NUL",
        "POST",
        "/v1/sources",
        b'{"connector": "stripe", "options": {"livemode": "\\u0000"}}',
    ),
    Case(
        "source option NaN", "POST", "/v1/sources", b'{"connector": "stripe", "options": {"livemode": NaN}}'
    ),
    Case("secret NUL", "POST", "/v1/sources/{standard}/secrets", b'{"secret": "whsec_a\\u0000b"}'),
    Case(
        "secret lone surrogate",
        "POST",
        "/v1/sources/{standard}/secrets",
        b'{"secret": "\\ud800"}',
        code="malformed_json",
    ),
    # Path parameters and query strings holding NUL.
    Case("GET source NUL", "GET", "/v1/sources/%00", status=404, code="source_not_found"),
    Case("DELETE source NUL", "DELETE", "/v1/sources/%00", status=404, code="source_not_found"),
    Case(
        "secret of source NUL", "POST", "/v1/sources/%00/secrets", b'{"secret": "x"}', 404, "source_not_found"
    ),
    Case(
        "DELETE secret NUL",
        "DELETE",
        "/v1/sources/{standard}/secrets/%00",
        status=404,
        code="secret_not_found",
    ),
    Case("DELETE key NUL", "DELETE", "/v1/keys/%00", status=404, code="key_not_found"),
    Case("GET customer NUL", "GET", "/v1/customers/%00", status=404, code="customer_not_found"),
    Case("timeline NUL", "GET", "/v1/customers/%00/timeline", status=404, code="customer_not_found"),
    Case("webhook source NUL", "POST", "/webhooks/%00", b"{}", 404, "source_not_found"),
    Case("sources ?project NUL", "GET", "/v1/sources?project=%00"),
    Case("customers ?email NUL", "GET", "/v1/customers?email=a%00b%40example.com"),
    # Signed `standard` webhooks: refused as the API refuses.
    *(
        Case(
            f"standard {t}",
            "POST",
            "/webhooks/{standard}",
            _standard('"email": "a@example.com", "params": {"n": ' + t + "}"),
            code="malformed_body",
            headers=_standard_signed,
        )
        for t in NON_FINITE
    ),
    Case(
        "standard name NUL",
        "POST",
        "/webhooks/{standard}",
        _standard('"email": "a@example.com", "name": "\\u0000"'),
        code="malformed_body",
        headers=_standard_signed,
    ),
    Case(
        "standard type NUL",
        "POST",
        "/webhooks/{standard}",
        b'{"type": "a\\u0000", "timestamp": "2024-06-01T09:00:00Z", "data": {}}',
        code="malformed_body",
        headers=_standard_signed,
    ),
    *(
        Case(
            f"standard time {t}",
            "POST",
            "/webhooks/{standard}",
            _standard('"email": "a@example.com"', f'"{t}"'),
            code="malformed_body",
            headers=_standard_signed,
        )
        for t in OVERFLOWING_TIMES
    ),
    # Signed Stripe webhooks: numbers JSON cannot carry, times that overflow.
    *(
        Case(
            f"stripe {t}",
            "POST",
            "/webhooks/{stripe}",
            _stripe(raw=(b'"livemode": false', b'"livemode": ' + t.encode())),
            code="malformed_body",
            headers=_stripe_signed,
        )
        for t in NON_FINITE
    ),
    *(
        Case(
            f"stripe created {t}",
            "POST",
            "/webhooks/{stripe}",
            _stripe(lambda e, t=t: e.update(created=t)),
            code="malformed_body",
            headers=_stripe_signed,
        )
        for t in OVERFLOWING_TIMES
    ),
    # A chunked body has no Content-Length: over the limit is still a 413, not a truncated 400.
    Case(
        "chunked identify over the limit",
        "POST",
        "/v1/identify",
        _identify('"name": "' + "x" * (1 << 20) + '"'),
        413,
        "payload_too_large",
        chunked=True,
    ),
    Case(
        "chunked webhook over the limit",
        "POST",
        "/webhooks/{standard}",
        b"{" + b" " * (1 << 20) + b"}",
        413,
        "payload_too_large",
        chunked=True,
    ),
]


def _counts(runtime: Runtime) -> dict[str, int]:
    with runtime.db.session() as session:
        counts = {
            model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Event, Project, ApiKey, Source, Customer)
        }
        counts["secrets"] = sum(len(s.secrets) for s in session.scalars(select(Source)))
        return counts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_a_4xx_and_stores_nothing(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], case: Case
) -> None:
    ids = {
        "standard": make_source(runtime, "standard", [STANDARD_SECRET]),
        "stripe": make_source(runtime, "stripe", [STRIPE_SECRET]),
    }
    before = _counts(runtime)
    body = case.body or b""
    headers = {**admin, "Content-Type": "application/json", **case.headers(body)}
    extra: dict[str, Any] = {}
    if case.chunked:
        headers["Transfer-Encoding"] = "chunked"
        extra = {"input_stream": io.BytesIO(body), "environ_overrides": {"wsgi.input_terminated": True}}
    else:
        extra = {"data": body}
    response = client.open(case.path.format(**ids), method=case.method, headers=headers, **extra)
    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    error = response.get_json()["error"]
    assert error["code"] == case.code and error["message"], error
    assert _counts(runtime) == before
    drain()
    assert _counts(runtime) == before


def test_a_standard_webhook_that_passes_is_applied(
    client: FlaskClient, runtime: Runtime, drain: Callable[[], None]
) -> None:
    """The control for the table's webhook rows: the same signing, a clean body, stored and applied."""
    source = make_source(runtime, "standard", [STANDARD_SECRET])
    body = _standard('"email": "a@example.com", "params": {"n": 1e300}')
    response = client.post(f"/webhooks/{source}", data=body, headers=_standard_signed(body))
    assert response.status_code == 200 and response.get_json()["received"] == 1
    drain()
    with runtime.db.session() as session:
        assert [e.status for e in session.scalars(select(Event))] == ["processed"]


def test_year_one_in_utc_is_a_valid_time(client: FlaskClient, admin: dict[str, str]) -> None:
    """The overflow cases are refused for their offset, not their year."""
    response = client.post(
        "/v1/identify", json={"email": "a@example.com", "timestamp": "0001-01-01T00:00:00Z"}, headers=admin
    )
    assert response.status_code == 202


def test_the_json_encoder_never_writes_nan(app: Flask) -> None:
    """A non-finite number reaching a response (data stored before ingest refused it) is a logged
    500 with a valid JSON body, never the bare `NaN` token."""
    app.add_url_rule("/test-nan", "test_nan", lambda: jsonify(value=float("nan")))
    response = app.test_client().get("/test-nan")
    assert response.status_code == 500
    assert json.loads(response.get_data(as_text=True), parse_constant=pytest.fail) == {
        "error": {"code": "internal_error", "message": "an internal error occurred"}
    }
    with pytest.raises(ValueError, match="JSON compliant"):
        app.json.dumps({"n": float("inf")})


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (b'{"email": "u1@example.com", "params": {"n": NaN}}', "not strict JSON"),
        (b'{"email": "u1@example.com", "params": {"n": 1e400}}', "not strict JSON"),
        (b'{"email": "u1@example.com", "name": "a\\u0000b"}', "name: contains a NUL"),
        (b'{"email": "u1@example.com", "params": {"k": "\\ud800"}}', "params.k: contains a NUL"),
    ],
)
def test_an_unstorable_api_event_stored_before_ingest_refused_it_fails_alone(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stored: bytes,
    reason: str,
) -> None:
    ids = []
    for i in range(3):
        response = client.post(
            "/v1/identify", json={"email": f"u{i}@example.com", "name": "U"}, headers=admin
        )
        ids.append(response.get_json()["event_id"])
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == ids[1]).values(body=stored))
    drain()
    with runtime.db.session() as session:
        events = {e.id: e for e in session.scalars(select(Event))}
        assert [events[i].status for i in ids] == ["processed", "failed", "processed"]
        assert reason in (events[ids[1]].last_error or "")
        assert session.scalar(select(func.count()).select_from(Customer)) == 2
