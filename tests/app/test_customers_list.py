"""GET /v1/customers: filters, sorts and their combinations, on data made by the real worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    at,
    create_project,
    emails,
    import_connector,
    import_customer,
    listing,
    people,
)
from tests.helpers import before_each_statement, customer
from tributary.runtime.process import Runtime


@pytest.fixture
def crowd(
    client: FlaskClient,
    admin_key: str,
    runtime: Runtime,
    drain: Callable[[], None],
) -> dict[str, str]:
    """Five people across projects `app` and `web`; returns email -> customer id.

    ada  app: paid,  plan=pro,  seats=5,   trial=false          active day 10
    bob  app: trial, plan=team, seats=5.0, trial=true            active day 11
         web: paid,  seats="5" (a string)                        active day 12
    cy   web: paid,  plan=pro,  seats=1,   trial=1 (a number)    active day 9
    dee  app: free,  seats=0                                     never active
    eve  default: tags=["pro"]                                   never active
    """
    create_project(client, admin_key, "app")
    create_project(client, admin_key, "web")
    people(
        client,
        admin_key,
        drain,
        [
            {
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "project": "app",
                "status": "paid",
                "params": {"plan": "pro", "seats": 5, "trial": False},
                "timestamp": at(10),
            },
            {
                "email": "bob@example.com",
                "name": "Bob Stone",
                "project": "app",
                "status": "trial",
                "params": {"plan": "team", "seats": 5.0, "trial": True},
                "timestamp": at(11),
            },
            {
                "email": "bob@example.com",
                "project": "web",
                "status": "paid",
                "params": {"seats": "5"},
                "timestamp": at(12),
            },
            {
                "email": "cy@example.com",
                "name": "Cy",
                "project": "web",
                "status": "paid",
                "params": {"plan": "pro", "seats": 1, "trial": 1},
                "timestamp": at(9),
            },
        ],
    )
    import_customer(runtime, "dee@example.com", project="app", status="free", params={"seats": 0})
    import_customer(runtime, "eve@example.com", params={"tags": ["pro"]})
    drain()
    names = ["ada", "bob", "cy", "dee", "eve"]
    return {f"{n}@example.com": customer(client, admin_key, f"{n}@example.com")["id"] for n in names}


def _by_id_desc(crowd: dict[str, str], *names: str) -> list[str]:
    return sorted((f"{n}@example.com" for n in names), key=lambda e: crowd[e], reverse=True)


def _q(client: FlaskClient, token: str, query: str) -> list[str]:
    return emails(listing(client, token, "?" + query))


def test_default_sort_is_most_recent_activity_first_with_never_active_last(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    body = listing(client, admin_key)
    assert body["next_cursor"] is None
    never = _by_id_desc(crowd, "dee", "eve")
    assert emails(body) == ["bob@example.com", "ada@example.com", "cy@example.com", *never]
    bob = body["data"][0]
    assert bob == customer(client, admin_key, "bob@example.com")  # the same shape as GET one
    assert set(bob["projects"]) == {"app", "web"}
    assert bob["last_activity_at"] == "2026-01-12T00:00:00.000000Z"
    assert [c["last_activity_at"] for c in body["data"][3:]] == [None, None]


def test_ascending_activity_puts_never_active_first(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    never = sorted(["dee@example.com", "eve@example.com"], key=lambda e: crowd[e])
    assert _q(client, admin_key, "sort=last_activity_at") == [
        *never,
        "cy@example.com",
        "ada@example.com",
        "bob@example.com",
    ]


def test_created_at_sorts_follow_creation_then_id(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    records = listing(client, admin_key)["data"]
    oldest_first = [c["email"] for c in sorted(records, key=lambda c: (c["created_at"], c["id"]))]
    assert _q(client, admin_key, "sort=created_at") == oldest_first
    assert _q(client, admin_key, "sort=-created_at") == oldest_first[::-1]


def test_project_limits_to_its_customers_and_uses_its_activity(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    # bob is active on day 12 overall but on day 11 in `app`: still after ada's day 10.
    assert _q(client, admin_key, "project=app") == ["bob@example.com", "ada@example.com", "dee@example.com"]
    assert _q(client, admin_key, "project=web") == ["bob@example.com", "cy@example.com"]
    assert _q(client, admin_key, "project=default") == ["eve@example.com"]
    # An unbound key still sees every project of the customers it lists.
    bob = listing(client, admin_key, "?project=web")["data"][0]
    assert set(bob["projects"]) == {"app", "web"}
    assert _q(client, admin_key, "project=app&active_since=" + at(11)) == ["bob@example.com"]
    assert _q(client, admin_key, "project=web&active_since=" + at(10)) == ["bob@example.com"]
    assert _q(client, admin_key, "project=web&active_since=" + at(13)) == []


def test_project_activity_sort_differs_from_the_customer_activity_sort(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None], crowd: dict[str, str]
) -> None:
    # cy becomes the most recent overall (day 20, in web), but in `app` only on day 1.
    people(
        client,
        admin_key,
        drain,
        [{"email": "cy@example.com", "timestamp": at(20), "project": "web"}],
    )
    people(client, admin_key, drain, [{"email": "cy@example.com", "timestamp": at(1), "project": "app"}])
    assert _q(client, admin_key, "sort=-last_activity_at")[0] == "cy@example.com"
    assert _q(client, admin_key, "project=app") == [
        "bob@example.com",
        "ada@example.com",
        "cy@example.com",
        "dee@example.com",
    ]
    assert _q(client, admin_key, "project=app&sort=last_activity_at") == [
        "dee@example.com",
        "cy@example.com",
        "ada@example.com",
        "bob@example.com",
    ]


def test_status_is_per_project_with_project_and_any_project_without(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    assert _q(client, admin_key, "status=paid") == ["bob@example.com", "ada@example.com", "cy@example.com"]
    assert _q(client, admin_key, "status=paid&project=app") == ["ada@example.com"]
    assert _q(client, admin_key, "status=paid&project=web") == ["bob@example.com", "cy@example.com"]
    assert _q(client, admin_key, "status=trial") == ["bob@example.com"]
    assert _q(client, admin_key, "status=trial&project=web") == []
    assert _q(client, admin_key, "status=free") == ["dee@example.com"]
    assert _q(client, admin_key, "status=churned") == []


def test_email_is_exact_after_normalizing(client: FlaskClient, admin_key: str, crowd: dict[str, str]) -> None:
    assert _q(client, admin_key, "email=" + quote(" ADA@Example.com ")) == ["ada@example.com"]
    assert _q(client, admin_key, "email=ad@example.com") == []
    assert _q(client, admin_key, "email=nobody@example.com") == []


def test_q_is_a_case_insensitive_substring_of_email_or_name(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    assert _q(client, admin_key, "q=LOVE") == ["ada@example.com"]  # the name
    assert _q(client, admin_key, "q=Bob%40EX") == ["bob@example.com"]  # the email
    assert _q(client, admin_key, "q=stone") == ["bob@example.com"]
    assert len(_q(client, admin_key, "q=example.com")) == 5
    # LIKE wildcards are literal characters.
    assert _q(client, admin_key, "q=%25") == []
    assert _q(client, admin_key, "q=_") == []
    assert _q(client, admin_key, "q=a_a") == []


def test_params_numbers_compare_as_json_numbers(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    # 5 matches 5 and 5.0 but not the string "5".
    assert _q(client, admin_key, "params.seats=5") == ["bob@example.com", "ada@example.com"]
    assert _q(client, admin_key, "params.seats=5.0") == ["bob@example.com", "ada@example.com"]
    assert _q(client, admin_key, "params.seats=5e0&project=app") == ["bob@example.com", "ada@example.com"]
    assert _q(client, admin_key, "params.seats=5&project=web") == []
    assert _q(client, admin_key, "params.seats=0") == ["dee@example.com"]
    assert _q(client, admin_key, "params.seats=-1") == []


def test_params_quoted_values_are_strings(client: FlaskClient, admin_key: str, crowd: dict[str, str]) -> None:
    assert _q(client, admin_key, "params.seats=" + quote('"5"')) == ["bob@example.com"]
    assert _q(client, admin_key, "params.seats=" + quote('"5"') + "&project=web") == ["bob@example.com"]
    assert _q(client, admin_key, "params.seats=" + quote('"5"') + "&project=app") == []
    assert _q(client, admin_key, "params.plan=pro") == ["ada@example.com", "cy@example.com"]
    assert _q(client, admin_key, "params.plan=" + quote('"pro"')) == ["ada@example.com", "cy@example.com"]
    assert _q(client, admin_key, "params.plan=Pro") == []
    assert _q(client, admin_key, "params.missing=pro") == []


def test_params_booleans_are_not_numbers(client: FlaskClient, admin_key: str, crowd: dict[str, str]) -> None:
    assert _q(client, admin_key, "params.trial=true") == ["bob@example.com"]
    assert _q(client, admin_key, "params.trial=false") == ["ada@example.com"]
    assert _q(client, admin_key, "params.trial=1") == ["cy@example.com"]
    assert _q(client, admin_key, "params.trial=0") == []
    assert _q(client, admin_key, "params.trial=" + quote('"true"')) == []


def test_params_never_match_inside_arrays(client: FlaskClient, admin_key: str, crowd: dict[str, str]) -> None:
    assert _q(client, admin_key, "params.tags=pro") == []
    # Text that is not a JSON scalar is compared as a string, never as the array it spells.
    assert _q(client, admin_key, "params.tags=" + quote('["pro"]')) == []


def test_params_and_status_must_hold_in_the_same_project(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    assert _q(client, admin_key, "params.plan=pro&params.seats=5") == ["ada@example.com"]
    assert _q(client, admin_key, "params.plan=pro&params.seats=1") == ["cy@example.com"]
    assert _q(client, admin_key, "params.plan=pro&params.seats=1&project=app") == []
    # bob is on plan team in `app` (trial) and paid in `web` (no plan): no single project has both.
    assert _q(client, admin_key, "status=paid&params.plan=team") == []
    assert _q(client, admin_key, "status=trial&params.plan=team") == ["bob@example.com"]


def test_params_keys_with_dots_and_spaces(
    client: FlaskClient, admin_key: str, drain: Callable[[], None], crowd: dict[str, str]
) -> None:
    people(
        client,
        admin_key,
        drain,
        [{"email": "zed@example.com", "params": {"a.b c": "x y", "$.x": 2}, "timestamp": at(1)}],
    )
    assert _q(client, admin_key, "params." + quote("a.b c") + "=" + quote("x y")) == ["zed@example.com"]
    assert _q(client, admin_key, "params." + quote("$.x") + "=2") == ["zed@example.com"]
    assert _q(client, admin_key, "params.a=x+y") == []


def test_dates_filter_activity_and_creation(
    client: FlaskClient, admin_key: str, crowd: dict[str, str]
) -> None:
    assert _q(client, admin_key, "active_since=" + at(10)) == ["bob@example.com", "ada@example.com"]
    assert _q(client, admin_key, "active_since=2026-01-10") == ["bob@example.com", "ada@example.com"]
    # Offsets: 01:00+02:00 is 23:00 UTC the day before; `+` may arrive decoded as a space.
    assert _q(client, admin_key, "active_since=" + quote("2026-01-10T01:00:00+02:00")) == [
        "bob@example.com",
        "ada@example.com",
    ]
    assert _q(client, admin_key, "active_since=2026-01-10T01:00:00+02:00") == [
        "bob@example.com",
        "ada@example.com",
    ]
    assert _q(client, admin_key, "active_since=" + at(12, 0, 1)) == []
    assert len(_q(client, admin_key, "created_since=2000-01-01T00:00:00Z")) == 5
    assert _q(client, admin_key, "created_since=2999-01-01T00:00:00Z") == []
    records = listing(client, admin_key, "?sort=created_at")["data"]
    newest = records[-1]
    assert newest["email"] in _q(client, admin_key, "created_since=" + quote(newest["created_at"]))


def test_filters_combine(client: FlaskClient, admin_key: str, crowd: dict[str, str]) -> None:
    query = (
        "project=app&status=paid&params.plan=pro&q=ada&active_since=" + at(10) + "&created_since=2000-01-01"
    )
    assert _q(client, admin_key, query) == ["ada@example.com"]
    assert _q(client, admin_key, query.replace("q=ada", "q=bob")) == []
    assert _q(client, admin_key, "status=paid&email=cy@example.com&sort=created_at") == ["cy@example.com"]


def test_each_page_costs_the_same_number_of_queries(
    app: Flask, client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    def statements(query: str) -> int:
        count = 0

        def counter(*_: Any) -> None:
            nonlocal count
            count += 1

        with before_each_statement(runtime.db.engine, counter):
            listing(client, admin_key, query)
        return count

    people(client, admin_key, drain, [{"email": f"p{i}@example.com", "timestamp": at(2)} for i in range(3)])
    few = statements("?limit=100")
    people(client, admin_key, drain, [{"email": f"q{i}@example.com", "timestamp": at(3)} for i in range(40)])
    assert statements("?limit=100") == few
