"""Customers: the list API's filters and sort in a form, cursor pages, project badges per row.

The arguments and query are `customer_args`' and `customer_query`'s, the same the API and the CLI
use; this module only turns a form into the API's query string (`pk`/`pv` pairs become
`params.<key>`) and renders the page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from werkzeug.datastructures import MultiDict

from tributary.app.customer_args import PARAM_PREFIX, SORTS, parse_list_args
from tributary.app.customer_query import customer_json, list_customers
from tributary.app.dashboard.views import db, reader, secret_key, visible_projects
from tributary.app.domain_errors import DomainError
from tributary.app.errors import APIError, http_error

MAX_PARAM_ROWS = 5
SORT_LABELS = {
    "-last_activity_at": "Active, newest",
    "last_activity_at": "Active, oldest",
    "-created_at": "Created, newest",
    "created_at": "Created, oldest",
}
_FORM_ONLY = {"pk", "pv"}


def query_args(form: MultiDict[str, str]) -> dict[str, list[str]]:
    """The form as the list API's arguments: empty fields dropped, `pk`/`pv` rows as `params.<key>`."""
    args: dict[str, list[str]] = {}
    for name in form:
        if name in _FORM_ONLY:
            continue
        values = [v for v in form.getlist(name) if v.strip()]
        if values:
            args[name] = values
    for key, value in zip(form.getlist("pk"), form.getlist("pv"), strict=False):
        if key.strip():
            args.setdefault(PARAM_PREFIX + key.strip(), []).append(value)
    return args


def param_rows(args: dict[str, list[str]]) -> list[tuple[str, str]]:
    rows = [(k.removeprefix(PARAM_PREFIX), v[0]) for k, v in args.items() if k.startswith(PARAM_PREFIX)]
    rows += [("", "")] * max(1, 2 - len(rows))
    return rows[:MAX_PARAM_ROWS]


def page_args(args: dict[str, list[str]], cursor: str | None) -> list[tuple[str, str]]:
    """The query string of another page of the same list."""
    pairs = [(k, v) for k, values in args.items() if k != "cursor" for v in values]
    return [*pairs, ("cursor", cursor)] if cursor else pairs


def customers() -> tuple[str, int]:
    args = query_args(request.args)
    errors: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    next_cursor = None
    status = 200
    with db().session() as session:
        projects = visible_projects(session)
        try:
            parsed = parse_list_args(args)
            page = list_customers(session, reader(), parsed, secret_key())
            rows = customer_json(session, page.customers, reader().project_id)
            next_cursor = page.next_cursor
        except (APIError, DomainError) as refused:
            exc = http_error(refused)
            status = exc.status
            errors = exc.details or [{"field": None, "message": exc.message}]
    selected = args["project"][0] if "project" in args else None
    return render_template(
        "customers.html",
        args={k: v[0] for k, v in args.items()},
        params=param_rows(args),
        projects=projects,
        selected_project=selected,
        sorts=[(s, SORT_LABELS[s]) for s in SORTS],
        rows=rows,
        errors=errors,
        next_args=page_args(args, next_cursor) if next_cursor else None,
        first_args=page_args(args, None) if "cursor" in args else None,
    ), status


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/customers", "customers", customers)
