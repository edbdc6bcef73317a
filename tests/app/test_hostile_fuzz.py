"""Random hostile identify bodies (NaN, ±Infinity, 1e400, NUL, lone surrogates, deep nesting, in
names, param keys and values): each is answered 202 or 400, never anything else, and every
accepted one is then applied by the worker. Nothing accepted can fail or block a batch."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tributary.models import Event
from tributary.runtime.process import Runtime

pytestmark = pytest.mark.fuzz

# Stands for `1e400` in the generated value; replaced in the JSON text (no float can be it).
OVERFLOW_MARK = 7.125e77
OVERFLOW_TEXT = json.dumps(OVERFLOW_MARK)

_hostile_chars = st.sampled_from(["\x00", "\ud800", "\udfff", "\x7f", '"', "\\", "é", "😀"])
texts = st.text(_hostile_chars | st.characters(), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.just(OVERFLOW_MARK)
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def _body(index: int, name: Any, params: dict[str, Any]) -> bytes:
    payload = {"email": f"u{index}@example.com", "name": name, "params": params}
    # json.dumps writes NaN/Infinity tokens and escapes lone surrogates: what a hostile client sends.
    return json.dumps(payload).replace(OVERFLOW_TEXT, "1e400").encode()


def test_random_hostile_identify_bodies_are_202_or_400_and_every_202_is_applied(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    answers: Counter[int] = Counter()
    accepted: list[str] = []

    @seed(20261201)
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(name=st.none() | texts, params=st.dictionaries(texts, values, max_size=4))
    def post(name: Any, params: dict[str, Any]) -> None:
        body = _body(sum(answers.values()), name, params)
        response = client.post(
            "/v1/identify", data=body, headers={**admin, "Content-Type": "application/json"}
        )
        assert response.status_code in (202, 400), response.get_data(as_text=True)
        answers[response.status_code] += 1
        if response.status_code == 202:
            accepted.append(response.get_json()["event_id"])
        else:
            assert response.get_json()["error"]["code"] in {"validation_error", "malformed_json"}

    post()
    assert answers[202] > 10 and answers[400] > 10, answers  # both sides were exercised
    drain()
    with runtime.db.session() as session:
        statuses = Counter(e.status for e in session.scalars(select(Event)))
    assert statuses == {"processed": len(accepted)}
