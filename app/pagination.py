"""Keyset pagination with signed, query-bound cursors.

A cursor names the last row a page returned: which *phase* it was in, its sort value and its id.
Rows whose sort value is NULL form their own phase, read after the non-NULL rows when sorting
newest first and before them when sorting oldest first (NULL counts as "never", the oldest), so
each phase is a plain index range scan and NULLs are neither lost nor repeated between pages.

Cursors are signed with the app's secret and carry a fingerprint of the query that produced them:
a cursor edited by hand, or replayed against other filters, is a 400 rather than a silently wrong page.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import literal, tuple_
from sqlalchemy.orm import QueryableAttribute, Session

from tributary.app.domain_errors import Invalid
from tributary.models.base import from_micros, to_micros

if TYPE_CHECKING:
    from sqlalchemy import Row, Select

    AnyRow = Row[*tuple[Any, ...]]
    AnySelect = Select[*tuple[Any, ...]]

VALUES = "v"
NULLS = "n"
MAX_CURSOR_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the phase, the sort value (microseconds, None in the NULL phase) and the id."""

    phase: str
    value: int | None
    key: str | int


@dataclass(frozen=True, slots=True)
class SortSpec:
    column: QueryableAttribute[Any]
    # Unique, so (value, tiebreak) is a total order and ties in the sort value paginate cleanly.
    tiebreak: QueryableAttribute[Any]
    descending: bool
    nullable: bool

    @property
    def phases(self) -> tuple[str, ...]:
        if not self.nullable:
            return (VALUES,)
        return (VALUES, NULLS) if self.descending else (NULLS, VALUES)


def fingerprint(*parts: Any) -> str:
    """A short digest of everything a cursor must not outlive (filters, sort, tenant)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _invalid(message: str) -> Invalid:
    return Invalid("invalid_cursor", message)


class CursorCodec:
    """Signs positions for one purpose (customer list, timeline, ...)."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=f"tributary.cursor.{purpose}")

    def encode(self, position: Position, binding: str) -> str:
        token: str = self._serializer.dumps([binding, position.phase, position.value, position.key])
        return token

    def decode(self, token: str, binding: str, spec: SortSpec) -> Position:
        if len(token) > MAX_CURSOR_CHARS:
            raise _invalid("the cursor is not one this server issued")
        try:
            data = self._serializer.loads(token)
        except (BadData, ValueError, UnicodeError):
            raise _invalid("the cursor is not one this server issued") from None
        if not (isinstance(data, list) and len(data) == 4):
            raise _invalid("the cursor is not one this server issued")
        bound, phase, value, key = data
        if bound != binding:
            raise _invalid("the cursor belongs to a different query; repeat the same filters and sort")
        value_ok = value is None if phase == NULLS else type(value) is int
        if phase not in spec.phases or not value_ok or type(key) not in (str, int):
            raise _invalid("the cursor is not one this server issued")
        return Position(phase, value, key)


def fetch_page(
    session: Session, base: AnySelect, spec: SortSpec, limit: int, after: Position | None
) -> tuple[list[AnyRow], Position | None]:
    """Up to `limit` rows of `base` in `spec` order after `after`, and the position to resume from
    (None on the last page). Rows are `base`'s columns followed by the sort value and the tiebreak."""
    phases = spec.phases
    start = phases.index(after.phase) if after is not None else 0
    rows: list[AnyRow] = []
    for index, phase in enumerate(phases[start:]):
        resume = after if index == 0 else None
        stmt = base.add_columns(spec.column, spec.tiebreak)
        if phase == VALUES:
            if spec.nullable:
                stmt = stmt.where(spec.column.is_not(None))
            if resume is not None and resume.value is not None:
                here = tuple_(spec.column, spec.tiebreak)
                there = tuple_(
                    literal(from_micros(resume.value), spec.column.type),
                    literal(resume.key, spec.tiebreak.type),
                )
                stmt = stmt.where(here < there if spec.descending else here > there)
            order = [spec.column, spec.tiebreak]
        else:
            stmt = stmt.where(spec.column.is_(None))
            if resume is not None:
                mark = literal(resume.key, spec.tiebreak.type)
                stmt = stmt.where(spec.tiebreak < mark if spec.descending else spec.tiebreak > mark)
            # The column is NULL throughout, so it does not change the order; naming it lets the
            # (…, column, tiebreak) index deliver the rows in order (PostgreSQL sorted every NULL row).
            order = [spec.column, spec.tiebreak]
        stmt = stmt.order_by(*(c.desc() if spec.descending else c.asc() for c in order))
        rows.extend(session.execute(stmt.limit(limit + 1 - len(rows))).all())
        if len(rows) > limit:
            break
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    value, key = last[-2], last[-1]
    position = Position(NULLS, None, key) if value is None else Position(VALUES, to_micros(value), key)
    return rows[:limit], position
