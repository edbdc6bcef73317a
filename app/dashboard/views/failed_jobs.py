"""Failed jobs: RQ's failed registry through `tributary.app.failed_jobs` (the module `/v1/jobs/failed…` and
`tributary jobs …` use), with retry, delete (confirmed first) and retry all for admin keys."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from redis.exceptions import RedisError
from werkzeug.wrappers import Response

from tributary.app.dashboard.guard import admin_only
from tributary.app.dashboard.views import reader, runtime
from tributary.app.domain_errors import DomainError
from tributary.app.failed_jobs import (
    MAX_LISTED,
    FailedJobView,
    delete_failed,
    find_failed,
    list_failed,
    retry_failed,
)


def _row(view: FailedJobView) -> dict[str, Any]:
    result = view.job.latest_result()
    return {**view.to_json(), "trace": (result.exc_string if result is not None else None) or ""}


def failed() -> tuple[str, int]:
    try:
        jobs = [_row(view) for view in list_failed(runtime(), reader())]
    except RedisError as exc:
        problem = f"the queue cannot be read right now ({type(exc).__name__})"
        return render_template("failed_jobs.html", jobs=[], problem=problem, limit=MAX_LISTED), 503
    return render_template("failed_jobs.html", jobs=jobs, problem=None, limit=MAX_LISTED), 200


@admin_only
def retry(job_id: str) -> Response:
    retry_failed(runtime(), find_failed(runtime(), reader(), job_id))
    return redirect(url_for("dashboard.failed_jobs"))


@admin_only
def retry_all() -> Response:
    for view in list_failed(runtime(), reader()):
        try:
            retry_failed(runtime(), view)
        except DomainError:
            continue  # it left the registry meanwhile (retried or deleted by someone else)
    return redirect(url_for("dashboard.failed_jobs"))


@admin_only
def delete(job_id: str) -> Response | str:
    view = find_failed(runtime(), reader(), job_id)
    if request.method == "GET":
        return render_template("failed_job_delete.html", j=view.to_json())
    delete_failed(view)
    return redirect(url_for("dashboard.failed_jobs"))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/failed-jobs", "failed_jobs", failed)
    bp.add_url_rule("/failed-jobs/retry", "retry_all_jobs", retry_all, methods=["POST"])
    bp.add_url_rule("/failed-jobs/<job_id>/retry", "retry_job", retry, methods=["POST"])
    bp.add_url_rule("/failed-jobs/<job_id>/delete", "delete_job", delete, methods=["GET", "POST"])
