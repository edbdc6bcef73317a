"""Dashboard sign-in, session cookie, CSRF, security headers, scopes and tenancy (Flask client)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.dashboard.helpers import csrf_from, page_csrf, seed, sign_in
from tests.helpers import auth, make_key
from tributary.app.dashboard.session import COOKIE
from tributary.runtime.process import Runtime

PAGES = [
    "/dashboard/",
    "/dashboard/customers",
    "/dashboard/events",
    "/dashboard/failed-jobs",
    "/dashboard/sources",
]


def test_root_and_pages_redirect_to_sign_in(client: FlaskClient) -> None:
    assert client.get("/").headers["Location"].endswith("/dashboard/")
    for path in [*PAGES, "/dashboard/keys", "/dashboard/customers/cus_x"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/dashboard/sign-in?next=" in response.headers["Location"]


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(client: FlaskClient, admin_key: str) -> None:
    response = sign_in(client, admin_key)
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Max-Age=28800" in cookie
    assert admin_key not in cookie and admin_key[4:20] not in cookie
    for path in [*PAGES, "/dashboard/keys"]:
        assert client.get(path).status_code == 200, path


def test_bad_keys_are_refused(client: FlaskClient, runtime: Runtime, admin_key: str) -> None:
    ingest_only = make_key(runtime, ["ingest"])
    for token in ("trb_nope", ingest_only, "x" * 500):
        response = sign_in(client, token, expect=401)
        assert "not valid here" in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_sign_in_refuses_an_external_next(client: FlaskClient, admin_key: str) -> None:
    page = client.get("/dashboard/sign-in?next=https://evil.example/x")
    response = client.post(
        "/dashboard/sign-in",
        data={"api_key": admin_key, "csrf_token": csrf_from(page.get_data(as_text=True)),
              "next": "//evil.example/x"},
    )  # fmt: skip
    assert response.headers["Location"] == "/dashboard/"


def test_sign_out_clears_the_session(client: FlaskClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    token = page_csrf(client)
    response = client.post("/dashboard/sign-out", data={"csrf_token": token})
    assert response.status_code == 302
    assert any(h.startswith(f"{COOKIE}=;") for h in response.headers.getlist("Set-Cookie"))
    assert client.get("/dashboard/").status_code == 302


def test_a_revoked_key_is_signed_out_on_its_next_page(
    client: FlaskClient, runtime: Runtime, admin_key: str
) -> None:
    reader = make_key(runtime, ["read"])
    sign_in(client, reader)
    assert client.get("/dashboard/customers").status_code == 200
    key_id = client.get("/v1/keys", headers=auth(admin_key)).get_json()["data"][-1]["id"]
    assert client.delete(f"/v1/keys/{key_id}", headers=auth(admin_key)).status_code == 200
    assert client.get("/dashboard/customers").status_code == 302


def test_a_tampered_cookie_is_ignored(client: FlaskClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    cookie = client.get_cookie(COOKIE, path="/dashboard")
    assert cookie is not None
    client.set_cookie(COOKIE, cookie.value[:-3] + "abc", path="/dashboard")
    assert client.get("/dashboard/").status_code == 302


def test_posts_without_a_valid_csrf_token_are_refused(client: FlaskClient, admin_key: str) -> None:
    # Without a session, the sign-in form itself needs the token.
    assert client.post("/dashboard/sign-in", data={"api_key": admin_key}).status_code == 403
    sign_in(client, admin_key)
    for data in ({}, {"csrf_token": "forged"}):
        assert client.post("/dashboard/sign-out", data=data).status_code == 403
        assert client.post("/dashboard/keys", data={**data, "scopes": "read"}).status_code == 403
    keys = client.get("/dashboard/keys").get_data(as_text=True)
    assert keys.count('name="csrf_token"') >= 2  # every form carries it


def test_security_headers_on_every_page(client: FlaskClient, admin_key: str) -> None:
    responses = [client.get("/dashboard/sign-in")]
    sign_in(client, admin_key)
    responses += [client.get(p) for p in [*PAGES, "/dashboard/keys", "/dashboard/events/evt_missing"]]
    for response in responses:
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        html = response.get_data(as_text=True)
        assert "<style" not in html and " style=" not in html and "onclick" not in html
        assert "<script>" not in html and "<script src" in html


def test_static_assets_are_vendored(client: FlaskClient) -> None:
    assets = ("vendor/htmx-2.0.11.min.js", "vendor/uPlot-1.6.32.iife.min.js", "dashboard.css", "dashboard.js")
    for name in assets:
        assert client.get(f"/dashboard/static/{name}").status_code == 200, name
    for licence in ("vendor/htmx.LICENSE", "vendor/uPlot.LICENSE"):
        assert client.get(f"/dashboard/static/{licence}").status_code == 200


def test_a_read_key_sees_no_mutation_buttons_and_cannot_post(
    client: FlaskClient, runtime: Runtime, admin_key: str, drain: Callable[[], None]
) -> None:
    ids = seed(client, admin_key, drain)
    sign_in(client, make_key(runtime, ["read"]))
    token = page_csrf(client)
    for path in (f"/dashboard/customers/{ids['ada']}", "/dashboard/sources", "/dashboard/customers"):
        html = client.get(path).get_data(as_text=True)
        assert "Erase" not in html and "New source" not in html and "Revoke" not in html
        assert 'href="/dashboard/keys"' not in html
    assert client.get("/dashboard/keys").status_code == 403
    assert client.get(f"/dashboard/customers/{ids['ada']}/erase").status_code == 403
    for path, data in [
        ("/dashboard/keys", {"scopes": "admin"}),
        (f"/dashboard/customers/{ids['ada']}/erase", {"confirm_email": "ada@example.com"}),
        ("/dashboard/sources/new", {"connector": "standard", "generate": "on"}),
        ("/dashboard/keys/key_x/revoke", {}),
    ]:
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403, path
    assert client.get(f"/v1/customers/{ids['ada']}", headers=auth(admin_key)).status_code == 200


def test_a_project_bound_key_sees_only_its_project(
    client: FlaskClient, runtime: Runtime, admin_key: str, drain: Callable[[], None]
) -> None:
    ids = seed(client, admin_key, drain)
    sign_in(client, make_key(runtime, ["read"], project="app"))
    assert client.get(f"/dashboard/customers/{ids['bob']}").status_code == 404  # shop only
    ada = client.get(f"/dashboard/customers/{ids['ada']}").get_data(as_text=True)
    assert "free" in ada and "plan" not in ada  # her shop params stay hidden
    listing = client.get("/dashboard/customers").get_data(as_text=True)
    assert "cy@example.com" in listing and "bob@example.com" not in listing
    assert '<option value="shop"' not in listing
    assert client.get("/dashboard/customers?project=shop").status_code == 403
    event = client.get(f"/dashboard/events/{ids['plan_event']}")
    assert event.status_code == 404
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert ">shop<" not in overview


@pytest.mark.parametrize("scope", ["read", "admin"])
def test_pages_render_for_each_scope(
    client: FlaskClient, runtime: Runtime, admin_key: str, drain: Callable[[], None], scope: str
) -> None:
    ids = seed(client, admin_key, drain)
    sign_in(client, make_key(runtime, [scope]))
    for path in [*PAGES, f"/dashboard/customers/{ids['ada']}", f"/dashboard/events/{ids['plan_event']}"]:
        assert client.get(path).status_code == 200, path


def test_an_expired_session_is_signed_out(
    client: FlaskClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itsdangerous.timed
    from itsdangerous import URLSafeTimedSerializer

    from tributary.app.dashboard.session import SESSION_SECONDS

    key_id = client.get("/v1/keys", headers=auth(admin_key)).get_json()["data"][0]["id"]
    signer = URLSafeTimedSerializer("test-secret", salt="tributary.dashboard.session")
    client.set_cookie(COOKIE, signer.dumps({"c": "x", "k": key_id}), path="/dashboard")
    assert client.get("/dashboard/").status_code == 200  # a session made this way works while fresh
    issued = int(itsdangerous.timed.time.time()) - SESSION_SECONDS - 60
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: issued)
    stale = signer.dumps({"c": "x", "k": key_id})
    monkeypatch.undo()
    client.set_cookie(COOKIE, stale, path="/dashboard")
    assert client.get("/dashboard/").status_code == 302
