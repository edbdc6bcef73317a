"""Admin API for imports: `POST /v1/imports` starts one in the background (an RQ job: provider
APIs are called from the worker, never from a web request), `GET /v1/imports/<id>` follows it.

A CSV is uploaded as text in the JSON body and checked in full before anything is queued: bad rows
are a 400 naming each row and reason, and nothing is stored. A project-bound key starts and sees
only its own project's imports.
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from sqlalchemy import update

from tributary.app.auth import authenticate
from tributary.app.errors import APIError, validation_error
from tributary.app.import_runs import create_import, find_import, import_json
from tributary.app.openapi import describe
from tributary.app.schemas import PROJECT_SLUG
from tributary.models import Import
from tributary.runtime.process import Runtime

bp = Blueprint("imports", __name__)

JOB_TIMEOUT_SECONDS = 6 * 3600
# workers/imports.py `run_import`, named by its path: the web process does not load the importers.
RUN_IMPORT_JOB = "tributary.workers.imports.run_import"


class ImportCreate(BaseModel):
    """An import to start"""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stripe", "clerk", "workos", "supabase", "csv"]
    source: Annotated[str, Field(max_length=40)] | None = Field(
        default=None, description="The source to import through (provider imports)."
    )
    project: Annotated[str, Field(pattern=PROJECT_SLUG)] | None = Field(
        default=None, description="CSV imports: the project slug; default `default`, or the key's project."
    )
    csv: str | None = Field(
        default=None,
        description="CSV imports: the file's text (columns email, name, status, params.<key>, created_at).",
    )
    filename: Annotated[str, Field(max_length=255)] | None = None
    dry_run: bool = Field(default=False, description="Read and count; store nothing.")


class ImportCounts(BaseModel):
    listed: int
    stored: int
    duplicates: int
    created: int
    updated: int
    unchanged: int
    skipped: int
    failed: int
    pending: int


class ImportOut(BaseModel):
    """An import and its progress"""

    id: str
    kind: str
    state: str = Field(description="queued, running, completed or failed")
    dry_run: bool
    project: str | None
    source: str | None
    filename: str | None
    counts: ImportCounts
    skipped: dict[str, int] = Field(description="Reason -> how many objects were skipped for it.")
    errors: list[dict[str, Any]] = Field(description="Bad CSV rows, failed events, or why the run stopped.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def _check_csv(text: str) -> bytes:
    # The worker's own row rules, so a file the API accepts is one the import job can read.
    from tributary.workers.importers.csv_rows import CsvInvalid, check_csv

    try:
        check_csv(lambda: io.StringIO(text))
    except CsvInvalid as exc:
        details = [{"row": bad.row, "reason": bad.reason} for bad in exc.bad_rows]
        raise APIError(400, "invalid_csv", str(exc), details or None) from None
    return text.encode()


@bp.post("/v1/imports")
@describe(
    summary="Start an import (a source's provider API, or an uploaded CSV) in the background",
    tag="admin",
    scope="admin",
    body=ImportCreate,
    responses={202: ImportOut},
    errors=(400, 401, 403, 404, 413, 429, 503),
)
def post_import() -> Response:
    principal = authenticate("admin")
    try:
        payload = ImportCreate.model_validate_json(request.get_data(cache=False))
    except ValidationError as exc:
        raise validation_error(exc) from None
    upload = None
    if payload.kind == "csv":
        if payload.csv is None:
            raise APIError(400, "validation_error", "a CSV import needs the file's text in `csv`")
        upload = _check_csv(payload.csv)
    elif payload.csv is not None or payload.project is not None:
        raise APIError(400, "validation_error", "a provider import takes a source, not csv or project")
    runtime = _runtime()
    with runtime.db.write_session() as session, session.begin():
        row = create_import(
            session,
            principal.account_id,
            kind=payload.kind,
            source_id=payload.source,
            project=payload.project,
            bound_project_id=principal.project_id,
            dry_run=payload.dry_run,
            upload=upload,
            filename=payload.filename,
        )
        import_id = row.id
    try:
        runtime.queue.enqueue(
            RUN_IMPORT_JOB,
            import_id,
            job_id=f"import-{import_id}",
            job_timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=86400,
            failure_ttl=7 * 86400,
            description=f"import {import_id}",
        )
    except RedisError:
        with runtime.db.write_session() as session, session.begin():
            session.execute(
                update(Import)
                .where(Import.id == import_id)
                .values(state="failed", errors=[{"error": "the queue is unavailable"}], upload=None)
            )
        raise APIError(503, "queue_unavailable", "the job queue is unavailable; try again") from None
    with runtime.db.session() as session:
        response = jsonify(import_json(session, find_import(session, principal.account_id, import_id)))
    response.status_code = 202
    return response


@bp.get("/v1/imports/<import_id>")
@describe(
    summary="An import's progress: state, counts, skipped reasons, errors",
    tag="admin",
    scope="admin",
    responses={200: ImportOut},
    errors=(401, 403, 404, 429),
)
def get_import(import_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.session() as session:
        return jsonify(
            import_json(session, find_import(session, principal.account_id, import_id, principal.project_id))
        )
