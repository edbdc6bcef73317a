"""The unified person record, its per-project state, its external identities and its change log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, BigIntPK, sortable_id, utcnow

# The partial index's predicate, per dialect; queries repeat it verbatim so the planner can use it.
HAS_PAST_EMAILS = {"postgresql": "past_emails != '[]'::jsonb", "sqlite": "past_emails != '[]'"}


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        # The merge key: one row per normalized email per account, enforced by the database so
        # concurrent workers upsert instead of racing a check-then-insert.
        UniqueConstraint("account_id", "email"),
        Index("ix_customers_account_activity", "account_id", "last_activity_at", "id"),
        Index("ix_customers_account_created", "account_id", "created_at", "id"),
        # The few customers that have had another address: a batch that creates customers looks
        # among them for an earlier holder of each new address (workers/batch/state.py), which
        # must not scan every customer.
        Index(
            "ix_customers_with_past_emails",
            "account_id",
            postgresql_where=text(HAS_PAST_EMAILS["postgresql"]),
            sqlite_where=text(HAS_PAST_EMAILS["sqlite"]),
        ),
        # `q` (a substring of email or name) through trigrams on PostgreSQL (pg_trgm, created by
        # migration 0011); the name's index serves ILIKE, so it needs no `lower(name)` expression.
        # The email's is on `lower(email)` (migration 0012), below the class.
        # SQLite has no trigram index and scans; there they cover no row (WHERE 0), as the params one.
        Index(
            "ix_customers_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
            sqlite_where=text("0"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: sortable_id("cus"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(400))
    past_emails: Mapped[list[Any]] = mapped_column(default=list)
    # Event time (microseconds) of the write that set each customer-level field; see
    # workers/batch/merge_rules.py.
    clock: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime | None] = mapped_column()


# The email's trigram index is on `lower(email)` (the same text: emails are stored lower-case), so
# it serves `q` and nothing else. On the bare column pg_trgm also answers equality, and the planner
# took it for the worker's `email IN (...)` lock of a batch's customers: every address sharing a
# domain matched the trigrams, 0.2-0.3 s a batch at 8,000 customers where the unique index takes
# well under a millisecond (migration 0012).
Index(
    "ix_customers_email_trgm",
    func.lower(Customer.email).label("lower_email"),
    postgresql_using="gin",
    postgresql_ops={"lower_email": "gin_trgm_ops"},
    sqlite_where=text("0"),
)


class CustomerProject(Base):
    __tablename__ = "customer_projects"
    __table_args__ = (
        UniqueConstraint("customer_id", "project_id"),
        # Keyset pages of one project's customers by that project's activity (GET /v1/customers).
        Index("ix_customer_projects_project_activity", "project_id", "last_activity_at", "customer_id"),
        # The overview's customers per project and status, counted from the index alone.
        Index("ix_customer_projects_project_status", "project_id", "status"),
        # `params.<key>=` filters are JSONB containment, served by GIN on PostgreSQL. SQLite has no
        # such index and scans; there the index exists but covers no row (WHERE 0), costing nothing,
        # so both backends have the same schema for migrations and autogenerate to compare.
        Index(
            "ix_customer_projects_params",
            "params",
            postgresql_using="gin",
            postgresql_ops={"params": "jsonb_path_ops"},
            sqlite_where=text("0"),
        ),
        # A customer's project rows by equality, on PostgreSQL (migration 0025): the list's walk
        # down the activity order probes each customer it passes for a matching row (a params
        # filter over every project), and a probe through this hash index reads its bucket's page,
        # where the unique B-tree above descends three levels comparing text: half the pages and
        # about half the time at 1,000,000 customers (bench/README.md). SQLite's walk probes the
        # B-tree, so there the index covers no row.
        Index(
            "ix_customer_projects_customer",
            "customer_id",
            postgresql_using="hash",
            sqlite_where=text("0"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    # No index of its own: the two indexes above lead with it (migration 0014).
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str | None] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    clock: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime] = mapped_column()
    last_activity_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Identity(Base):
    """(connector name, external id) -> customer, for events that carry no email.

    `source` holds a connector's name (`stripe`, `clerk`: connectors.IdentityRef.source), not a
    `Source` (an endpoint, `src_…`): every endpoint of one connector shares its identities. The
    column keeps its name; renaming it would take a migration for no change in behaviour.
    """

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("account_id", "source", "external_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TimelineEntry(Base):
    """One row per (event, customer, project) the worker touched: what changed, and what was ignored
    as stale. It is the timeline, the status history and the audit trail."""

    __tablename__ = "customer_changes"
    __table_args__ = (Index("ix_customer_changes_customer", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)
    # The event type that caused the change (events.type allows 200 characters).
    kind: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
