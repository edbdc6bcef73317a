"""foreign keys whose parent row every writer holds locked: no per-row check on PostgreSQL

Revision ID: 0015_locked_parent_keys
Revises: 0014_lighter_indexes
Create Date: 2026-12-02 15:00:00

PostgreSQL checks a foreign key with one trigger call per written row: a lookup of the parent under
a KEY SHARE lock. In a drain batch of 500 identify events those checks took 58 ms of the 118 ms
PostgreSQL spent on the batch's statements (`bench/drain_profile.py triggers`), and the drain is
bound by the database. Seven of them check a parent that the only writer of the referencing column,
the worker's batch, holds locked in the same transaction, so the check cannot fail and its lock
adds nothing:

- the customer of a project row or a timeline row: the batch's load locked it FOR UPDATE, or
  inserted it (workers/batch/state.py);
- the event of a timeline row or an attempt: the batch, a retry or a replay claimed it FOR UPDATE
  (workers/batch/apply.py), and an attempt is only written for an event the same statement
  updated (workers/batch/write_back_pg.py);
- the account of a customer and the project of a project row or a timeline row: the load locks
  the projects of the batch's events and their accounts FOR KEY SHARE, one statement per batch
  instead of one check per row (`BatchState.load`).

On PostgreSQL these constraints are dropped and their ON DELETE actions (cascade, and SET NULL for
the timeline's event) become statement-level triggers on each parent table, which delete or clear
the children of every row a statement removed (or all of them on TRUNCATE): the same effect, once
per statement instead of a check per child written. The test suite checks after every test that no
row points at a missing parent (tests/conftest.py), the safety net the constraints were. SQLite
keeps the constraints: a writer there locks the whole database, not rows, and its checks are
in-process lookups. The models keep declaring them (models/sql.py `LOCK_GUARDED_FOREIGN_KEYS`
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
    ("fk_customers_account_id_accounts", "customers", "account_id", "accounts", "CASCADE"),
    (
        "fk_customer_projects_customer_id_customers",
        "customer_projects",
        "customer_id",
        "customers",
        "CASCADE",
    ),
    ("fk_customer_projects_project_id_projects", "customer_projects", "project_id", "projects", "CASCADE"),
    ("fk_customer_changes_customer_id_customers", "customer_changes", "customer_id", "customers", "CASCADE"),
    ("fk_customer_changes_project_id_projects", "customer_changes", "project_id", "projects", "CASCADE"),
    ("fk_customer_changes_event_id_events", "customer_changes", "event_id", "events", "SET NULL"),
    ("fk_event_attempts_event_id_events", "event_attempts", "event_id", "events", "CASCADE"),
)

# Per parent table, what its deleted rows' children become, and what a TRUNCATE of it does to
# them: what `TRUNCATE … CASCADE` did through the constraints (a plain TRUNCATE, which they
# refused, now empties them too). Deleting customers here fires their own trigger in turn. Every
# child column but the timeline's project leads an index (models/); that one was scanned by the
# constraint's cascade too, once per deleted project, where the trigger scans once per statement.
DELETED = {
    "accounts": "DELETE FROM customers WHERE account_id IN (SELECT id FROM gone);",
    "projects": """
        DELETE FROM customer_projects WHERE project_id IN (SELECT id FROM gone);
        DELETE FROM customer_changes WHERE project_id IN (SELECT id FROM gone);
    """,
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
    "accounts": "DELETE FROM customers;",
    "projects": "DELETE FROM customer_projects; DELETE FROM customer_changes WHERE project_id IS NOT NULL;",
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
