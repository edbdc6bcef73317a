"""Every dashboard request passes here: the session and viewer, sign-in redirects, CSRF on every
POST, scope checks for changes, security headers, and HTML error pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from tributary.app.dashboard import session
from tributary.app.dashboard.session import Viewer
from tributary.app.domain_errors import DomainError
from tributary.app.errors import APIError, http_error

F = TypeVar("F", bound=Callable[..., Any])

# No inline script or style anywhere: everything comes from our own /dashboard/static files.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PUBLIC_ENDPOINTS = {"dashboard.sign_in", "dashboard.static"}


def viewer() -> Viewer:
    """The signed-in viewer (the guard has already redirected anyone else)."""
    return cast(Viewer, g.viewer)


def admin_only(view: F) -> F:
    """Pages and changes for admin keys only: others get a 403 (and never see the buttons)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not viewer().is_admin:
            abort(403, "this needs an API key with the admin scope")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never an open redirect to another site."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/dashboard"):
            return target
    return url_for("dashboard.overview")


def _before() -> Response | None:
    if request.endpoint == "dashboard.static":
        return None
    state = session.state()
    g.viewer = session.load_viewer()
    if state.key_id is not None and g.viewer is None:
        session.sign_out()  # revoked, or its scopes changed: the cookie is worthless now
    if request.method == "POST" and not session.csrf_valid(request.form.get("csrf_token")):
        abort(403, "the form's security token is missing or expired; reload the page and try again")
    if g.viewer is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.method != "GET":
            abort(401, "sign in first")
        target = request.full_path if request.query_string else request.path
        return redirect(url_for("dashboard.sign_in", next=target))  # type: ignore[return-value]
    return None


def _after(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static":
        # Pages show customer data and one-time secrets: never keep them in a shared cache.
        response.headers["Cache-Control"] = "no-store"
        session.save(response)
    return response


def _error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, message=message), status


def install(bp: Blueprint) -> None:
    bp.before_request(_before)
    bp.after_request(_after)

    @bp.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[str, int]:
        return _error_page(exc.code or 500, exc.description or exc.name)

    @bp.errorhandler(APIError)
    @bp.errorhandler(DomainError)
    def _api(exc: APIError | DomainError) -> tuple[str, int]:
        return _error_page(http_error(exc).status, exc.message)

    @bp.errorhandler(OperationalError)
    def _database(exc: OperationalError) -> tuple[str, int]:
        # Down, or (SQLite) a write that met the worker's: nothing was changed, so trying again is safe.
        return _error_page(503, "the database is busy or unavailable; nothing was changed, try again")
