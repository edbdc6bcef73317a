"""Import runs as the CLI and the admin API start and show them (`imports` rows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tributary.app.accounts import get_project
from tributary.app.domain_errors import Forbidden, Invalid, NotFound
from tributary.app.sources import find_source
from tributary.models import Import, Project
from tributary.models.base import isoformat
from tributary.models.imports import IMPORT_COUNTS as COUNT_NAMES
from tributary.models.imports import IMPORT_KINDS

__all__ = ["IMPORT_KINDS", "create_import", "find_import", "import_json"]


def create_import(
    session: Session,
    account_id: str,
    *,
    kind: str,
    source_id: str | None = None,
    project: str | None = None,
    bound_project_id: str | None = None,
    dry_run: bool = False,
    upload: bytes | None = None,
    filename: str | None = None,
    state: str = "queued",
) -> Import:
    """A new run after checking what it names: a source of the right connector for provider
    imports, a project for CSV files (`bound_project_id`: a project-bound key's own project)."""
    if kind not in IMPORT_KINDS:
        raise Invalid("invalid_kind", f"kind must be one of {', '.join(IMPORT_KINDS)}")
    if kind == "csv":
        if source_id is not None:
            raise Invalid("validation_error", "a CSV import takes a project, not a source")
        if bound_project_id is not None:
            target = session.get(Project, bound_project_id)
            if target is None or (project is not None and target.slug != project):
                raise Forbidden("project_forbidden", "this key is bound to another project")
        else:
            target = get_project(session, account_id, project or "default")
        project_id, source = target.id, None
    else:
        if not source_id:
            raise Invalid("validation_error", f"a {kind} import needs a source")
        source = find_source(session, account_id, source_id, bound_project_id)
        if source.connector != kind:
            raise Invalid("wrong_connector", f"source {source_id} is a {source.connector} source, not {kind}")
        project_id = source.project_id
    row = Import(
        account_id=account_id,
        project_id=project_id,
        source_id=source.id if source else None,
        kind=kind,
        state=state,
        dry_run=dry_run,
        counts={name: 0 for name in COUNT_NAMES},
        skipped={},
        errors=[],
        upload=upload,
        filename=filename,
    )
    session.add(row)
    session.flush()
    return row


def find_import(session: Session, account_id: str, import_id: str, project_id: str | None = None) -> Import:
    row = session.get(Import, import_id)
    if (
        row is None
        or row.account_id != account_id
        or (project_id is not None and row.project_id != project_id)
    ):
        raise NotFound("import_not_found", f"no import with id {import_id!r}")
    return row


def import_json(session: Session, row: Import) -> dict[str, Any]:
    project = session.get(Project, row.project_id)
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "dry_run": row.dry_run,
        "project": project.slug if project else None,
        "source": row.source_id,
        "filename": row.filename,
        "counts": {name: int(row.counts.get(name, 0)) for name in COUNT_NAMES},
        "skipped": dict(row.skipped),
        "errors": list(row.errors),
        "created_at": isoformat(row.created_at),
        "started_at": isoformat(row.started_at),
        "finished_at": isoformat(row.finished_at),
        "updated_at": isoformat(row.updated_at),
    }
