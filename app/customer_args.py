"""Customer list arguments: a query string (name -> values) validated into filters, a limit and a cursor.

Shared by `GET /v1/customers…`, the dashboard's customer list and `tributary customers …`, so they
accept the same arguments and report every problem at once (a 400 `validation_error` with one
detail per field). `app/customer_query.py` turns the result into SQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tributary.app.domain_errors import Invalid
from tributary.app.schemas import PARAM_KEY, PROJECT_SLUG, SLUG, normalize_email

SORTS = ("-last_activity_at", "last_activity_at", "-created_at", "created_at")
DEFAULT_SORT = "-last_activity_at"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
PARAM_PREFIX = "params."
MAX_PARAM_FILTERS = 20
MAX_Q_CHARS = 200
MAX_VALUE_CHARS = 1000
LIST_ARGS = ("project", "status", "email", "q", "active_since", "created_since", "sort", "limit", "cursor")
# SQLite binds integers as 64-bit; larger JSON numbers could not be compared the same on both backends.
INT64 = 2**63

ParamValue = str | int | float | bool
# No database stores these in text (PostgreSQL refuses NUL, UTF-8 has no lone surrogates).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class CustomerFilters:
    project: str | None = None
    status: str | None = None
    email: str | None = None
    q: str | None = None
    params: tuple[tuple[str, ParamValue], ...] = ()
    active_since: datetime | None = None
    created_since: datetime | None = None
    sort: str = DEFAULT_SORT


@dataclass(frozen=True, slots=True)
class ListRequest:
    filters: CustomerFilters
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass(slots=True)
class Problems:
    details: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, message: str, kind: str = "value_error") -> None:
        self.details.append({"field": name, "message": message, "type": kind})

    def raise_any(self) -> None:
        if self.details:
            raise Invalid("validation_error", "the query string is invalid", self.details)


def parse_param_value(raw: str) -> ParamValue:
    """A JSON number, `true`/`false` or a JSON-quoted string is taken as that JSON value; anything
    else (including `null`, arrays and objects, which no equality filter could mean) is plain text."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("the number is out of range (64-bit integers only)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the number is out of range")
        return value
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A `+` in a query string decodes to a space; accept `…T10:00:00 02:00` as the offset it was.
_SPACED_OFFSET = re.compile(r"^(.+\d) (\d{2}:?\d{2})$")


def parse_since(raw: str) -> datetime:
    text = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            "expected an ISO 8601 timestamp such as 2026-11-21T09:30:00Z (URL-encode `+` as %2B)"
        ) from None


def single_arg(args: Mapping[str, list[str]], name: str, problems: Problems) -> str | None:
    values = args.get(name) or []
    if not values:
        return None
    if len(values) > 1:
        problems.add(name, "given more than once", "repeated_parameter")
        return None
    if not values[0].strip():
        problems.add(name, "must not be empty")
        return None
    if UNSTORABLE.search(values[0]):
        problems.add(name, "contains NUL or unpaired surrogate characters")
        return None
    return values[0]


def reject_unknown(
    args: Mapping[str, list[str]], allowed: Iterable[str], problems: Problems, *, params: bool
) -> None:
    known = set(allowed)
    for name in args:
        if name not in known and not (params and name.startswith(PARAM_PREFIX)):
            problems.add(name, "unknown query parameter", "unknown_parameter")


def parse_limit(raw: str | None, problems: Problems) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if re.fullmatch(r"\d{1,4}", raw) and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    problems.add("limit", f"an integer from 1 to {MAX_LIMIT}")
    return DEFAULT_LIMIT


def email_arg(raw: str | None, problems: Problems) -> str | None:
    """An `email` filter, normalized as the ingest path stores it (a problem is reported, not raised)."""
    if raw is None:
        return None
    try:
        if len(raw) > MAX_VALUE_CHARS:
            raise ValueError("not a valid email address: too long")
        return normalize_email(raw)
    except ValueError as exc:
        problems.add("email", str(exc))
        return raw


def parse_page_args(args: Mapping[str, list[str]]) -> tuple[int, str | None]:
    """`limit` and `cursor` alone, for lists that take no filters (the timeline)."""
    problems = Problems()
    reject_unknown(args, ("limit", "cursor"), problems, params=False)
    limit = parse_limit(single_arg(args, "limit", problems), problems)
    cursor = single_arg(args, "cursor", problems)
    problems.raise_any()
    return limit, cursor


def parse_list_args(args: Mapping[str, list[str]]) -> ListRequest:
    """Validate customer list arguments (a query string as name -> values), reporting every problem."""
    problems = Problems()
    reject_unknown(args, LIST_ARGS, problems, params=True)
    text = {name: single_arg(args, name, problems) for name in LIST_ARGS}

    project = text["project"]
    if project is not None and not re.match(PROJECT_SLUG, project):
        problems.add("project", "not a project slug (lower-case letters, digits, dashes)")
    status = text["status"]
    if status is not None and not re.match(SLUG, status):
        problems.add("status", "not a status slug (lower-case letters, digits, `-` and `_`)")
    email = email_arg(text["email"], problems)
    q = text["q"]
    if q is not None and len(q) > MAX_Q_CHARS:
        problems.add("q", f"at most {MAX_Q_CHARS} characters")
    since: dict[str, datetime | None] = {}
    for name in ("active_since", "created_since"):
        raw = text[name]
        try:
            since[name] = parse_since(raw) if raw is not None else None
        except ValueError as exc:
            problems.add(name, str(exc))
    sort = text["sort"] or DEFAULT_SORT
    if sort not in SORTS:
        problems.add("sort", f"choose among {', '.join(SORTS)}")
    limit = parse_limit(text["limit"], problems)
    params = _parse_params(args, problems)
    problems.raise_any()
    filters = CustomerFilters(
        project=project,
        status=status,
        email=email,
        q=q,
        params=params,
        active_since=since.get("active_since"),
        created_since=since.get("created_since"),
        sort=sort,
    )
    return ListRequest(filters, limit, text["cursor"])


def _parse_params(args: Mapping[str, list[str]], problems: Problems) -> tuple[tuple[str, ParamValue], ...]:
    params: list[tuple[str, ParamValue]] = []
    for name, values in args.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        key = name.removeprefix(PARAM_PREFIX)
        if not PARAM_KEY.match(key) or UNSTORABLE.search(key):
            problems.add(name, "a params key is 1-128 printable characters without quotes")
            continue
        if len(values) != 1:
            problems.add(name, "given more than once", "repeated_parameter")
            continue
        if len(values[0]) > MAX_VALUE_CHARS:
            problems.add(name, f"at most {MAX_VALUE_CHARS} characters")
            continue
        try:
            value = parse_param_value(values[0])
        except ValueError as exc:
            problems.add(name, str(exc))
            continue
        if isinstance(value, str) and UNSTORABLE.search(value):
            problems.add(name, "contains NUL or unpaired surrogate characters")
            continue
        params.append((key, value))
    if len(params) > MAX_PARAM_FILTERS:
        problems.add("params", f"at most {MAX_PARAM_FILTERS} params filters")
    return tuple(sorted(params, key=lambda item: item[0]))
