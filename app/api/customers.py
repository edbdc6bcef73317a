"""Customer read API (list, show, timeline) and erasure. The list's arguments are parsed in
app/customer_args.py and the queries live in app/customer_query.py and app/timeline.py, shared with
the CLI; this module owns HTTP: auth, envelopes, the OpenAPI description of the arguments."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import exists, select, union
from sqlalchemy.orm import Session

from tributary.app.auth import Principal, authenticate
from tributary.app.customer_args import (
    DEFAULT_LIMIT,
    DEFAULT_SORT,
    MAX_LIMIT,
    MAX_Q_CHARS,
    MAX_VALUE_CHARS,
    SORTS,
    parse_list_args,
    parse_page_args,
)
from tributary.app.customer_query import Reader, customer_json, find_visible_customer, list_customers
from tributary.app.erasure import erase_customer
from tributary.app.openapi import QueryParam, describe
from tributary.app.pagination import MAX_CURSOR_CHARS
from tributary.app.schemas import NO_NUL, PROJECT_SLUG, SLUG, CustomerList, CustomerOut, Timeline
from tributary.app.timeline import customer_timeline
from tributary.models import Customer, CustomerProject, Database, TimelineEntry

__all__ = ["bp", "customer_json", "find_customer_for_key"]

bp = Blueprint("customers", __name__)

_LIMIT = QueryParam(
    "limit",
    f"Page size, 1 to {MAX_LIMIT}.",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
_CURSOR = QueryParam(
    "cursor",
    "`next_cursor` of the previous page, with the same filters and sort.",
    {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS, "pattern": NO_NUL},
)
_TIME = {"type": "string", "format": "date-time"}
_TEXT = {"type": "string", "minLength": 1, "pattern": NO_NUL}
LIST_QUERY = [
    QueryParam(
        "project",
        "Project slug: only its customers, with that project's status, params, activity.",
        {"type": "string", "pattern": PROJECT_SLUG},
    ),
    QueryParam(
        "status", "Status in `project`, or in any project without it.", {"type": "string", "pattern": SLUG}
    ),
    QueryParam(
        "email",
        "Exact email (trimmed, case-insensitive).",
        {"type": "string", "format": "email", "maxLength": MAX_VALUE_CHARS},
    ),
    QueryParam(
        "q", "Case-insensitive substring of the email or the name.", {**_TEXT, "maxLength": MAX_Q_CHARS}
    ),
    QueryParam(
        "params.<key>",
        "Repeatable, one per key: params equality. `5` and `true` compare as JSON numbers and booleans, "
        '`"5"` (quoted) or any other text as a string. Without `project`, any one project may match.',
        {**_TEXT, "maxLength": MAX_VALUE_CHARS},
    ),
    QueryParam("active_since", "Last activity at or after this time (ISO 8601).", _TIME),
    QueryParam("created_since", "Created at or after this time (ISO 8601).", _TIME),
    QueryParam(
        "sort",
        "Order; never-active customers count as the oldest activity.",
        {"type": "string", "enum": list(SORTS), "default": DEFAULT_SORT},
    ),
    _LIMIT,
    _CURSOR,
]


def _db() -> Database:
    db: Database = current_app.extensions["tributary"].runtime.db
    return db


def _reader(principal: Principal) -> Reader:
    return Reader(principal.account_id, principal.project_id)


def _secret() -> str:
    return str(current_app.config["SECRET_KEY"])


def _args() -> dict[str, list[str]]:
    return {name: request.args.getlist(name) for name in request.args}


def _known_elsewhere(session: Session, customer_id: str, project_id: str) -> bool:
    elsewhere = union(
        select(CustomerProject.id).where(
            CustomerProject.customer_id == customer_id, CustomerProject.project_id != project_id
        ),
        select(TimelineEntry.id).where(
            TimelineEntry.customer_id == customer_id, TimelineEntry.project_id != project_id
        ),
    )
    return session.scalar(select(exists(elsewhere))) or False


def find_customer_for_key(session: Session, principal: Principal, ref: str) -> Customer:
    """The customer `ref` names as the calling API key may see it (`find_visible_customer`)."""
    return find_visible_customer(session, _reader(principal), ref)


@bp.get("/v1/customers")
@describe(
    summary="List and search customers",
    tag="customers",
    scope="read",
    query=LIST_QUERY,
    responses={200: CustomerList},
    errors=(400, 401, 403, 404, 429),
)
def list_customers_view() -> Response:
    principal = authenticate("read")
    parsed = parse_list_args(_args())
    with _db().session() as session:
        page = list_customers(session, _reader(principal), parsed, _secret())
        data: list[dict[str, Any]] = customer_json(session, page.customers, principal.project_id)
    return jsonify(data=data, next_cursor=page.next_cursor)


@bp.get("/v1/customers/<ref>")
@describe(
    summary="Get a customer by id or email",
    tag="customers",
    scope="read",
    responses={200: CustomerOut},
    errors=(401, 403, 404, 429),
)
def show_customer(ref: str) -> Response:
    principal = authenticate("read")
    with _db().session() as session:
        customer = find_customer_for_key(session, principal, ref)
        return jsonify(customer_json(session, [customer], principal.project_id)[0])


@bp.get("/v1/customers/<ref>/timeline")
@describe(
    summary="A customer's changes and the events behind them, newest first",
    tag="customers",
    scope="read",
    query=[_LIMIT, _CURSOR],
    responses={200: Timeline},
    errors=(400, 401, 403, 404, 429),
)
def timeline(ref: str) -> Response:
    principal = authenticate("read")
    limit, cursor = parse_page_args(_args())
    with _db().session() as session:
        customer = find_customer_for_key(session, principal, ref)
        page = customer_timeline(
            session, _reader(principal), customer.id, limit=limit, cursor=cursor, secret_key=_secret()
        )
    return jsonify(data=page.entries, next_cursor=page.next_cursor)


@bp.delete("/v1/customers/<ref>")
@describe(
    summary="Erase a customer: remove the record and redact its stored events (a project-bound key: only "
    "customers no other project knows)",
    tag="customers",
    scope="admin",
    responses={204: "Erased"},
    errors=(401, 403, 404, 429, 503),
)
def erase(ref: str) -> Response:
    principal = authenticate("admin")
    with _db().write_session() as session, session.begin():
        customer = find_customer_for_key(session, principal, ref)
        if principal.project_id is not None and _known_elsewhere(session, customer.id, principal.project_id):
            # Erasure removes the whole person: a project-bound key may not take other projects' data.
            principal.require_account_wide("erasing a customer known to other projects")
        erase_customer(session, customer)
    return Response(status=204)
