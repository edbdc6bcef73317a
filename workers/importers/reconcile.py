"""Reconcile: compare each Stripe customer's status, plan and MRR with Stripe's current state.

Stripe's state is read as the import reads it (all subscriptions, customers expanded) and
normalized by the Stripe connector offline, with the source's status mapping. A customer's
current subscription is its live one changed most recently, else its most recent ended one.
Drift is a difference in project status, `params.plan` or `params.mrr`, or a Stripe customer
Tributary does not know. `fix` applies Stripe's state as events on the `import` channel at the
current time, so it wins over everything older, webhooks included, through the normal pipeline.

Memory: one small change per Stripe customer with a subscription (not the objects).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tributary.connectors.base import SourceConfig
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import registry
from tributary.connectors.stripe import client_for
from tributary.models import Customer, CustomerProject, Identity, Project, Source
from tributary.runtime.process import Runtime
from tributary.workers.importers.items import ConnectorEvents, ImportEvent, Listed, Skip
from tributary.workers.importers.pipeline import ImportTarget, Tally, run_pipeline
from tributary.workers.importers.stripe_list import Backoff, ImportFailed, latest_change, list_pages

__all__ = ["COMPARED", "Drift", "find_drift", "fix_drift", "reconcile_source"]

COMPARED = ("status", "plan", "mrr")
_ENDED = ("canceled", "incomplete_expired")


@dataclass(frozen=True, slots=True)
class Drift:
    stripe_customer: str
    customer_id: str | None
    email: str | None
    field: str
    tributary: Any
    stripe: Any

    def as_json(self) -> dict[str, Any]:
        return {
            "stripe_customer": self.stripe_customer,
            "customer_id": self.customer_id,
            "email": self.email,
            "field": self.field,
            "tributary": self.tributary,
            "stripe": self.stripe,
        }


@dataclass(frozen=True, slots=True)
class _Current:
    rank: tuple[int, int]
    change: CustomerChange


def _stripe_state(source: SourceConfig, backoff: Backoff) -> dict[str, _Current]:
    api_key = source.options.get("api_key")
    if not isinstance(api_key, str):
        raise ImportFailed(f"source {source.id} has no api_key option")
    client = client_for(api_key)
    builder = ConnectorEvents(registry().get("stripe"), source)
    now = datetime.now(UTC)
    current: dict[str, _Current] = {}
    params = {"limit": 100, "status": "all", "expand": ["data.customer"]}
    for obj in list_pages(lambda p: client.v1.subscriptions.list(params=p), params, None, backoff):  # type: ignore[arg-type]
        try:
            event = builder.event(
                str(obj.get("id")), "customer.subscription.updated", now, {"data": {"object": obj}}
            )
        except Skip:
            continue
        for change in event.changes:
            if change.identity is None:
                continue
            rank = (0 if obj.get("status") in _ENDED else 1, latest_change(obj, int(time.time())))
            held = current.get(change.identity.external_id)
            if held is None or rank > held.rank:
                current[change.identity.external_id] = _Current(rank, change)
    return current


def _tributary_state(
    runtime: Runtime, account_id: str, project_id: str, customer_ids: list[str]
) -> dict[str, tuple[str, str, str | None, Mapping[str, Any]]]:
    """Stripe customer id -> (customer id, email, status, params) in the source's project."""
    found: dict[str, tuple[str, str, str | None, Mapping[str, Any]]] = {}
    with runtime.db.session() as session:
        for start in range(0, len(customer_ids), 500):
            chunk = customer_ids[start : start + 500]
            rows = session.execute(
                select(
                    Identity.external_id,
                    Customer.id,
                    Customer.email,
                    CustomerProject.status,
                    CustomerProject.params,
                )
                .join(Customer, Customer.id == Identity.customer_id)
                .outerjoin(
                    CustomerProject,
                    (CustomerProject.customer_id == Customer.id) & (CustomerProject.project_id == project_id),
                )
                .where(
                    Identity.account_id == account_id,
                    Identity.source == "stripe",
                    Identity.external_id.in_(chunk),
                )
            ).all()
            for external_id, customer_id, email, status, params in rows:
                found[external_id] = (customer_id, email, status, params or {})
    return found


def find_drift(
    runtime: Runtime, source_id: str, *, backoff: Backoff | None = None
) -> tuple[list[Drift], dict[str, CustomerChange]]:
    """The drift, and Stripe's state as a change per drifted Stripe customer."""
    with runtime.db.session() as session:
        source = session.get(Source, source_id)
        if source is None or source.deleted_at is not None or source.connector != "stripe":
            raise ImportFailed(f"no stripe source {source_id}")
        account_id, project_id = source.account_id, source.project_id
        project = session.get(Project, project_id)
        config = SourceConfig(
            source.id, "stripe", project.slug if project else "", options=dict(source.options)
        )
    stripe_state = _stripe_state(config, backoff or Backoff())
    known = _tributary_state(runtime, account_id, project_id, sorted(stripe_state))
    drift: list[Drift] = []
    fixes: dict[str, CustomerChange] = {}
    for external_id in sorted(stripe_state):
        change = stripe_state[external_id].change
        expected = {
            "status": change.status,
            "plan": change.params.get("plan"),
            "mrr": change.params.get("mrr"),
        }
        if external_id not in known:
            drift.append(Drift(external_id, None, change.email, "missing", None, expected))
            fixes[external_id] = change
            continue
        customer_id, email, status, params = known[external_id]
        actual = {"status": status, "plan": params.get("plan"), "mrr": params.get("mrr")}
        for name in COMPARED:
            if actual[name] != expected[name]:
                drift.append(Drift(external_id, customer_id, email, name, actual[name], expected[name]))
                fixes[external_id] = change
    return drift, fixes


def _fix_items(fixes: Mapping[str, CustomerChange], now: datetime) -> Iterator[Listed]:
    for external_id, change in fixes.items():
        fixed = CustomerChange(
            occurred_at=now,
            email=change.email,
            identity=change.identity,
            status=change.status,
            params=change.params,
        )
        event = ImportEvent(
            object_id=external_id,
            type="reconcile.fix",
            occurred_at=now,
            payload={"changes": [fixed.to_json()], "reconcile": True},
            changes=(fixed,),
            email=change.email,
        )
        yield Listed("reconcile", external_id, (event,))


def fix_drift(runtime: Runtime, source_id: str, fixes: Mapping[str, CustomerChange]) -> Tally:
    with runtime.db.session() as session:
        source = session.get(Source, source_id)
        assert source is not None
        target = ImportTarget(source.account_id, source.project_id, source.id, "reconcile", checkpoints=False)
    return run_pipeline(runtime, target, _fix_items(fixes, datetime.now(UTC)))


def reconcile_source(
    runtime: Runtime, source_id: str, *, fix: bool, backoff: Backoff | None = None
) -> dict[str, Any]:
    drift, fixes = find_drift(runtime, source_id, backoff=backoff)
    result: dict[str, Any] = {"source": source_id, "drift": [d.as_json() for d in drift], "fixed": None}
    if fix and fixes:
        result["fixed"] = fix_drift(runtime, source_id, fixes).as_json()
    return result
