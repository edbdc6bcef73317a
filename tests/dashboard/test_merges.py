"""Merges on the customer page: the survivor's timeline shows the merge and its past email and
identity; the absorbed customer's old URL leads to the survivor."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime

from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    import_connector,
    import_customer,
    people,
)
from tests.dashboard.helpers import sign_in
from tests.helpers import customer
from tributary.runtime.process import Runtime


def test_a_merge_is_shown_and_the_old_id_redirects(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    people(
        client,
        admin_key,
        drain,
        [
            {"email": "ada@example.com", "name": "Ada", "status": "paid", "timestamp": at(1)},
            {"email": "work@example.com", "status": "trial", "timestamp": at(2)},
        ],
    )
    import_customer(
        runtime,
        "ada@example.com",
        identity=["stripe-test", "cus_ada"],
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    drain()
    ada = customer(client, admin_key, "ada@example.com")["id"]
    work = customer(client, admin_key, "work@example.com")["id"]
    import_customer(
        runtime,
        "work@example.com",
        identity=["stripe-test", "cus_ada"],
        email_change=True,
        occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
    )
    drain()
    survivor = customer(client, admin_key, "work@example.com")["id"]
    absorbed = work if survivor == ada else ada

    sign_in(client, admin_key)
    moved = client.get(f"/dashboard/customers/{absorbed}")
    assert moved.status_code == 302 and moved.headers["Location"].endswith(f"/dashboard/customers/{survivor}")
    page = html.unescape(client.get(f"/dashboard/customers/{survivor}").get_data(as_text=True))
    assert "ada@example.com" in page and "stripe-test" in page and "cus_ada" in page  # past email, identity
    assert ">merge<" in page and f"Merged customer <code>{absorbed}</code>" in page
