"""Data for the customer read, timeline and erasure tests, made through the real pipeline.

Most customers come from `POST /v1/identify` with explicit timestamps. Two things identify cannot
produce come from a small test connector instead, installed through the connector registry like
any other: customers with no activity at all (a provider import or a billing event is not
activity) and identities. Its events are stored the way the webhook endpoint stores them (raw
body, headers, the connector's payload) and applied by the real worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.helpers import auth, identify
from tributary.connectors.base import Connector, Envelope, InboundRequest, NormalizeContext, SourceConfig
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.registry import ConnectorRegistry, use_registry
from tributary.models import Event, Project
from tributary.models.base import sortable_id, utcnow
from tributary.runtime.doorbell import ring
from tributary.runtime.process import Runtime


class ImportConnector(Connector):
    """Turns `{"email", "name"?, "status"?, "params"?, "identity"?, "email_change"?, "forget"?}` into a
    change that is not activity: an import, an auth provider's email change or user deletion."""

    name = "test-import"
    title = "Test import (no activity)"

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        return None

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        raise NotImplementedError("events are stored directly by the tests")

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        data = envelope.payload
        return [
            CustomerChange(
                occurred_at=envelope.occurred_at,
                email=data.get("email"),
                identity=IdentityRef(*data["identity"]) if data.get("identity") else None,
                name=data.get("name"),
                status=data.get("status"),
                params=data.get("params") or {},
                activity=False,
                email_change=bool(data.get("email_change")),
                forget_identity=bool(data.get("forget")),
            )
        ]


@pytest.fixture(autouse=True)
def import_connector() -> Iterator[ConnectorRegistry]:
    """Autouse in the modules that import it: the worker knows the test connector there."""
    connectors = ConnectorRegistry()
    connectors.register(ImportConnector)
    with use_registry(connectors):
        yield connectors


def import_customer(
    runtime: Runtime,
    email: str | None,
    *,
    project: str = "default",
    occurred_at: datetime | None = None,
    headers: dict[str, str] | None = None,
    **data: Any,
) -> str:
    """Store a test-connector event as the webhook endpoint would, and ring the worker
    (the module must import the `import_connector` fixture for the worker to apply it)."""
    payload = {"email": email, **data}
    with runtime.db.session() as session, session.begin():
        row = session.execute(select(Project.id, Project.account_id).where(Project.slug == project)).one()
        provider_id = "imp_" + sortable_id("x")
        event = Event(
            id=sortable_id("evt"),
            account_id=row.account_id,
            project_id=row.id,
            channel=ImportConnector.name,
            type="test.imported",
            provider_event_id=provider_id,
            dedup_key=f"test:{provider_id}",
            email=email,
            occurred_at=occurred_at or utcnow(),
            body=json.dumps(payload).encode(),
            headers=headers or {"x-test-signature": f"sig-for-{email}"},
            payload=payload,
        )
        session.add(event)
    ring(runtime)
    return event.id


def create_project(client: FlaskClient, token: str, slug: str) -> None:
    response = client.post("/v1/projects", json={"slug": slug}, headers=auth(token))
    assert response.status_code == 201, response.get_json()


def at(day: int, hour: int = 0, minute: int = 0) -> str:
    """A fixed event time in January 2026, so ordering assertions do not depend on the clock."""
    return f"2026-01-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def people(client: FlaskClient, token: str, drain: Callable[[], None], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        identify(client, token, **row)
    drain()


def listing(client: FlaskClient, token: str, query: str = "", status: int = 200) -> Any:
    response = client.get(f"/v1/customers{query}", headers=auth(token))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def emails(body: Any) -> list[str]:
    return [c["email"] for c in body["data"]]


def walk(client: FlaskClient, token: str, query: str, limit: int) -> list[str]:
    """Every customer of a listing, page by page; asserts the pages are full until the last."""
    sep = "&" if "?" in query else "?"
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        suffix = f"{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = listing(client, token, query + suffix)
        seen += emails(body)
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(body["data"]) <= limit
            return seen
        assert len(body["data"]) == limit
    raise AssertionError("pagination did not end")
