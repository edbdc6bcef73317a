"""Flask's own session is never opened (app/__init__.py `NoFlaskSession`): the API pays nothing
for it, nothing can write to it by mistake, and the dashboard's own signed cookie is unaffected
(tests/dashboard/test_security.py covers that cookie)."""

from __future__ import annotations

import flask
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.dashboard.helpers import page_csrf, sign_in
from tests.helpers import auth


def test_the_api_sets_no_cookie(client: FlaskClient, admin_key: str) -> None:
    response = client.post("/v1/identify", json={"email": "a@example.com"}, headers=auth(admin_key))
    assert response.status_code == 202
    assert "Set-Cookie" not in response.headers


def test_flask_session_is_a_null_session_that_refuses_writes(app: Flask) -> None:
    with app.test_request_context("/v1/identify", headers={"Cookie": "session=anything"}):
        app.preprocess_request()
        assert not flask.session
        with pytest.raises(RuntimeError):
            flask.session["k"] = "v"


def test_the_dashboard_still_signs_in(client: FlaskClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    page_csrf(client)  # a signed-in page: its own cookie was read back and verified
