"""Operator API for RQ's failed-job registry (SPEC §5, admin): list, show, retry one or all, delete.
The registry logic lives in app/failed_jobs.py, shared with the CLI."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from tributary.app.auth import Principal, authenticate
from tributary.app.customer_query import Reader
from tributary.app.domain_errors import DomainError
from tributary.app.failed_jobs import delete_failed, find_failed, list_failed, retry_failed
from tributary.app.openapi import describe
from tributary.app.ops_schemas import FailedJob, FailedJobList, RetryAllOut
from tributary.runtime.process import Runtime

bp = Blueprint("jobs", __name__)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def _reader(principal: Principal) -> Reader:
    return Reader(principal.account_id, principal.project_id)


@bp.get("/v1/jobs/failed")
@describe(
    summary="Jobs in the failed registry (their automatic retries are spent), most recent first",
    tag="ops",
    scope="admin",
    responses={200: FailedJobList},
    errors=(401, 403, 429),
)
def get_failed() -> Response:
    principal = authenticate("admin")
    return jsonify(data=[view.to_json() for view in list_failed(_runtime(), _reader(principal))])


@bp.get("/v1/jobs/failed/<job_id>")
@describe(
    summary="A failed job",
    tag="ops",
    scope="admin",
    responses={200: FailedJob},
    errors=(401, 403, 404, 429),
)
def get_failed_job(job_id: str) -> Response:
    principal = authenticate("admin")
    return jsonify(find_failed(_runtime(), _reader(principal), job_id).to_json())


@bp.post("/v1/jobs/failed/<job_id>/retry")
@describe(
    summary="Requeue a failed job: its event is applied again by a worker",
    tag="ops",
    scope="admin",
    responses={202: FailedJob},
    errors=(401, 403, 404, 409, 429),
)
def retry_job(job_id: str) -> Response:
    principal = authenticate("admin")
    runtime = _runtime()
    view = find_failed(runtime, _reader(principal), job_id)
    retry_failed(runtime, view)
    response = jsonify(view.to_json())
    response.status_code = 202
    return response


@bp.post("/v1/jobs/failed/retry")
@describe(
    summary="Requeue every failed job this key may see",
    tag="ops",
    scope="admin",
    responses={202: RetryAllOut},
    errors=(401, 403, 429),
)
def retry_all() -> Response:
    principal = authenticate("admin")
    runtime = _runtime()
    requeued = []
    for view in list_failed(runtime, _reader(principal)):
        try:
            retry_failed(runtime, view)
        except DomainError:
            continue  # it left the registry meanwhile (retried or deleted by someone else)
        requeued.append(view.job.id)
    response = jsonify(requeued=len(requeued), job_ids=requeued)
    response.status_code = 202
    return response


@bp.delete("/v1/jobs/failed/<job_id>")
@describe(
    summary="Forget a failed job; its event stays `failed` and listed",
    tag="ops",
    scope="admin",
    responses={204: "Deleted"},
    errors=(401, 403, 404, 429),
)
def delete_job(job_id: str) -> Response:
    principal = authenticate("admin")
    delete_failed(find_failed(_runtime(), _reader(principal), job_id))
    return Response(status=204)
