"""The dashboard's sign-in session: a signed, expiring cookie holding the API key's *id* and a CSRF
token, never the key itself. Every request re-reads the key row, so a revoked key (or one whose
scopes no longer allow reading) is signed out on its next page, not when the cookie expires.

Before sign-in the cookie carries only a CSRF token, so the sign-in form is protected too; signing
in issues a fresh token (an attacker who planted a cookie cannot ride the new session).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, g, request
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select

from tributary.app.auth import Principal
from tributary.models import ApiKey, Project

COOKIE = "trb_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_SECONDS = 8 * 3600
# A pre-sign-in cookie only needs to outlive filling in the sign-in form.
ANONYMOUS_SECONDS = 3600
DASHBOARD_SCOPES = frozenset({"read", "admin"})


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the key's principal and what the pages show about it."""

    principal: Principal
    key_prefix: str
    key_name: str
    project_slug: str | None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.principal.scopes

    @property
    def project_id(self) -> str | None:
        return self.principal.project_id


@dataclass(slots=True)
class SessionState:
    csrf: str
    key_id: str | None = None
    changed: bool = False
    cleared: bool = False


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.config["SECRET_KEY"]), salt="tributary.dashboard.session")


def _read_cookie() -> SessionState | None:
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 1024:
        return None
    try:
        data: Any = _serializer().loads(raw, max_age=SESSION_SECONDS)
    except (BadData, ValueError, UnicodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    key_id = data.get("k")
    return SessionState(csrf=data["c"], key_id=key_id if isinstance(key_id, str) else None)


def state() -> SessionState:
    """This request's session, created (with a fresh CSRF token) when there is none yet."""
    current: SessionState | None = g.get("dashboard_session")
    if current is None:
        current = _read_cookie() or SessionState(csrf=secrets.token_urlsafe(32), changed=True)
        g.dashboard_session = current
    return current


def csrf_token() -> str:
    return state().csrf


def csrf_valid(submitted: str | None) -> bool:
    # Only a token read back from our own signed cookie counts; a brand-new session has none to match.
    existing = _read_cookie()
    if existing is None or not submitted:
        return False
    return hmac.compare_digest(existing.csrf.encode(), submitted.encode())


def sign_in(key_id: str) -> None:
    g.dashboard_session = SessionState(csrf=secrets.token_urlsafe(32), key_id=key_id, changed=True)


def sign_out() -> None:
    g.dashboard_session = SessionState(csrf=secrets.token_urlsafe(32), changed=True, cleared=True)


def save(response: Response) -> Response:
    current: SessionState | None = g.get("dashboard_session")
    if current is None or not current.changed:
        return response
    secure = request.is_secure
    if current.cleared:
        response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=secure, httponly=True, samesite="Strict")
        return response
    payload: dict[str, str] = {"c": current.csrf}
    if current.key_id is not None:
        payload["k"] = current.key_id
    response.set_cookie(
        COOKIE,
        _serializer().dumps(payload),
        max_age=SESSION_SECONDS if current.key_id else ANONYMOUS_SECONDS,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="Strict",
    )
    return response


def load_viewer() -> Viewer | None:
    """The signed-in viewer, re-checked against the key row on every request."""
    key_id = state().key_id
    if key_id is None:
        return None
    runtime = current_app.extensions["tributary"].runtime
    with runtime.db.session() as session:
        row = session.execute(
            select(ApiKey, Project.slug)
            .outerjoin(Project, Project.id == ApiKey.project_id)
            .where(ApiKey.id == key_id)
        ).first()
    if row is None:
        return None
    key, slug = row
    scopes = frozenset(str(s) for s in key.scopes)
    if key.revoked_at is not None or not scopes & DASHBOARD_SCOPES:
        return None
    return Viewer(Principal(key.id, key.account_id, scopes, key.project_id), key.prefix, key.name, slug)
