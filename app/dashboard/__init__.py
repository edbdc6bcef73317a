"""The dashboard: a small, read-mostly web view of customers, events and sources (SPEC §1).

Server-rendered Jinja pages under `/dashboard`, one blueprint, assets vendored under `static/`
(no CDN, no build step). Pages work without JavaScript; htmx (partial page updates) and uPlot
(charts) only improve them. Sign-in, CSRF and the security headers live in `guard.py`.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, redirect, url_for

from tributary.app.openapi import describe


@describe(summary="Redirect to the dashboard", tag="dashboard", responses={302: "To /dashboard/"}, errors=())
def root() -> Response:
    return redirect(url_for("dashboard.overview"))  # type: ignore[return-value]


def register(app: Flask) -> None:
    from tributary.app.dashboard import guard, templating
    from tributary.app.dashboard.views import (
        auth,
        customer,
        customers,
        events,
        failed_jobs,
        keys,
        overview,
        sources,
    )

    # A fresh blueprint per app: tests build many apps in one process.
    bp = Blueprint(
        "dashboard",
        __name__,
        url_prefix="/dashboard",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    for module in (auth, overview, customers, customer, events, failed_jobs, sources, keys):
        module.register(bp)
    guard.install(bp)
    templating.install(bp)
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", root, methods=["GET"])
