"""What the domain services (sources, accounts, customers and their timeline, erasure, events,
replays, imports, failed jobs) refuse, in their own words: a stable `code`, a message for people
and optional `details`. They know nothing of HTTP or the terminal: app/errors.py maps them to the
API's JSON errors and app/cli/__init__.py to a CLI error, each in one place."""

from __future__ import annotations

from typing import Any

__all__ = ["Conflict", "DomainError", "Forbidden", "Invalid", "NotFound"]


class DomainError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class Invalid(DomainError):
    """The input is malformed or impossible (a bad option, cursor, filter or secret)."""


class Forbidden(DomainError):
    """The caller may not act on what it names (a key bound to another project)."""


class NotFound(DomainError):
    """What the input names does not exist (or is not visible to the caller)."""


class Conflict(DomainError):
    """The request is valid but the current state refuses it (a slug taken, a job gone)."""
