"""Failed jobs (read-only until the ops API's retry and delete are merged)."""

from __future__ import annotations

from flask import Blueprint, render_template

from app.dashboard.failed_jobs import MAX_JOBS, failed_jobs
from app.dashboard.views import db, reader, runtime


def failed() -> str:
    with db().session() as session:
        jobs, problem = failed_jobs(runtime(), session, reader())
    return render_template("failed_jobs.html", jobs=jobs, problem=problem, limit=MAX_JOBS)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/failed-jobs", "failed_jobs", failed)
