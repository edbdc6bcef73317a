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
- `q` is a case-insensitive substring of the email (stored lower-case) or the name. PostgreSQL
  answers it from trigram indexes (pg_trgm, migration 0011) when it is rare and by walking the sort
  order when it is common; SQLite scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from tributary.app.customer_args import UNSTORABLE, CustomerFilters, ListRequest, ParamValue
from tributary.app.domain_errors import Forbidden, NotFound
from tributary.app.pagination import CursorCodec, SortSpec, fetch_page, fingerprint
from tributary.app.schemas import normalize_email
from tributary.models import Customer, CustomerMerge, CustomerProject, Identity, Project
from tributary.models.base import isoformat
from tributary.models.sql import among

MAX_REF_CHARS = 400


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading: the account, and the project a bound key is limited to."""

    account_id: str
    project_id: str | None = None


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

    @property
    def probes_project_rows(self) -> bool:
        """Whether the walk down the customers' sort order tests each customer's project rows (a
        project filter over every project): then it passes many customers for each it keeps."""
        return self.project_id is None and (self.filters.status is not None or bool(self.filters.params))

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
            # Emails are stored lower-case; `lower(email)` is the expression their trigram index is
            # on (models/customer.py). ILIKE (PostgreSQL; `lower() LIKE lower()` elsewhere) rather
            # than `lower(name) LIKE` lets the trigram index on the bare column serve the name.
            needle = f.q.lower()
            stmt = stmt.where(
                or_(
                    func.lower(Customer.email).contains(needle, autoescape=True),
                    Customer.name.icontains(needle, autoescape=True),
                )
            )
        if f.active_since is not None:
            stmt = stmt.where(activity >= f.active_since)
        if f.created_since is not None:
            stmt = stmt.where(Customer.created_at >= f.created_since)
        return stmt


class CustomerFields(Protocol):
    """What `customer_json` reads of a customer: a `Customer`, or a row of `CUSTOMER_COLUMNS`."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def last_activity_at(self) -> datetime | None: ...
    @property
    def past_emails(self) -> list[Any]: ...


# A page is read as plain rows of these columns rather than as ORM objects: nothing on it is
# written back, and building 50 tracked instances (plus their merge clocks, decoded from JSON and
# never shown) was a large share of a list request's Python time (bench/README.md).
CUSTOMER_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.name,
    Customer.created_at,
    Customer.updated_at,
    Customer.last_activity_at,
    Customer.past_emails,
)


@dataclass(frozen=True, slots=True)
class CustomerPage:
    customers: list[CustomerFields]
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
    if dialect == "postgresql":
        # Serial: a parallel walk (Gather Merge) sends workers down their own shares of the index,
        # each running ahead, so a page of 50 probed ~11,000 customers where one process probes
        # ~4,800 (the 0.6 % family: 56-76 ms against 25-35 ms). For the rest of this transaction.
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    # A walk that probes project rows (a project filter over every project) selects the page's
    # ids alone, then its customers are read by primary key: the walk down the sort order then
    # needs nothing from the customers table that its (account_id, sort column, id) index lacks,
    # so PostgreSQL answers it from the index alone (an index-only scan where the visibility map
    # allows) and reads the table for the page's rows only, not for every customer the probe
    # rejects (`params.seats=50`, 0.6 % of 1,000,000: ~4,800 probed, 118 -> 41 ms;
    # bench/README.md); SQLite likewise walks a covering index. Any other walk reads the table's
    # row of each customer it keeps anyway (through a join, or for a filter its index lacks) and
    # passes few it does not: it returns the page itself.
    by_id = query.probes_project_rows
    columns = (Customer.id,) if by_id else CUSTOMER_COLUMNS
    walk = query.statement(dialect).with_only_columns(*columns)
    rows, position = fetch_page(session, walk, spec, request.limit, after)
    customers: list[CustomerFields] = list(rows)
    if by_id and rows:
        ids = [row[0] for row in rows]
        stmt = select(*CUSTOMER_COLUMNS).where(among(Customer.id, ids, dialect == "postgresql"))
        loaded: dict[str, CustomerFields] = {c.id: c for c in session.execute(stmt)}
        # A customer erased between the two statements is left out rather than failing the page.
        customers = [loaded[i] for i in ids if i in loaded]
    next_cursor = codec.encode(position, query.binding) if position is not None else None
    return CustomerPage(customers, next_cursor)


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
    if len(ref) > MAX_REF_CHARS or UNSTORABLE.search(ref):
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
            # The survivors' ids first, then their rows by id: SQLite served `id IN (subquery)`
            # beside the account's condition by walking every customer of the account.
            survivors = session.scalars(
                select(CustomerMerge.survivor_id).where(
                    CustomerMerge.account_id == reader.account_id, CustomerMerge.absorbed_id == ref
                )
            ).all()
            merged_into = (
                session.scalar(_visible(reader, select(Customer)).where(Customer.id.in_(survivors)))
                if survivors
                else None
            )
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
    session: Session, customers: Sequence[CustomerFields], project_id: str | None = None
) -> list[dict[str, Any]]:
    """Serialize customers with their projects and identities in two queries, whatever the count.
    `project_id` (a project-bound key) limits `projects` to that project."""
    ids = [c.id for c in customers]
    projects: dict[str, dict[str, Any]] = {cid: {} for cid in ids}
    identities: dict[str, list[dict[str, str]]] = {cid: [] for cid in ids}
    if ids:
        dialect = session.get_bind().dialect.name
        stmt = (
            select(
                CustomerProject.customer_id,
                Project.slug,
                CustomerProject.status,
                CustomerProject.params,
                CustomerProject.first_seen_at,
                CustomerProject.last_activity_at,
            )
            .join(Project, Project.id == CustomerProject.project_id)
            .where(among(CustomerProject.customer_id, ids, dialect == "postgresql"))
            .order_by(Project.slug)
        )
        if project_id is not None:
            stmt = stmt.where(CustomerProject.project_id == project_id)
        for customer_id, slug, status, params, first_seen_at, last_activity_at in session.execute(stmt):
            projects[customer_id][slug] = {
                "status": status,
                "params": params,
                "first_seen_at": isoformat(first_seen_at),
                "last_activity_at": isoformat(last_activity_at),
            }
        identity_rows = session.execute(
            select(Identity.customer_id, Identity.source, Identity.external_id)
            .where(among(Identity.customer_id, ids, dialect == "postgresql"))
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
