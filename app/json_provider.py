"""The app's JSON encoder: strict JSON only.

Python's json module writes NaN and Infinity as the bare tokens `NaN`/`Infinity`, which no JSON
parser of another language accepts. Ingest refuses non-finite numbers, but a response must not
depend on that: a value that cannot be written as JSON is a server error (logged, answered with
the usual 500 JSON body), never an invalid document.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider


class StrictJSONProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)
