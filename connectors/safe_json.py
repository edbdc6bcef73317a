"""JSON that can be stored: finite numbers, and text without NUL or lone surrogates.

PostgreSQL's `text` and `jsonb` cannot hold U+0000, UTF-8 cannot encode a lone surrogate
(`"\\ud800"` parses in Python), and neither JSON nor `jsonb` has NaN or Infinity (Python's json
module reads the bare tokens `NaN`/`Infinity`, and `1e400` overflows to `inf`). One such value in a
stored event used to fail every batch that held it. Two policies, used where each fits:

- refuse (`loads`, `problem`): what a client sends us directly (the identify/ping API, the
  `standard` connector, which validates like the API) is rejected whole with the reason;
- scrub (`scrub`, `clean_text`): what a provider sends is kept with NUL and lone surrogates
  removed from its text; its numbers are still refused at the door (`loads`), because a
  non-finite number cannot be stored faithfully and no provider's JSON encoder emits one.

Nothing here imports Flask or the database: connectors, the worker and the web app share it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ESCAPED_NUL",
    "UnsafeJSON",
    "bad_text",
    "clean_text",
    "loads",
    "non_finite",
    "problem",
    "scrub",
    "storable_encoded",
    "storable_text",
]

# NUL and UTF-16 surrogate code points: a valid pair never reaches Python as two code points,
# so any surrogate in a `str` is a lone one.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


# Everything `problem` refuses has one of these spellings in JSON text: NUL and lone surrogates
# come as a `\u` escape (or a raw NUL or surrogate byte, which is not valid JSON anyway), NaN and
# Infinity as those tokens, and a float that overflows needs an exponent or over 308 digits.
# The lookahead lets the scan skip, in C, every byte that cannot start one of them (the
# alternation alone was tried at every position: 60 % slower on a typical identify body).
_MAYBE_UNSTORABLE = re.compile(
    rb"(?=[\\\x00\xedNI0-9])(?:\\u|\x00|\xed|NaN|Infinity|[0-9](?:[eE]|[0-9]{308}))"
)


# In `json.dumps(..., ensure_ascii=False)` output NUL is escaped as `\u0000` (text that merely
# spells it is walked for nothing) and a lone surrogate stays as itself, which only a text that is
# not all ASCII can hold: a substring test, and `bad_text` only for such text.
ESCAPED_NUL = "\\u0000"
_ESCAPED_NUL_BYTES = ESCAPED_NUL.encode()


class UnsafeJSON(ValueError):
    """The document is not JSON we can store; the message names where and why."""


def bad_text(value: str) -> bool:
    """True when `value` holds a NUL or a lone surrogate."""
    return _UNSTORABLE.search(value) is not None


def clean_text(value: str) -> str:
    """`value` without NUL and lone surrogates."""
    return _UNSTORABLE.sub("", value)


def _reject_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJSON(f"the number {text[:40]} is out of range")
    return value


def loads(body: bytes | str) -> Any:
    """Strict `json.loads`: no `NaN`/`Infinity` tokens, no number that overflows a double.
    Text is not checked here: callers choose to refuse (`problem`) or scrub (`scrub`)."""
    return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)


def _where(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def problem(value: Any) -> str | None:
    """The first unstorable thing inside `value` ("params.n: not a finite number"), or None.

    Most values hold nothing unstorable, and a whole provider event (a 6 KB Stripe event) costs
    ~125 us walked a Python call per value: it is first dumped by the C encoder and looked through
    (~35 us), and walked only when that finds something to name."""
    try:
        dumped = json.dumps(value, ensure_ascii=False, allow_nan=False, check_circular=False)
    except (TypeError, ValueError, RecursionError):
        return _walk(value, "")  # a non-finite number, or values JSON does not know: walk them
    suspect = ESCAPED_NUL in dumped or (not dumped.isascii() and bad_text(dumped))
    return _walk(value, "") if suspect else None


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return f"{path or 'value'}: contains a NUL character or a lone surrogate" if bad_text(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'value'}: not a finite number"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and bad_text(key):
                return f"{path or 'object'}: a key contains a NUL character or a lone surrogate"
            if (found := _walk(item, _where(path, key))) is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := _walk(item, f"{path}[{index}]")) is not None:
                return found
    return None


def non_finite(value: Any) -> str | None:
    """Where the first non-finite number inside `value` is ("" for `value` itself, `.plan`,
    `.tiers[2]`), or None when there is none. Only numbers: text is not looked at. The path is
    built only for the number found, so a clean value costs one isinstance test per item."""
    if isinstance(value, float):
        return None if math.isfinite(value) else ""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if (inner := non_finite(item)) is not None:
                return f".{key}{inner}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (inner := non_finite(item)) is not None:
                return f"[{index}]{inner}"
    return None


def storable_text(body: bytes) -> bool:
    """True when JSON text `body` cannot decode to anything `problem` refuses, so the walk over
    the decoded value can be skipped; False only means "walk it". Most bodies are plain text and
    numbers: one regex scan in C instead of a Python call per value."""
    return _MAYBE_UNSTORABLE.search(body) is None


def storable_encoded(text: bytes) -> bool:
    """`storable_text` for JSON text written by an encoder that refuses NaN, Infinity and lone
    surrogates (orjson; `json.dumps(..., allow_nan=False)` encoded as strict UTF-8) from values
    holding no overflowed float: only a NUL can be in there, and such an encoder escapes it. One
    substring test, where `storable_text` scans for every spelling."""
    return _ESCAPED_NUL_BYTES not in text


def scrub(value: Any) -> Any:
    """`value` with NUL and lone surrogates removed from every string (keys included) and
    non-finite numbers dropped (from objects and arrays alike; a bare one becomes None)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {
            clean_text(k) if isinstance(k, str) else k: scrub(v)
            for k, v in value.items()
            if not (isinstance(v, float) and not math.isfinite(v))
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value if not (isinstance(v, float) and not math.isfinite(v))]
    return value
