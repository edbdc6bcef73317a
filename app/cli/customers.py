"""`tributary customers list|show`: the customer read API's queries, straight on the database."""

from __future__ import annotations

from typing import Any

import click
from flask import current_app

from tributary.app.accounts import ensure_account
from tributary.app.cli import cli, emit, runtime
from tributary.app.customer_args import DEFAULT_LIMIT, PARAM_PREFIX, SORTS, parse_list_args
from tributary.app.customer_query import Reader, customer_json, find_visible_customer, list_customers


def _list_args(options: dict[str, str | None], params: tuple[str, ...]) -> dict[str, list[str]]:
    """The CLI's options as the query string the API would receive, so both parse them identically."""
    args = {name: [value] for name, value in options.items() if value is not None}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--param")
        args.setdefault(PARAM_PREFIX + key, []).append(value)
    return args


def _summary(record: dict[str, Any]) -> str:
    projects = ",".join(f"{slug}:{state['status'] or '-'}" for slug, state in record["projects"].items())
    activity = record["last_activity_at"] or "never"
    return "\t".join([record["id"], record["email"], record["name"] or "-", projects or "-", activity])


def _details(record: dict[str, Any]) -> str:
    lines = [
        f"{record['email']}  ({record['id']})",
        f"  name:           {record['name'] or '-'}",
        f"  created:        {record['created_at']}",
        f"  last activity:  {record['last_activity_at'] or 'never'}",
    ]
    if record["past_emails"]:
        lines.append(f"  past emails:    {', '.join(record['past_emails'])}")
    for slug, state in record["projects"].items():
        activity = state["last_activity_at"] or "never"
        lines.append(f"  project {slug}: status {state['status'] or '-'}, last activity {activity}")
        lines.extend(f"    {key} = {value!r}" for key, value in sorted(state["params"].items()))
    lines.extend(f"  identity {i['source']}: {i['external_id']}" for i in record["identities"])
    return "\n".join(lines)


@cli.group("customers")
def customers() -> None:
    """Read customers (the same filters as GET /v1/customers)."""


@customers.command("list")
@click.option("--project", help="Project slug: only its customers, with its status, params and activity.")
@click.option("--status", help="Status in --project, or in any project without it.")
@click.option("--email", help="Exact email.")
@click.option("--q", "q", help="Case-insensitive substring of the email or the name.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Params equality (repeatable).")
@click.option("--active-since", help="Last activity at or after (ISO 8601).")
@click.option("--created-since", help="Created at or after (ISO 8601).")
@click.option("--sort", type=click.Choice(SORTS), help="Order (default -last_activity_at).")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, help="Page size, 1 to 200.")
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output ({data, next_cursor}).")
def customers_list(
    *,
    project: str | None,
    status: str | None,
    email: str | None,
    q: str | None,
    params: tuple[str, ...],
    active_since: str | None,
    created_since: str | None,
    sort: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List customers, most recently active first."""
    options = {
        "project": project,
        "status": status,
        "email": email,
        "q": q,
        "active_since": active_since,
        "created_since": created_since,
        "sort": sort,
        "limit": str(limit),
        "cursor": cursor,
    }
    with runtime().db.session() as session, session.begin():
        account, _ = ensure_account(session)
        request = parse_list_args(_list_args(options, params))
        page = list_customers(session, Reader(account.id), request, str(current_app.config["SECRET_KEY"]))
        data = customer_json(session, page.customers)
    human = "\n".join(_summary(record) for record in data) or "no customers"
    if page.next_cursor:
        human += f"\n(more: --cursor {page.next_cursor})"
    emit({"data": data, "next_cursor": page.next_cursor}, as_json, human)


@customers.command("show")
@click.argument("ref", metavar="ID_OR_EMAIL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def customers_show(ref: str, as_json: bool) -> None:
    """Show one customer by id (cus_…) or email."""
    with runtime().db.session() as session, session.begin():
        account, _ = ensure_account(session)
        customer = find_visible_customer(session, Reader(account.id), ref)
        record = customer_json(session, [customer])[0]
    emit(record, as_json, _details(record))
