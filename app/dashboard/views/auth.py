"""Sign in with an API key (scope `read` or `admin`), sign out."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for

from tributary.app.auth import hash_key
from tributary.app.dashboard import session
from tributary.app.dashboard.guard import safe_next
from tributary.app.dashboard.session import DASHBOARD_SCOPES
from tributary.app.dashboard.views import runtime

MAX_KEY_CHARS = 200


def sign_in() -> Response | tuple[str, int] | str:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.viewer is not None:
            return redirect(target)  # type: ignore[return-value]
        return render_template("sign_in.html", next=target, error=None)
    token = (request.form.get("api_key") or "").strip()
    principal = None
    if token and len(token) <= MAX_KEY_CHARS:
        principal = current_app.extensions["tributary"].key_cache.get(runtime(), hash_key(token))
    if principal is None or not principal.scopes & DASHBOARD_SCOPES:
        # One message for unknown, revoked and ingest-only keys: the form is not an oracle.
        error = "That key is not valid here: use an active API key with the read or admin scope."
        return render_template("sign_in.html", next=target, error=error), 401
    session.sign_in(principal.key_id)
    return redirect(target)  # type: ignore[return-value]


def sign_out() -> Response:
    session.sign_out()
    return redirect(url_for("dashboard.sign_in"))  # type: ignore[return-value]


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/sign-in", "sign_in", sign_in, methods=["GET", "POST"])
    bp.add_url_rule("/sign-out", "sign_out", sign_out, methods=["POST"])
