"""GET /v1/customers/<id or email>: lookups, merged ids, and what each key may see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    create_project,
    import_connector,
    import_customer,
    people,
)
from tests.helpers import auth, customer, make_key, sqlite_walks, statements_sent
from tributary.runtime.process import Runtime


def _get(client: FlaskClient, token: str, ref: str, status: int = 200) -> Any:
    response = client.get(f"/v1/customers/{ref}", headers=auth(token))
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.fixture
def merged(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> dict[str, str]:
    """ada (provider user cus_ada, signed up as ada@) and a separate customer for work@, merged into
    ada when the provider reports cus_ada's address is now work@. Returns the two original ids."""
    create_project(client, admin_key, "app")
    people(
        client,
        admin_key,
        drain,
        [
            {"email": "ada@example.com", "name": "Ada", "status": "paid", "timestamp": at(1)},
            {"email": "work@example.com", "project": "app", "status": "trial", "timestamp": at(2)},
        ],
    )
    import_customer(
        runtime,
        "ada@example.com",
        identity=["stripe-test", "cus_ada"],
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    drain()
    ids = {
        "ada": customer(client, admin_key, "ada@example.com")["id"],
        "work": customer(client, admin_key, "work@example.com")["id"],
    }
    import_customer(
        runtime,
        "work@example.com",
        identity=["stripe-test", "cus_ada"],
        email_change=True,
        occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
    )
    drain()
    return ids


def test_by_id_and_by_email(client: FlaskClient, admin_key: str, merged: dict[str, str]) -> None:
    ada = _get(client, admin_key, merged["ada"])
    assert ada["email"] == "work@example.com" and ada["past_emails"] == ["ada@example.com"]
    assert set(ada["projects"]) == {"default", "app"}
    assert _get(client, admin_key, " WORK@example.com ") == ada


def test_a_merged_id_is_a_404_naming_the_survivor(
    client: FlaskClient, admin_key: str, runtime: Runtime, merged: dict[str, str]
) -> None:
    expected = {
        "code": "customer_merged",
        "message": f"this customer was merged into {merged['ada']}",
        "details": {"merged_into": merged["ada"]},
    }
    assert _get(client, admin_key, merged["work"], 404)["error"] == expected
    timeline = client.get(f"/v1/customers/{merged['work']}/timeline", headers=auth(admin_key))
    assert timeline.status_code == 404 and timeline.get_json()["error"] == expected
    # An old id never erases the survivor.
    erase = client.delete(f"/v1/customers/{merged['work']}", headers=auth(admin_key))
    assert erase.status_code == 404 and erase.get_json()["error"] == expected
    assert _get(client, admin_key, merged["ada"])["email"] == "work@example.com"
    # A key bound to a project the survivor is in is told too; others learn nothing.
    create_project(client, admin_key, "web")
    assert _get(client, make_key(runtime, ["read"], project="app"), merged["work"], 404)["error"] == expected
    web = make_key(runtime, ["read"], project="web")
    assert _get(client, web, merged["work"], 404) == _get(client, web, "cus_never_existed", 404)


def test_past_emails_do_not_find_the_customer(
    client: FlaskClient, admin_key: str, merged: dict[str, str]
) -> None:
    # An old address may since belong to someone else: only the current one identifies a person.
    assert _get(client, admin_key, "ada@example.com", 404)["error"]["code"] == "customer_not_found"


def test_project_bound_keys_see_their_project_only(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    create_project(client, admin_key, "app")
    people(
        client,
        admin_key,
        drain,
        [
            {"email": "ada@example.com", "project": "app", "status": "paid", "timestamp": at(1)},
            {"email": "ada@example.com", "status": "trial", "params": {"secret": 1}, "timestamp": at(2)},
            {"email": "bob@example.com", "status": "trial", "timestamp": at(3)},
        ],
    )
    app_key = make_key(runtime, ["read"], project="app")
    ada = _get(client, app_key, "ada@example.com")
    assert list(ada["projects"]) == ["app"] and "secret" not in str(ada)
    bob = customer(client, admin_key, "bob@example.com")
    assert _get(client, app_key, bob["id"], 404) == _get(client, app_key, "cus_nope", 404)
    assert _get(client, app_key, "bob@example.com", 404) == _get(client, app_key, "nobody@example.com", 404)


@pytest.mark.parametrize("ref", ["cus_nope", "nobody@example.com", "bad@", "@", "%00", "x" * 1000])
def test_unknown_refs_are_404(client: FlaskClient, admin_key: str, ref: str) -> None:
    assert _get(client, admin_key, ref, 404)["error"] == {
        "code": "customer_not_found",
        "message": "no such customer",
    }


def test_scopes(client: FlaskClient, runtime: Runtime, admin_key: str, drain: Callable[[], None]) -> None:
    people(client, admin_key, drain, [{"email": "ada@example.com", "timestamp": at(1)}])
    assert client.get("/v1/customers/ada@example.com").status_code == 401
    assert _get(client, make_key(runtime, ["ingest"]), "ada@example.com", 403)["error"]["code"] == "forbidden"
    assert _get(client, make_key(runtime, ["read"]), "ada@example.com")["email"] == "ada@example.com"


def test_a_merged_id_is_looked_up_without_walking_the_account(
    client: FlaskClient, admin_key: str, runtime: Runtime, merged: dict[str, str]
) -> None:
    # `id IN (the survivors)` beside the account's condition walked every customer of the account
    # on SQLite: an unknown id cost a read of the whole account.
    with statements_sent(runtime) as sent:
        assert _get(client, admin_key, merged["work"], 404)["error"]["code"] == "customer_merged"
        assert _get(client, admin_key, "cus_never_existed", 404)["error"]["code"] == "customer_not_found"
    assert sqlite_walks(runtime, sent, "customers") == []


def test_an_id_merged_twice_names_the_customer_it_became(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None], merged: dict[str, str]
) -> None:
    # work was merged into ada; now cy's provider user takes ada's address, and ada is merged into
    # cy. The earlier merge is re-pointed at cy (write_back._write_merge), so both old ids name cy.
    people(client, admin_key, drain, [{"email": "cy@example.com", "name": "Cy", "timestamp": at(3)}])
    import_customer(
        runtime,
        "cy@example.com",
        identity=["stripe-test", "cus_cy"],
        occurred_at=datetime(2026, 1, 6, tzinfo=UTC),
    )
    drain()
    import_customer(
        runtime,
        "work@example.com",
        identity=["stripe-test", "cus_cy"],
        email_change=True,
        occurred_at=datetime(2026, 1, 7, tzinfo=UTC),
    )
    drain()
    cy = customer(client, admin_key, "work@example.com")
    assert cy["name"] == "Cy" and cy["id"] not in merged.values()
    for old in (merged["work"], merged["ada"]):
        assert _get(client, admin_key, old, 404)["error"]["details"] == {"merged_into": cy["id"]}
    # A key that cannot see where the person went learns nothing, whatever the chain.
    create_project(client, admin_key, "web")
    web = make_key(runtime, ["read"], project="web")
    assert _get(client, web, merged["work"], 404) == _get(client, web, "cus_never_existed", 404)
