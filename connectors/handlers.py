"""Executable mapping tables: `{provider event type: handler}`.

Every built-in connector dispatches `normalize` through such a table, and the handler's docstring
says what Tributary does with the event (anymail's per-provider mapping table, made executable).
`Connector.event_types`, which docs/connectors.md (`python -m tributary.connectors.doc`) and
`tributary connectors show` print, is derived from the table here, so the description of an event
type cannot drift from the code that handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["describe_handlers", "handler_doc"]


def handler_doc(handler: Callable[..., Any]) -> str:
    """The first paragraph of a handler's docstring, on one line."""
    doc = (handler.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def describe_handlers(handlers: Mapping[str, Callable[..., Any]]) -> dict[str, str]:
    """`Connector.event_types` from an executable `{event type: handler}` table."""
    return {event_type: handler_doc(handler) for event_type, handler in handlers.items()}
