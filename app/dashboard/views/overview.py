"""Overview: customers per project and status, the last 24 hours of events per source, the backlog."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from tributary.app.dashboard import stats
from tributary.app.dashboard.rejecting import rejecting
from tributary.app.dashboard.stats import OverviewCache
from tributary.app.dashboard.views import db, reader, runtime
from tributary.app.sources import list_sources
from tributary.models.base import utcnow


def overview() -> str:
    r = reader()
    cache: OverviewCache = current_app.extensions.setdefault("tributary.dashboard.overview", OverviewCache())
    with db().session() as session:
        data = cache.get(session, r.account_id, r.project_id)
        sources = [
            (s.id, f"{s.connector} · {s.name or s.id}")
            for s in list_sources(session, r.account_id, r.project_id)
        ]
    refusing = rejecting(runtime(), sources)
    now = utcnow()
    oldest_age = (now - data.oldest_pending).total_seconds() if data.oldest_pending else None
    charts = [s.chart(data.hours) for s in data.sources]
    return render_template(
        "overview.html",
        data=data,
        charts=charts,
        oldest_age=oldest_age,
        cap=stats.COUNT_CAP,
        refusing=refusing,
    )


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/", "overview", overview)
