"""What the worker remembers about identities and customers that are gone.

- `IdentityTombstone`: a provider deleted its user (Clerk `user.deleted`, Auth0 `sdu`, ...). The
  identity link is removed, but events from before the deletion may still arrive late (providers
  deliver out of order); they must reach the same customer and must not link the identity again.
  The tombstone is that memory: (source, external id) -> the customer it belonged to and the time
  of the deletion. A deletion that arrives before anything else about the user leaves a tombstone
  without a customer, filled in by the first older event that names the user.
- `CustomerMerge`: an email change made two customers one (SPEC §4). The absorbed customer's row
  is deleted; this row says where it went, so `GET /v1/customers/<old id>` can point there.

Both are written only by the worker (workers/batch/write_back.py; the rules in
workers/batch/identity_resolution.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, BigIntPK, utcnow


class IdentityTombstone(Base):
    __tablename__ = "identity_tombstones"
    __table_args__ = (UniqueConstraint("account_id", "source", "external_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(255))
    # Erasing the customer erases what we remember of its identities too.
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    # Event time of the deletion, in microseconds like the merge clocks (workers/batch/merge_rules.py).
    forgotten_at: Mapped[int] = mapped_column(BigInteger)
    # The deletion event, for the timeline row written when a customer is found for it later.
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    event_type: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerMerge(Base):
    __tablename__ = "customer_merges"
    __table_args__ = (Index("ix_customer_merges_absorbed", "account_id", "absorbed_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # No foreign key: the absorbed customer's row is deleted by the merge.
    absorbed_id: Mapped[str] = mapped_column(String(40))
    # Always the current survivor: a later merge of the survivor repoints these rows.
    survivor_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
