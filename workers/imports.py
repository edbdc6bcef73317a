"""Running an import: the RQ job behind `POST /v1/imports`, and the same code for the CLI.

`execute` reads an `imports` row, lists the source's objects (or the uploaded CSV), sends them
through `workers/importers/pipeline.py`, and keeps the row's state, counts and errors current so
`GET /v1/imports/<id>` can follow it. A failure is recorded on the row (state `failed`, the reason
in `errors`) and the source's checkpoint stays, so the next import resumes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from sqlalchemy import select, update

from tributary.connectors.base import SourceConfig
from tributary.models import Import, Project, Source
from tributary.models.base import utcnow
from tributary.models.imports import PROVIDER_IMPORT_KINDS
from tributary.runtime.process import Runtime, current
from tributary.workers.importers.csv_rows import CsvInvalid, check_csv, csv_items
from tributary.workers.importers.items import Listed
from tributary.workers.importers.pipeline import ImportTarget, Tally, load_checkpoints, run_pipeline
from tributary.workers.importers.stripe_list import Backoff, ImportFailed, list_stripe

__all__ = ["PROVIDER_KINDS", "ImportFailed", "execute", "reconcile_all", "reconcile_if_due", "run_import"]

log = logging.getLogger(__name__)

PROVIDER_KINDS = PROVIDER_IMPORT_KINDS

Wrap = Callable[[Iterable[Listed]], Iterable[Listed]]


def _source_config(runtime: Runtime, source_id: str) -> SourceConfig:
    with runtime.db.session() as session:
        source = session.get(Source, source_id)
        if source is None or source.deleted_at is not None:
            raise ImportFailed(f"source {source_id} no longer exists")
        project = session.get(Project, source.project_id)
        return SourceConfig(
            id=source.id,
            connector=source.connector,
            project=project.slug if project else "",
            options=dict(source.options),
        )


def provider_items(
    runtime: Runtime, kind: str, source_id: str, *, backoff: Backoff | None = None
) -> Iterator[Listed]:
    config = _source_config(runtime, source_id)
    if config.connector != kind:
        raise ImportFailed(f"source {source_id} is a {config.connector} source, not {kind}")
    checkpoints = load_checkpoints(runtime, source_id)
    if kind == "stripe":
        return list_stripe(config, checkpoints, backoff=backoff)
    from tributary.workers.importers.users import list_users

    return list_users(kind, config, checkpoints, backoff=backoff)


def _set(runtime: Runtime, import_id: str, **values: Any) -> None:
    with runtime.db.write_session() as session, session.begin():
        session.execute(update(Import).where(Import.id == import_id).values(updated_at=utcnow(), **values))


def execute(
    runtime: Runtime,
    import_id: str,
    *,
    csv_opener: Callable[[], IO[str]] | None = None,
    wrap: Wrap | None = None,
    on_progress: Callable[[Tally], None] | None = None,
    backoff: Backoff | None = None,
) -> Tally:
    """Run the import `import_id` to its end; raises `ImportFailed` / `CsvInvalid` after
    recording them on the row."""
    with runtime.db.session() as session:
        row = session.get(Import, import_id)
        if row is None:
            raise ImportFailed(f"no import {import_id}")
        kind, dry_run, source_id, upload = row.kind, row.dry_run, row.source_id, row.upload
        target = ImportTarget(row.account_id, row.project_id, row.source_id, row.kind, row.id)
    started = utcnow()
    _set(runtime, import_id, state="running", started_at=started)
    try:
        if kind == "csv":
            opener = csv_opener or (lambda: io.StringIO((upload or b"").decode("utf-8-sig")))
            check_csv(opener)
            items: Iterable[Listed] = csv_items(opener, started)
        elif source_id is None:
            raise ImportFailed("the import has no source")
        else:
            items = provider_items(runtime, kind, source_id, backoff=backoff)
        tally = run_pipeline(
            runtime, target, wrap(items) if wrap else items, dry_run=dry_run, on_progress=on_progress
        )
    except (ImportFailed, CsvInvalid) as exc:
        tally = getattr(exc, "tally", None) or Tally()
        errors: list[dict[str, Any]] = [{"error": str(exc)}]
        if isinstance(exc, CsvInvalid):
            errors += [{"row": bad.row, "error": bad.reason} for bad in exc.bad_rows]
        data = tally.as_json()
        _set(
            runtime,
            import_id,
            state="failed",
            finished_at=utcnow(),
            counts=data["counts"],
            skipped=data["skipped"],
            errors=errors + data["errors"],
            upload=None,
        )
        raise
    except KeyboardInterrupt:
        # What was stored is checkpointed: the next run resumes there.
        _set(runtime, import_id, state="failed", finished_at=utcnow(), errors=[{"error": "interrupted"}])
        raise
    except Exception as exc:
        log.exception("import %s failed", import_id)
        _set(
            runtime,
            import_id,
            state="failed",
            finished_at=utcnow(),
            errors=[{"error": f"{type(exc).__name__}: {exc}"}],
        )
        raise
    data = tally.as_json()
    _set(
        runtime,
        import_id,
        state="completed",
        finished_at=utcnow(),
        counts=data["counts"],
        skipped=data["skipped"],
        errors=data["errors"],
        upload=None,
    )
    return tally


def run_import(import_id: str) -> dict[str, Any]:
    """The RQ job. Errors are on the import row; the job itself ends normally so RQ does not
    retry an import that would fail the same way."""
    try:
        tally = execute(current(), import_id)
    except (ImportFailed, CsvInvalid) as exc:
        return {"import_id": import_id, "state": "failed", "error": str(exc)}
    return {"import_id": import_id, "state": "completed", **tally.as_json()["counts"]}


RECONCILE_KEY = "tributary:reconcile:scheduled"


def reconcile_all() -> dict[str, Any]:
    """The periodic reconcile job: every Stripe source with an api_key, drift fixed."""
    from tributary.workers.importers.reconcile import reconcile_source

    runtime = current()
    with runtime.db.session() as session:
        sources = [
            s.id
            for s in session.scalars(
                select(Source).where(Source.connector == "stripe", Source.deleted_at.is_(None))
            )
            if s.options.get("api_key")
        ]
    drifted: dict[str, int] = {}
    for source_id in sources:
        try:
            drifted[source_id] = len(reconcile_source(runtime, source_id, fix=True)["drift"])
        except ImportFailed as exc:
            log.warning("reconcile of %s failed: %s", source_id, exc)
    log.info("reconcile: drift fixed per source %s", drifted)
    return drifted


def reconcile_if_due(runtime: Runtime) -> bool:
    """Enqueue `reconcile_all` once per `TRIBUTARY_RECONCILE_INTERVAL` seconds across all
    workers (a Redis key with that expiry is the schedule). Off when the interval is 0."""
    interval = runtime.settings.reconcile_interval_seconds
    if interval <= 0:
        return False
    if not runtime.redis.set(RECONCILE_KEY, 1, nx=True, ex=interval):
        return False
    runtime.queue.enqueue(reconcile_all, result_ttl=0, failure_ttl=7 * 86400, job_timeout=3600)
    return True
