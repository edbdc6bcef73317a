"""GET /v1/customers pagination: keyset pages over ties and never-active customers, every sort."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    create_project,
    import_connector,
    import_customer,
    listing,
    people,
    walk,
)
from tributary.runtime.process import Runtime

SORTS = ["-last_activity_at", "last_activity_at", "-created_at", "created_at"]


@pytest.fixture
def tied(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    drain: Callable[[], None],
) -> list[dict[str, Any]]:
    """17 customers: 7 active at the very same instant, 3 at another, 2 alone, 5 never active.
    Some are also in project `app`, with ties and never-active rows of their own there."""
    create_project(client, admin_key, "app")
    rows: list[dict[str, Any]] = []
    rows += [{"email": f"tie{i}@example.com", "timestamp": at(5)} for i in range(7)]
    rows += [{"email": f"pair{i}@example.com", "timestamp": at(6, 12)} for i in range(3)]
    rows += [
        {"email": "early@example.com", "timestamp": at(1)},
        {"email": "late@example.com", "timestamp": at(9)},
    ]
    rows += [{"email": f"tie{i}@example.com", "timestamp": at(3), "project": "app"} for i in range(0, 7, 2)]
    people(client, admin_key, drain, rows)
    for i in range(5):
        import_customer(runtime, f"never{i}@example.com", project="app" if i % 2 else "default")
    drain()
    body = listing(client, admin_key, "?limit=200")
    assert len(body["data"]) == 17 and body["next_cursor"] is None
    return list(body["data"])


def _expected(records: list[dict[str, Any]], sort: str, project: str | None = None) -> list[str]:
    """The documented order: (sort value, id), never-active counted as the oldest."""
    field = sort.lstrip("-")
    descending = sort.startswith("-")

    def value(record: dict[str, Any]) -> str | None:
        if project is not None and field == "last_activity_at":
            return str(record["projects"][project]["last_activity_at"] or "") or None
        return str(record[field] or "") or None

    chosen = [r for r in records if project is None or project in r["projects"]]
    ordered = sorted(
        chosen, key=lambda r: (value(r) is not None, value(r) or "", r["id"]), reverse=descending
    )
    return [r["email"] for r in ordered]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [1, 2, 3, 7, 16])
def test_pages_cover_every_customer_once_in_order(
    client: FlaskClient, admin_key: str, tied: list[dict[str, Any]], sort: str, limit: int
) -> None:
    expected = _expected(tied, sort)
    assert len(set(expected)) == 17
    assert [r["email"] for r in listing(client, admin_key, f"?sort={sort}&limit=200")["data"]] == expected
    assert walk(client, admin_key, f"?sort={sort}", limit) == expected


def test_default_order_puts_ties_by_id_and_never_active_last(
    client: FlaskClient, admin_key: str, tied: list[dict[str, Any]]
) -> None:
    order = [r["email"] for r in tied]
    assert order[0] == "late@example.com"
    assert set(order[1:4]) == {f"pair{i}@example.com" for i in range(3)}
    assert set(order[4:11]) == {f"tie{i}@example.com" for i in range(7)}
    assert order[11] == "early@example.com"
    assert set(order[12:]) == {f"never{i}@example.com" for i in range(5)}
    ties = [r["id"] for r in tied[4:11]]
    assert ties == sorted(ties, reverse=True)


@pytest.mark.parametrize("sort", ["-last_activity_at", "last_activity_at"])
@pytest.mark.parametrize("limit", [1, 2, 4])
def test_project_pages_use_project_activity_with_ties_and_nulls(
    client: FlaskClient, admin_key: str, tied: list[dict[str, Any]], sort: str, limit: int
) -> None:
    expected = _expected(tied, sort, project="app")
    assert len(expected) == 6  # four tied at day 3, two never active
    assert walk(client, admin_key, f"?project=app&sort={sort}", limit) == expected


def test_filtered_pages(client: FlaskClient, admin_key: str, tied: list[dict[str, Any]]) -> None:
    expected = [r["email"] for r in tied if r["email"].startswith("tie")]
    assert walk(client, admin_key, "?q=tie", 2) == expected
    assert walk(client, admin_key, "?q=tie&sort=created_at", 3) == _expected(
        [r for r in tied if r["email"].startswith("tie")], "created_at"
    )


def test_limit_may_change_between_pages(
    client: FlaskClient, admin_key: str, tied: list[dict[str, Any]]
) -> None:
    first = listing(client, admin_key, "?limit=5")
    rest = listing(client, admin_key, f"?limit=200&cursor={first['next_cursor']}")
    assert [r["email"] for r in first["data"] + rest["data"]] == [r["email"] for r in tied]
    assert rest["next_cursor"] is None


def test_a_cursor_survives_new_customers_arriving(
    client: FlaskClient, admin_key: str, drain: Callable[[], None], tied: list[dict[str, Any]]
) -> None:
    first = listing(client, admin_key, "?limit=4")
    # Newer than everything on the first page: it sorts before the cursor, so the walk skips it.
    people(client, admin_key, drain, [{"email": "newcomer@example.com", "timestamp": at(20)}])
    rest = listing(client, admin_key, f"?limit=200&cursor={first['next_cursor']}")
    assert [r["email"] for r in first["data"] + rest["data"]] == [r["email"] for r in tied]


def test_default_and_maximum_limits(
    client: FlaskClient, admin_key: str, drain: Callable[[], None], tied: list[dict[str, Any]]
) -> None:
    people(
        client, admin_key, drain, [{"email": f"bulk{i}@example.com", "timestamp": at(2)} for i in range(200)]
    )
    page = listing(client, admin_key)
    assert len(page["data"]) == 50 and page["next_cursor"]
    page = listing(client, admin_key, "?limit=200")
    assert len(page["data"]) == 200 and page["next_cursor"]
    assert len(listing(client, admin_key, f"?limit=200&cursor={page['next_cursor']}")["data"]) == 17
