"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from app.accounts import create_key, ensure_account, get_project
from workers.runtime import Runtime


def make_key(runtime: Runtime, scopes: list[str], project: str | None = None) -> str:
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        bound = get_project(session, account.id, project) if project else None
        return create_key(session, account.id, scopes, bound).token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def identify(client: FlaskClient, token: str, **payload: Any) -> Any:
    response = client.post("/v1/identify", json=payload, headers=auth(token))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def customer(client: FlaskClient, token: str, ref: str) -> Any:
    response = client.get(f"/v1/customers/{ref}", headers=auth(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()
