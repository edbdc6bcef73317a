"""Reading customers: look one up, search many, and render them in the SPEC §5 shape.

Shared by `GET /v1/customers…` and `tributary customers …`, so the API and the CLI accept the same
filters and mean the same thing by them. Filter semantics:

- Project-level filters (`status`, `params.<key>`) test one project row. With a project (named,
  or implied by a project-bound key) that is the project's row; without, a customer matches when
  any one of its projects satisfies all of them together.
- With a project, `active_since` and the `last_activity_at` sort use that project's activity;
  without, the customer's (its maximum over projects). Customers never active sort as the oldest.
- `params.<key>=<value>` compares JSON values: `5` matches 5 and 5.0 but not "5", `true` matches
  the boolean only, `"5"` (quoted) is the string. PostgreSQL tests containment (`@>`, served by a
  GIN index); SQLite reads the value with `json_type`/`json_extract` so booleans stay apart from 1/0.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from tributary.app.domain_errors import Forbidden, Invalid, NotFound
from tributary.app.pagination import CursorCodec, SortSpec, fetch_page, fingerprint
from tributary.app.schemas import PARAM_KEY, PROJECT_SLUG, SLUG, normalize_email
from tributary.models import Customer, CustomerMerge, CustomerProject, Identity, Project
from tributary.models.base import isoformat

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
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_REF_CHARS = 400


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


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading: the account, and the project a bound key is limited to."""

    account_id: str
    project_id: str | None = None


@dataclass(slots=True)
class _Problems:
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


def _single(args: Mapping[str, list[str]], name: str, problems: _Problems) -> str | None:
    values = args.get(name) or []
    if not values:
        return None
    if len(values) > 1:
        problems.add(name, "given more than once", "repeated_parameter")
        return None
    if not values[0].strip():
        problems.add(name, "must not be empty")
        return None
    if _UNSTORABLE.search(values[0]):
        problems.add(name, "contains NUL or unpaired surrogate characters")
        return None
    return values[0]


def _unknown(
    args: Mapping[str, list[str]], allowed: Iterable[str], problems: _Problems, *, params: bool
) -> None:
    known = set(allowed)
    for name in args:
        if name not in known and not (params and name.startswith(PARAM_PREFIX)):
            problems.add(name, "unknown query parameter", "unknown_parameter")


def _limit(raw: str | None, problems: _Problems) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if re.fullmatch(r"\d{1,4}", raw) and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    problems.add("limit", f"an integer from 1 to {MAX_LIMIT}")
    return DEFAULT_LIMIT


def parse_page_args(args: Mapping[str, list[str]]) -> tuple[int, str | None]:
    """`limit` and `cursor` alone, for lists that take no filters (the timeline)."""
    problems = _Problems()
    _unknown(args, ("limit", "cursor"), problems, params=False)
    limit = _limit(_single(args, "limit", problems), problems)
    cursor = _single(args, "cursor", problems)
    problems.raise_any()
    return limit, cursor


def parse_list_args(args: Mapping[str, list[str]]) -> ListRequest:
    """Validate customer list arguments (a query string as name -> values), reporting every problem."""
    problems = _Problems()
    _unknown(args, LIST_ARGS, problems, params=True)
    text = {name: _single(args, name, problems) for name in LIST_ARGS}

    project = text["project"]
    if project is not None and not re.match(PROJECT_SLUG, project):
        problems.add("project", "not a project slug (lower-case letters, digits, dashes)")
    status = text["status"]
    if status is not None and not re.match(SLUG, status):
        problems.add("status", "not a status slug (lower-case letters, digits, `-` and `_`)")
    email = text["email"]
    if email is not None:
        try:
            if len(email) > MAX_VALUE_CHARS:
                raise ValueError("not a valid email address: too long")
            email = normalize_email(email)
        except ValueError as exc:
            problems.add("email", str(exc))
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
    limit = _limit(text["limit"], problems)
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


def _parse_params(args: Mapping[str, list[str]], problems: _Problems) -> tuple[tuple[str, ParamValue], ...]:
    params: list[tuple[str, ParamValue]] = []
    for name, values in args.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        key = name.removeprefix(PARAM_PREFIX)
        if not PARAM_KEY.match(key) or _UNSTORABLE.search(key):
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
        if isinstance(value, str) and _UNSTORABLE.search(value):
            problems.add(name, "contains NUL or unpaired surrogate characters")
            continue
        params.append((key, value))
    if len(params) > MAX_PARAM_FILTERS:
        problems.add("params", f"at most {MAX_PARAM_FILTERS} params filters")
    return tuple(sorted(params, key=lambda item: item[0]))


def resolve_project(session: Session, reader: Reader, slug: str | None) -> str | None:
    """The project a query is limited to: the key's, or the one named. A bound key naming any other
    slug gets the same 403 whether or not that project exists."""
    if slug is None:
        return reader.project_id
    project_id = session.scalar(
        select(Project.id).where(Project.account_id == reader.account_id, Project.slug == slug)
    )
    if reader.project_id is not None:
        if project_id != reader.project_id:
            raise Forbidden("project_forbidden", "this key is bound to another project")
        return project_id
    if project_id is None:
        raise NotFound("project_not_found", f"no project with slug {slug!r}")
    return project_id


def params_match(
    dialect: str, params: Any, wanted: Sequence[tuple[str, ParamValue]]
) -> list[ColumnElement[bool]]:
    """Conditions for `params[key] == value` as JSON for every pair: numbers by value, booleans and
    strings by type and value."""
    if not wanted:
        return []
    if dialect == "postgresql":
        # One containment test for all keys, answered by the GIN index. For scalar values JSONB
        # containment is exactly JSON equality (5 @> 5.0, "5" !@> 5, "a" !@> ["a"] below the top).
        return [type_coerce(params, JSONB()).contains(dict(wanted))]
    conditions: list[ColumnElement[bool]] = []
    for key, value in wanted:
        path = f'$."{key}"'
        kind = func.json_type(params, path)
        if isinstance(value, bool):
            conditions.append(kind == ("true" if value else "false"))
        elif isinstance(value, int | float):
            conditions += [kind.in_(("integer", "real")), func.json_extract(params, path) == value]
        else:
            conditions += [kind == "text", func.json_extract(params, path) == value]
    return conditions


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """Validated filters bound to a reader and a resolved project: ready to run."""

    reader: Reader
    project_id: str | None
    filters: CustomerFilters

    @property
    def binding(self) -> str:
        f = self.filters
        params = [[k, v, type(v).__name__] for k, v in f.params]
        return fingerprint(
            self.reader.account_id,
            self.project_id,
            f.sort,
            f.status,
            f.email,
            f.q,
            params,
            isoformat(f.active_since),
            isoformat(f.created_since),
        )

    def sort_spec(self) -> SortSpec:
        name = self.filters.sort.lstrip("-")
        descending = self.filters.sort.startswith("-")
        if name == "created_at":
            return SortSpec(Customer.created_at, Customer.id, descending, nullable=False)
        if self.project_id is not None:
            # customer_projects.customer_id is customers.id here (joined); ordering by it lets the
            # (project_id, last_activity_at, customer_id) index serve the page.
            return SortSpec(
                CustomerProject.last_activity_at, CustomerProject.customer_id, descending, nullable=True
            )
        return SortSpec(Customer.last_activity_at, Customer.id, descending, nullable=True)

    def statement(self, dialect: str) -> Select[Customer]:
        f = self.filters
        stmt = select(Customer).where(Customer.account_id == self.reader.account_id)
        project_conditions: list[ColumnElement[bool]] = []
        if f.status is not None:
            project_conditions.append(CustomerProject.status == f.status)
        project_conditions += params_match(dialect, CustomerProject.params, f.params)
        activity: Any = Customer.last_activity_at
        if self.project_id is not None:
            # One row per customer: (customer_id, project_id) is unique.
            joined = and_(
                CustomerProject.customer_id == Customer.id, CustomerProject.project_id == self.project_id
            )
            stmt = stmt.join(CustomerProject, joined).where(*project_conditions)
            activity = CustomerProject.last_activity_at
        elif project_conditions:
            stmt = stmt.where(
                select(CustomerProject.id)
                .where(CustomerProject.customer_id == Customer.id, *project_conditions)
                .exists()
            )
        if f.email is not None:
            stmt = stmt.where(Customer.email == f.email)
        if f.q is not None:
            needle = f.q.lower()
            stmt = stmt.where(
                or_(
                    Customer.email.contains(needle, autoescape=True),
                    func.lower(Customer.name).contains(needle, autoescape=True),
                )
            )
        if f.active_since is not None:
            stmt = stmt.where(activity >= f.active_since)
        if f.created_since is not None:
            stmt = stmt.where(Customer.created_at >= f.created_since)
        return stmt


@dataclass(frozen=True, slots=True)
class CustomerPage:
    customers: list[Customer]
    next_cursor: str | None


def cursor_codec(secret_key: str) -> CursorCodec:
    return CursorCodec(secret_key, "customers")


def list_customers(session: Session, reader: Reader, request: ListRequest, secret_key: str) -> CustomerPage:
    """One page of customers matching `request`, as `reader` may see them."""
    query = CustomerQuery(reader, resolve_project(session, reader, request.filters.project), request.filters)
    codec = cursor_codec(secret_key)
    spec = query.sort_spec()
    after = codec.decode(request.cursor, query.binding, spec) if request.cursor is not None else None
    dialect = session.get_bind().dialect.name
    rows, position = fetch_page(session, query.statement(dialect), spec, request.limit, after)
    next_cursor = codec.encode(position, query.binding) if position is not None else None
    return CustomerPage([row[0] for row in rows], next_cursor)


def _visible(reader: Reader, stmt: Select[Customer]) -> Select[Customer]:
    """Limit a customer query to the account and, for a project-bound key, its project."""
    stmt = stmt.where(Customer.account_id == reader.account_id)
    if reader.project_id is None:
        return stmt
    membership = select(CustomerProject.id).where(
        CustomerProject.customer_id == Customer.id, CustomerProject.project_id == reader.project_id
    )
    return stmt.where(membership.exists())


def find_visible_customer(session: Session, reader: Reader, ref: str) -> Customer:
    """By id (`cus_…`) or email, within the reader's account and, for a bound key, its project.
    Anything out of reach is a 404, so a key learns nothing about customers it cannot see.

    The id of a customer merged into another (an email change) is a 404 too, `customer_merged`,
    naming the survivor when the reader may see it: clients holding old ids learn where the person
    went, and nothing (least of all an erasure) silently lands on a record with another id."""
    not_found = NotFound("customer_not_found", "no such customer")
    if len(ref) > MAX_REF_CHARS or _UNSTORABLE.search(ref):
        raise not_found
    if "@" in ref:
        try:
            customer = session.scalar(
                _visible(reader, select(Customer)).where(Customer.email == normalize_email(ref))
            )
        except ValueError:
            raise not_found from None
    else:
        customer = session.scalar(_visible(reader, select(Customer)).where(Customer.id == ref))
        if customer is None:
            survivor = select(CustomerMerge.survivor_id).where(
                CustomerMerge.account_id == reader.account_id, CustomerMerge.absorbed_id == ref
            )
            merged_into = session.scalar(_visible(reader, select(Customer)).where(Customer.id.in_(survivor)))
            if merged_into is not None:
                raise NotFound(
                    "customer_merged",
                    f"this customer was merged into {merged_into.id}",
                    {"merged_into": merged_into.id},
                )
    if customer is None:
        raise not_found
    return customer


def customer_json(
    session: Session, customers: list[Customer], project_id: str | None = None
) -> list[dict[str, Any]]:
    """Serialize customers with their projects and identities in two queries, whatever the count.
    `project_id` (a project-bound key) limits `projects` to that project."""
    ids = [c.id for c in customers]
    projects: dict[str, dict[str, Any]] = {cid: {} for cid in ids}
    identities: dict[str, list[dict[str, str]]] = {cid: [] for cid in ids}
    if ids:
        stmt = (
            select(CustomerProject, Project.slug)
            .join(Project, Project.id == CustomerProject.project_id)
            .where(CustomerProject.customer_id.in_(ids))
            .order_by(Project.slug)
        )
        if project_id is not None:
            stmt = stmt.where(CustomerProject.project_id == project_id)
        for row, slug in session.execute(stmt):
            projects[row.customer_id][slug] = {
                "status": row.status,
                "params": row.params,
                "first_seen_at": isoformat(row.first_seen_at),
                "last_activity_at": isoformat(row.last_activity_at),
            }
        identity_rows = session.execute(
            select(Identity.customer_id, Identity.source, Identity.external_id)
            .where(Identity.customer_id.in_(ids))
            .order_by(Identity.source, Identity.external_id)
        )
        for customer_id, source, external_id in identity_rows:
            identities[customer_id].append({"source": source, "external_id": external_id})
    return [
        {
            "id": c.id,
            "email": c.email,
            "name": c.name,
            "created_at": isoformat(c.created_at),
            "updated_at": isoformat(c.updated_at),
            "last_activity_at": isoformat(c.last_activity_at),
            "past_emails": list(c.past_emails),
            "projects": projects[c.id],
            "identities": identities[c.id],
        }
        for c in customers
    ]
