"""Background replays: a filter over stored events, applied again with today's connector code."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, sortable_id, utcnow

REPLAY_STATES = ("queued", "running", "completed", "cancelled", "failed")


class Replay(Base):
    __tablename__ = "replays"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: sortable_id("rpl"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # The project of the key that started it: a project-bound key sees only its own replays.
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    # The last event id handled: the replay walks ids in order, so a restarted job resumes here.
    last_event_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
