"""storable_text (connectors/safe_json.py) lets validation skip the walk for unstorable values only
when the JSON text shows none can be inside; everything `problem` refuses is still refused, and its
own fast path (one C-encoded dump) answers what the walk answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tributary.connectors.identify import IdentifyRequest, PingRequest, validate_message
from tributary.connectors.safe_json import _walk, loads, problem, storable_text

_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ud800", "\udfff"]))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


# Values as connectors build them: JSON's, plus tuples, non-text keys and values JSON does not know.
_built = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.datetimes() | st.just("\\u0000"),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_text | st.integers() | st.booleans(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(_built)
def test_problem_answers_exactly_what_the_walk_answers(value: Any) -> None:
    assert problem(value) == _walk(value, "")


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"a": ["ok", "x\x00"]}, "a[1]: contains a NUL character or a lone surrogate"),
        ({"a": {"b": "\ud800"}}, "a.b: contains a NUL character or a lone surrogate"),
        ({"a": ("\udfff",)}, "a[0]: contains a NUL character or a lone surrogate"),
        ({"k\x00": 1}, "object: a key contains a NUL character or a lone surrogate"),
        ({"\udc80": 1}, "object: a key contains a NUL character or a lone surrogate"),
        ([1, {"n": float("nan")}], "[1].n: not a finite number"),
        ({"n": float("-inf"), "when": datetime(2026, 1, 1)}, "n: not a finite number"),
        ({"text": "spells \\u0000, holds none", 1: None, "when": datetime(2026, 1, 1)}, None),
    ],
)
def test_problem_names_each_unstorable_value_the_fast_path_sees(value: Any, found: str | None) -> None:
    assert problem(value) == found


@settings(max_examples=500, deadline=None)
@given(_json)
def test_text_passed_as_storable_never_decodes_to_an_unstorable_value(value: Any) -> None:
    for ensure_ascii in (True, False):
        try:
            body = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        except ValueError:
            continue
        if storable_text(body):
            assert problem(json.loads(body)) is None, body


@pytest.mark.parametrize(
    "params",
    [
        '{"n": NaN}',
        '{"n": -Infinity}',
        '{"n": 1e400}',
        '{"n": 1' + "0" * 400 + ".5}",
        '{"s": "a\\u0000b"}',
        '{"s": "\\ud800"}',
        '{"a\\u0000": 1}',
    ],
)
def test_unstorable_messages_are_still_refused(params: str) -> None:
    body = ('{"email": "ada@example.com", "params": ' + params + "}").encode()
    assert not storable_text(body)
    with pytest.raises(ValidationError):
        validate_message(IdentifyRequest, body)


def test_a_plain_message_validates_on_the_fast_path() -> None:
    body = b'{"email": "Ada@Example.com", "name": "Ada", "params": {"plan": "pro", "seats": 3, "x": 1.5}}'
    assert storable_text(body)
    message = validate_message(IdentifyRequest, body)
    assert message.email == "ada@example.com" and message.params == {"plan": "pro", "seats": 3, "x": 1.5}
    assert validate_message(PingRequest, b'{"email": "a@example.com"}').email == "a@example.com"
    assert loads(body)["params"]["seats"] == 3
