"""Customer read API: show one customer in the SPEC §5 shape."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Principal, authenticate
from app.errors import APIError
from app.openapi import describe
from app.schemas import CustomerOut, normalize_email
from models import Customer, CustomerProject, Identity, Project
from models.base import isoformat

bp = Blueprint("customers", __name__)


def customer_json(session: Session, customers: list[Customer], project_id: str | None = None) -> list[dict[str, Any]]:
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


def find_customer(session: Session, principal: Principal, ref: str) -> Customer:
    """By id (`cus_…`) or email, within the key's account and, for a bound key, its project.
    Anything out of reach is a 404, so a key learns nothing about customers it cannot see."""
    stmt = select(Customer).where(Customer.account_id == principal.account_id)
    if "@" in ref:
        try:
            stmt = stmt.where(Customer.email == normalize_email(ref))
        except ValueError:
            raise APIError(404, "customer_not_found", "no such customer") from None
    else:
        stmt = stmt.where(Customer.id == ref)
    if principal.project_id is not None:
        stmt = stmt.where(
            select(CustomerProject.id)
            .where(CustomerProject.customer_id == Customer.id, CustomerProject.project_id == principal.project_id)
            .exists()
        )
    customer = session.scalar(stmt)
    if customer is None:
        raise APIError(404, "customer_not_found", "no such customer")
    return customer


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
    with current_app.extensions["tributary"].runtime.db.session() as session:
        customer = find_customer(session, principal, ref)
        return jsonify(customer_json(session, [customer], principal.project_id)[0])
