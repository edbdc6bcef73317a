"""CSV files: one person per row, validated in full before anything is written.

Columns: `email` (required), `name`, `status`, `params.<key>` (a cell is parsed as JSON when it
is JSON, so `42`, `true` and `{"seats": 3}` keep their types; other text stays text; an empty
cell sets nothing), `created_at` (ISO 8601: the row's time, which orders it against webhooks;
without it, the time the import started). Unknown columns refuse the whole file, since a typo
would otherwise drop data silently.

The file is read twice as a stream (validate, then import), never held in memory whole. Each
row's dedup digest covers its content but not a defaulted time, so importing the same file again
stores nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from tributary.connectors.changes import CustomerChange
from tributary.connectors.event_rules import InvalidEmail, normalize_email, seconds_ahead
from tributary.connectors.identify import PARAM_KEY, SLUG
from tributary.workers.importers.items import ImportEvent, Listed

__all__ = ["BadRow", "CsvInvalid", "check_csv", "csv_items"]

# The identify API's own rules for a status and a param key.
STATUS = re.compile(SLUG)
MAX_NAME = 400
MAX_BAD_ROWS = 100
FIXED_COLUMNS = ("email", "name", "status", "created_at")

csv.field_size_limit(1024 * 1024)


@dataclass(frozen=True, slots=True)
class BadRow:
    row: int  # line number as a spreadsheet shows it (the header is row 1)
    reason: str


class CsvInvalid(Exception):
    """The file cannot be imported: a bad header, or bad rows (all of them, up to a limit)."""

    def __init__(self, message: str, bad_rows: list[BadRow] | None = None, total_bad: int = 0) -> None:
        super().__init__(message)
        self.bad_rows = bad_rows or []
        self.total_bad = total_bad or len(self.bad_rows)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _cell_value(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


def _header(reader: Any) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise CsvInvalid("the file is empty: expected a header row with at least an email column") from None
    columns = [c.strip() for c in header]
    unknown = [c for c in columns if c not in FIXED_COLUMNS and not c.startswith("params.")]
    if unknown:
        raise CsvInvalid(
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}: expected email, name, status, "
            "created_at and params.<key>"
        )
    if "email" not in columns:
        raise CsvInvalid("the header has no email column")
    if len(set(columns)) != len(columns):
        raise CsvInvalid("a column is named twice in the header")
    for column in columns:
        if column.startswith("params.") and not PARAM_KEY.match(column.removeprefix("params.")):
            raise CsvInvalid(f"column {column!r}: a param key is 1-128 printable characters without quotes")
    return columns


def _change(columns: list[str], cells: list[str], default_time: datetime) -> tuple[CustomerChange, str]:
    """The row as a change, and the digest of its content; raises ValueError with the reason."""
    if len(cells) != len(columns):
        raise ValueError(f"has {len(cells)} cells, the header has {len(columns)}")
    values = dict(zip(columns, (c.strip() for c in cells), strict=True))
    try:
        email = normalize_email(values["email"])
    except InvalidEmail as exc:
        reason = str(exc).removeprefix("not a valid email address: ")
        raise ValueError(f"email {values['email']!r} is not valid: {reason}") from None
    name = values.get("name") or None
    if name is not None and len(name) > MAX_NAME:
        raise ValueError(f"name is longer than {MAX_NAME} characters")
    status = values.get("status") or None
    if status is not None and not STATUS.match(status):
        raise ValueError(f"status {status!r} is not a slug such as paid")
    occurred_at = default_time
    if stamp := values.get("created_at"):
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            raise ValueError(f"created_at {stamp!r} is not ISO 8601 (2026-11-21T09:30:00Z)") from None
        occurred_at = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if seconds_ahead(occurred_at, datetime.now(UTC)) is not None:
            raise ValueError(f"created_at {stamp!r} is in the future")
    params: dict[str, Any] = {}
    for column, text in values.items():
        if column.startswith("params.") and text:
            key = column.removeprefix("params.")
            try:
                value = _cell_value(text)
            except ValueError as exc:
                raise ValueError(f"{column} {exc}") from None
            if value is None:
                raise ValueError(f"{column} is null; leave the cell empty to set nothing")
            params[key] = value
    content = json.dumps([email, name, status, values.get("created_at") or "", params], sort_keys=True)
    change = CustomerChange(occurred_at=occurred_at, email=email, name=name, status=status, params=params)
    return change, hashlib.sha256(content.encode()).hexdigest()[:32]


def _rows(opener: Callable[[], IO[str]]) -> Iterator[tuple[int, list[str], list[str]]]:
    with opener() as handle:
        reader = csv.reader(handle)
        columns = _header(reader)
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            yield reader.line_num, columns, cells


def check_csv(opener: Callable[[], IO[str]]) -> int:
    """Validate every row; returns how many there are, or raises `CsvInvalid` naming bad rows."""
    bad: list[BadRow] = []
    total_bad = count = 0
    now = datetime.now(UTC)
    try:
        for line, columns, cells in _rows(opener):
            count += 1
            try:
                _change(columns, cells, now)
            except ValueError as exc:
                total_bad += 1
                if len(bad) < MAX_BAD_ROWS:
                    bad.append(BadRow(line, str(exc)))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CsvInvalid(f"the file is not readable CSV (UTF-8): {exc}") from None
    if total_bad:
        raise CsvInvalid(f"{total_bad} bad row(s); nothing was imported", bad, total_bad)
    return count


def csv_items(opener: Callable[[], IO[str]], started_at: datetime) -> Iterator[Listed]:
    """The rows as import events (after `check_csv` accepted the file)."""
    for line, columns, cells in _rows(opener):
        change, digest = _change(columns, cells, started_at)
        event = ImportEvent(
            object_id=f"row_{digest}",
            type="csv.row",
            occurred_at=change.occurred_at,
            payload={"changes": [change.to_json()]},
            changes=(),  # the digest above identifies the row; see the module docstring
            email=change.email,
        )
        yield Listed("csv", str(line), (event,))
