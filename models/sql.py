"""Dialect-aware SQL helpers for the statements that must be one round trip on every backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(dialect_name: str, table: Any) -> Any:
    """An INSERT that understands ON CONFLICT (and RETURNING) on the named backend."""
    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(table)


def dialect_insert(session: Session, table: Any) -> Any:
    """`insert_for` on the session's backend."""
    return insert_for(session.get_bind().dialect.name, table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
