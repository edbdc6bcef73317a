"""Imports: a run that brings existing customers in from a provider's API or a CSV file, and the
per-source checkpoints that let an interrupted run resume where it stopped."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, sortable_id, utcnow

# Providers whose user/customer lists `tributary import` reads (workers/imports.py), then CSV files.
PROVIDER_IMPORT_KINDS = ("stripe", "clerk", "workos", "supabase")
IMPORT_KINDS = (*PROVIDER_IMPORT_KINDS, "csv")
# The keys of `Import.counts`, in the order runs report them (workers/importers/pipeline.py).
IMPORT_COUNTS = (
    "listed",
    "stored",
    "duplicates",
    "created",
    "updated",
    "unchanged",
    "skipped",
    "failed",
    "pending",
)
IMPORT_STATES = ("queued", "running", "completed", "failed")


class Import(Base):
    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_account_id_created_at", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: sortable_id("imp"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    source_id: Mapped[str | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    dry_run: Mapped[bool] = mapped_column(default=False)
    # IMPORT_COUNTS -> how many
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # reason -> how many objects were skipped for it
    skipped: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bad CSV rows, failed events, or the error that stopped the run (bounded list).
    errors: Mapped[list[Any]] = mapped_column(default=list)
    # A CSV uploaded through the API, held until its background job has read it.
    upload: Mapped[bytes | None] = mapped_column(LargeBinary)
    filename: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportCheckpoint(Base):
    """How far a source's import got in one stream (`customers`, `subscriptions`, `users`): the
    cursor to continue after (the last stored object id, or an offset/page for APIs without
    cursors). Deleted when a run completes, so the next run starts over and deduplicates."""

    __tablename__ = "import_checkpoints"

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(255), default="")
    done: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
