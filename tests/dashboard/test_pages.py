"""What the dashboard pages show, and the admin actions they offer (Flask client, real pipeline)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.dashboard.helpers import page_csrf, seed, sign_in
from tests.helpers import auth, make_key, sqlite_walks, statements_sent
from tributary.app.dashboard.stats import id_floor
from tributary.models.base import sortable_id, utcnow
from tributary.runtime.process import Runtime


def _text(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def test_overview_counts_customers_and_charts_events(
    client: FlaskClient, admin_key: str, runtime: Runtime, drain: Callable[[], None]
) -> None:
    seed(client, admin_key, drain)
    sign_in(client, admin_key)
    with statements_sent(runtime) as sent:
        page = _text(client, "/dashboard/")
    # The chart reads the window's range of event ids; on SQLite the account's own condition took
    # an account index instead and read every event the account ever had.
    assert sqlite_walks(runtime, sent, "events") == []
    assert re.search(r"Customers</span><span class=\"stat-value\">3<", page)
    # shop: ada paid, bob trial; app: ada free, cy active.
    assert 'href="/dashboard/customers?project=shop&status=paid"' in page
    raw = client.get("/dashboard/").get_data(as_text=True)
    charts = [json.loads(html.unescape(m)) for m in re.findall(r'data-chart="([^"]+)"', raw)]
    assert len(charts) == 1 and charts[0]["label"] == "API (identify, ping)"
    assert sum(charts[0]["received"]) == 6 and sum(charts[0]["processed"]) == 6
    assert len(charts[0]["x"]) == 24
    assert 'Pending events</span><span class="stat-value">0<' in page


def test_id_floor_orders_with_minted_ids() -> None:
    now = utcnow()
    assert id_floor("evt", now.replace(microsecond=0)) <= sortable_id("evt")
    assert id_floor("evt", now.replace(year=now.year + 1)) > sortable_id("evt")


def test_customers_filters_by_project_and_param_from_the_form(
    client: FlaskClient, admin_key: str, drain: Callable[[], None]
) -> None:
    seed(client, admin_key, drain)
    sign_in(client, admin_key)
    page = _text(client, "/dashboard/customers?project=shop&pk=plan&pv=basic&pk=&pv=&q=&sort=-created_at")
    assert "bob@example.com" in page and "ada@example.com" not in page and "cy@example.com" not in page
    assert 'value="plan"' in page and 'value="basic"' in page  # the form keeps what was asked
    everyone = _text(client, "/dashboard/customers")
    assert all(f"{n}@example.com" in everyone for n in ("ada", "bob", "cy"))
    # ada's row carries both projects' badges.
    ada_row = everyone[
        everyone.index("ada@example.com") : everyone.index("</tr>", everyone.index("ada@example.com"))
    ]
    assert ada_row.count('class="pslug"') == 2 and "tone-good" in ada_row


def test_invalid_filters_are_shown_not_crashed(
    client: FlaskClient, admin_key: str, drain: Callable[[], None]
) -> None:
    seed(client, admin_key, drain)
    sign_in(client, admin_key)
    page = _text(client, "/dashboard/customers?active_since=yesterday&status=Not%20A%20Slug", status=400)
    assert "active_since" in page and "status" in page and "not valid" in page
    assert "no project with slug" in _text(client, "/dashboard/customers?project=nope", status=404)


def test_customers_pages_with_cursors(client: FlaskClient, admin_key: str, drain: Callable[[], None]) -> None:
    seed(client, admin_key, drain)
    sign_in(client, admin_key)
    first = _text(client, "/dashboard/customers?limit=2")
    next_link = html.unescape(re.search(r'href="(/dashboard/customers\?[^"]*cursor=[^"]+)"', first).group(1))
    second = _text(client, next_link)
    assert "Next page" not in second and "First page" in second
    found = {e for e in ("ada", "bob", "cy") if f"{e}@example.com" in first + second}
    assert found == {"ada", "bob", "cy"}


def test_customer_shows_provenance_linked_to_the_event_and_the_stale_write(
    client: FlaskClient, admin_key: str, drain: Callable[[], None]
) -> None:
    ids = seed(client, admin_key, drain)
    sign_in(client, admin_key)
    page = _text(client, f"/dashboard/customers/{ids['ada']}")
    plan_row = page[page.index("<code>plan</code>") :]
    plan_row = plan_row[: plan_row.index("</tr>")]
    assert '"pro"' in plan_row and f'href="/dashboard/events/{ids["plan_event"]}"' in plan_row
    assert "2026-01-03 00:00:00" in plan_row
    assert "stale write" in page and '"basic"' in page  # the late, older plan write, ignored
    # Newest first by event time: the app signup (day 4) precedes the shop upgrade (day 3).
    assert page.index("2026-01-04 00:00:00") < page.index("2026-01-03 00:00:00")
    event = _text(client, f"/dashboard/events/{ids['plan_event']}")
    assert ids["ada"] in event and '"plan": "pro"' in event


def test_merged_customer_redirects_to_survivor_and_unknown_is_404(
    client: FlaskClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    assert _text(client, "/dashboard/customers/cus_nobody", status=404).count("Not found") >= 1
    assert client.get("/dashboard/events/evt_nope").status_code == 404


def test_event_detail_masks_credentials(client: FlaskClient, runtime: Runtime, admin_key: str) -> None:
    from tests.app.customer_data import import_customer

    event_id = import_customer(
        runtime, "dee@example.com", headers={"stripe-signature": "t=1,v1=abcdef", "user-agent": "Stripe/1.0"}
    )
    sign_in(client, admin_key)
    page = _text(client, f"/dashboard/events/{event_id}")
    assert "abcdef" not in page and "Stripe/1.0" in page and "dee@example.com" in page
    assert event_id in _text(client, "/dashboard/events?status=pending")
    assert event_id not in _text(client, "/dashboard/events?status=failed")
    assert event_id in _text(client, "/dashboard/events?email=DEE@example.com")
    assert event_id not in _text(client, "/dashboard/events?email=someone@example.com")


def test_admin_creates_a_key_once_and_revokes_it(client: FlaskClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    token = page_csrf(client, "/dashboard/keys")
    created = client.post(
        "/dashboard/keys", data={"csrf_token": token, "name": "ci", "scopes": "read", "project": ""}
    )
    assert created.status_code == 200
    new_key = re.search(r'value="(trb_[^"]+)"', created.get_data(as_text=True)).group(1)
    assert client.get("/v1/customers", headers=auth(new_key)).status_code == 200
    listing = _text(client, "/dashboard/keys")
    assert new_key not in listing and new_key[:12] in listing
    key_id = re.search(r"/dashboard/keys/(key_[^/]+)/revoke", listing.split(new_key[:12])[1]).group(1)
    assert client.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf_token": token}).status_code == 302
    assert client.get("/v1/customers", headers=auth(new_key)).status_code == 401
    bad = client.post("/dashboard/keys", data={"csrf_token": token, "name": "x"})
    assert bad.status_code == 400 and "at least one scope" in bad.get_data(as_text=True)


def test_admin_creates_a_source_and_sees_the_generated_secret_once(
    client: FlaskClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    token = page_csrf(client, "/dashboard/sources/new")
    created = client.post(
        "/dashboard/sources/new",
        data={
            "csrf_token": token,
            "connector": "standard",
            "project": "default",
            "name": "app",
            "generate": "on",
        },
    )
    assert created.status_code == 200
    page = created.get_data(as_text=True)
    secret = re.search(r'value="(whsec_[^"]+)"', page).group(1)
    url = re.search(r'value="(http[^"]+/webhooks/src_[^"]+)"', page).group(1)
    listing = _text(client, "/dashboard/sources")
    assert url in listing and secret not in listing and "whsec_…" + secret[-4:] in listing
    bad = client.post("/dashboard/sources/new", data={"csrf_token": token, "connector": "nope"})
    assert bad.status_code == 400


def test_admin_erases_a_customer_after_typing_the_email(
    client: FlaskClient, admin_key: str, drain: Callable[[], None]
) -> None:
    ids = seed(client, admin_key, drain)
    sign_in(client, admin_key)
    path = f"/dashboard/customers/{ids['bob']}/erase"
    token = page_csrf(client, path)
    assert (
        client.post(path, data={"csrf_token": token, "confirm_email": "ada@example.com"}).status_code == 400
    )
    assert client.get(f"/v1/customers/{ids['bob']}", headers=auth(admin_key)).status_code == 200
    done = client.post(path, data={"csrf_token": token, "confirm_email": "BOB@example.com "})
    assert done.status_code == 200 and "erased" in done.get_data(as_text=True)
    assert client.get(f"/v1/customers/{ids['bob']}", headers=auth(admin_key)).status_code == 404


def test_project_bound_admin_manages_only_its_project(
    client: FlaskClient, runtime: Runtime, admin_key: str, drain: Callable[[], None]
) -> None:
    seed(client, admin_key, drain)
    sign_in(client, make_key(runtime, ["admin"], project="app"))
    token = page_csrf(client, "/dashboard/keys")
    refused = client.post("/dashboard/keys", data={"csrf_token": token, "scopes": "read", "project": "shop"})
    assert refused.status_code == 403
    ok = client.post("/dashboard/keys", data={"csrf_token": token, "scopes": "read", "project": "app"})
    assert ok.status_code == 200
    source = client.post(
        "/dashboard/sources/new", data={"csrf_token": token, "connector": "standard", "project": "shop"}
    )
    assert source.status_code == 403


def test_overview_caps_backlog_counts_and_caches_briefly(
    client: FlaskClient, runtime: Runtime, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.app.customer_data import import_customer
    from tributary.app.dashboard import stats

    monkeypatch.setattr(stats, "COUNT_CAP", 2)
    for n in range(3):
        import_customer(runtime, f"p{n}@example.com")  # stored, not applied: pending
    sign_in(client, admin_key)
    page = _text(client, "/dashboard/")
    assert 'Pending events</span><span class="stat-value">2+<' in page
    import_customer(runtime, "late@example.com")
    assert _text(client, "/dashboard/") == page  # the same figures within the cache's few seconds
