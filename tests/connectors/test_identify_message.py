"""An identify message names each param key in at most one of `params`, `params_once` and
`params_unset` (connectors/identify.py): which one would win is not the sender's to guess."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tributary.connectors.identify import IdentifyRequest


@pytest.mark.parametrize(
    ("fields", "clash"),
    [
        ({"params": {"plan": "pro"}, "params_once": {"plan": "free"}}, "['plan']"),
        ({"params": {"plan": "pro", "seats": 2}, "params_unset": ["seats"]}, "['seats']"),
        ({"params_once": {"a": 1, "b": 2}, "params_unset": ["b", "a"]}, "['a', 'b']"),
    ],
)
def test_a_key_in_two_of_the_param_fields_is_refused(fields: dict[str, Any], clash: str) -> None:
    with pytest.raises(ValidationError, match=r"only one of params, params_once, params_unset") as info:
        IdentifyRequest.model_validate({"email": "ada@example.com", **fields})
    assert clash in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"params": {"plan": "pro"}},
        {"params": {"plan": "pro"}, "params_once": {"signup": "web"}, "params_unset": ["trial"]},
        {"params_unset": ["trial"]},
    ],
)
def test_distinct_keys_in_each_field_are_accepted(fields: dict[str, Any]) -> None:
    message = IdentifyRequest.model_validate({"email": "ada@example.com", **fields})
    assert message.params == fields.get("params", {})
    assert message.params_unset == fields.get("params_unset", [])
