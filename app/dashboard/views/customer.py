"""One customer: identity, per-project status and params with their provenance, the timeline,
and erasure (admin, after typing the email to confirm)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from tributary.app.customer_args import parse_page_args
from tributary.app.customer_query import customer_json, find_visible_customer
from tributary.app.dashboard.guard import admin_only
from tributary.app.dashboard.provenance import provenance
from tributary.app.dashboard.views import db, reader, secret_key
from tributary.app.domain_errors import NotFound
from tributary.app.erasure import erase_customer
from tributary.app.timeline import customer_timeline

TIMELINE_PAGE = 50


def _args() -> dict[str, list[str]]:
    return {name: request.args.getlist(name) for name in request.args if name == "cursor"}


def customer(customer_id: str) -> Response | str:
    r = reader()
    with db().session() as session:
        try:
            found = find_visible_customer(session, r, customer_id)
        except NotFound as exc:
            merged_into = (exc.details or {}).get("merged_into") if exc.code == "customer_merged" else None
            if merged_into:
                return redirect(url_for("dashboard.customer", customer_id=merged_into))  # type: ignore[return-value]
            raise
        record: dict[str, Any] = customer_json(session, [found], r.project_id)[0]
        _, cursor = parse_page_args(_args())
        timeline = customer_timeline(
            session, r, found.id, limit=TIMELINE_PAGE, cursor=cursor, secret_key=secret_key()
        )
        origins = provenance(session, r, found.id)
    return render_template(
        "customer.html", c=record, origins=origins, timeline=timeline, paged=cursor is not None
    )


@admin_only
def erase(customer_id: str) -> Response | str | tuple[str, int]:
    r = reader()
    if request.method == "GET":
        with db().session() as session:
            found = find_visible_customer(session, r, customer_id)
            return render_template("erase.html", c=found, error=None)
    with db().write_session() as session, session.begin():
        found = find_visible_customer(session, r, customer_id)
        typed = (request.form.get("confirm_email") or "").strip().lower()
        if typed != found.email:
            return render_template("erase.html", c=found, error="The email typed does not match."), 400
        email = found.email
        redacted = erase_customer(session, found)
    return render_template("erased.html", email=email, redacted=redacted)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/customers/<customer_id>", "customer", customer)
    bp.add_url_rule("/customers/<customer_id>/erase", "erase_customer", erase, methods=["GET", "POST"])
