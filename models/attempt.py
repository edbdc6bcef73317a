"""The history of every try at applying an event: when, how it ended and why it failed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, BigIntPK, utcnow


class EventAttempt(Base):
    """One row per time a worker finished an event (batch, retry or replay). `events.last_error`
    keeps only the latest error; operators need the whole sequence to tell a flaky API from a bug."""

    __tablename__ = "event_attempts"
    __table_args__ = (Index("ix_event_attempts_event", "event_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
