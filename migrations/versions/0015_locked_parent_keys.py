"""foreign keys whose parent row every writer holds locked: no per-row check on PostgreSQL

Revision ID: 0015_locked_parent_keys
Revises: 0014_lighter_indexes
Create Date: 2026-12-02 15:00:00

PostgreSQL checks a foreign key with one trigger call per written row (a lookup of the parent
under a KEY SHARE lock). In a drain batch of 500 identify events the checks took 58 ms of the
118 ms PostgreSQL spent on the batch's statements (`bench/drain_profile.py triggers`), and the
drain is bound by the database. Four of them check a row that every writer of the referencing
table already holds locked, FOR UPDATE, in the same transaction, so the check can never fail and
its lock adds nothing:

- `customer_projects.customer_id` and `customer_changes.customer_id`: only the worker's batch
  writes them, for customers its load locked (or inserted) first (workers/batch/state.py);
- `customer_changes.event_id` and `event_attempts.event_id`: written for the events the batch,
  a retry or a replay claimed FOR UPDATE (workers/batch/apply.py), attempts only for events the
  same statement updated (workers/batch/write_back_pg.py).

On PostgreSQL these four constraints are dropped and their ON DELETE actions (cascade, and SET NULL
for the timeline's event) become statement-level triggers on each parent table, which delete or
clear the children of every row a statement removed (or all of them on TRUNCATE): the same effect,
once per statement instead of a check per child written. The test suite checks after every test
that no row points at a missing parent (tests/conftest.py), the safety net the constraints were.
SQLite keeps the constraints: a writer there locks the whole database, not rows, and its checks
are in-process lookups. The models keep declaring them (models/sql.py `LOCK_GUARDED_FOREIGN_KEYS`
tells Alembic's comparison why PostgreSQL lacks them).
"""

from __future__ import annotations

from alembic import op

revision = "0015_locked_parent_keys"
down_revision = "0014_lighter_indexes"
branch_labels = None
depends_on = None

# (constraint, child table, column, parent table, ON DELETE), as migration 0001 created them.
KEYS = (
    (
        "fk_customer_projects_customer_id_customers",
        "customer_projects",
        "customer_id",
        "customers",
        "CASCADE",
    ),
    ("fk_customer_changes_customer_id_customers", "customer_changes", "customer_id", "customers", "CASCADE"),
    ("fk_customer_changes_event_id_events", "customer_changes", "event_id", "events", "SET NULL"),
    ("fk_event_attempts_event_id_events", "event_attempts", "event_id", "events", "CASCADE"),
)

# Per parent table, what its deleted rows' children become (each child column has an index leading
# with it: models/customer.py, models/attempt.py), and what a TRUNCATE of it does to them: what
# `TRUNCATE … CASCADE` did through the constraints (a plain TRUNCATE, which they refused, now
# empties them too).
DELETED = {
    "customers": """
        DELETE FROM customer_projects WHERE customer_id IN (SELECT id FROM gone);
        DELETE FROM customer_changes WHERE customer_id IN (SELECT id FROM gone);
    """,
    "events": """
        UPDATE customer_changes SET event_id = NULL WHERE event_id IN (SELECT id FROM gone);
        DELETE FROM event_attempts WHERE event_id IN (SELECT id FROM gone);
    """,
}
# DELETE, not TRUNCATE: the children may be in the same TRUNCATE statement (already emptied, then),
# and a trigger cannot truncate a table its statement is using.
TRUNCATED = {
    "customers": "DELETE FROM customer_projects; DELETE FROM customer_changes;",
    "events": """
        DELETE FROM event_attempts;
        UPDATE customer_changes SET event_id = NULL WHERE event_id IS NOT NULL;
    """,
}
# (trigger and function name, parent table, when it fires, body)
TRIGGERS = [
    (f"tributary_{parent}_deleted", parent, "AFTER DELETE", "REFERENCING OLD TABLE AS gone", body)
    for parent, body in DELETED.items()
] + [
    (f"tributary_{parent}_truncated", parent, "AFTER TRUNCATE", "", body)
    for parent, body in TRUNCATED.items()
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, child, _, _, _ in KEYS:
        op.drop_constraint(name, child, type_="foreignkey")
    for name, parent, when, transition, body in TRIGGERS:
        plpgsql = f"BEGIN {body} RETURN NULL; END"
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {plpgsql} $$")
        statement = f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        op.execute(f"CREATE TRIGGER {name} {when} ON {parent} {transition} {statement}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, parent, _, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {parent}")
        op.execute(f"DROP FUNCTION {name}()")
    for name, child, column, parent, on_delete in KEYS:
        op.create_foreign_key(name, child, parent, [column], ["id"], ondelete=on_delete)
