"""events: one foreign key for the project and its account

Revision ID: 0020_event_project_account_key
Revises: 0019_pending_counted_live
Create Date: 2026-12-06 02:00:00

An event referenced its account and its project with a foreign key each, and the database checks
each once per row written: on PostgreSQL a lookup of the parent under a KEY SHARE lock, run by a
trigger. Storing events is the ingest's whole database work, and one check instead of two takes
about 7 % off PostgreSQL's CPU for a 100-row `/v1/batch` statement, 1-3 % for a 4-row one
(bench/README.md, 2026-12-06). A project belongs to exactly one account, so one key, the pair
(project_id, account_id) referencing the projects' (id, account_id), checks both in one lookup,
and more: an event can no longer name a project of another account. Deleting an account still
deletes its events, through its projects (whose key to the account cascades).

The projects get a unique index on (id, account_id) for the key to reference. Before anything
changes, the stored events are checked against the new key: the migration refuses to run if one
names a project of another account (no code path writes one). SQLite rebuilds the events table,
as it cannot alter a constraint, and must do so with its foreign keys off (as `tributary db
upgrade` connects): dropping the old table with them on would run its ON DELETE actions and
delete every event's attempts. The rebuild also drops the table's index statistics, so a database
that was ANALYZEd gets them again (as 0009 explains, SQLite misplans with some missing).
"""

from __future__ import annotations

from alembic import op

revision = "0020_event_project_account_key"
down_revision = "0019_pending_counted_live"
branch_labels = None
depends_on = None

PAIR_INDEX = "uq_projects_id_account_id"
PROJECT_KEY = "fk_events_project_id_projects"
ACCOUNT_KEY = "fk_events_account_id_accounts"


def _foreign_keys_off() -> None:
    """SQLite only: refuse to rebuild `events` with foreign keys enforced (module docstring)."""
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "SQLite foreign keys are on for this connection; rebuilding the events table would "
            "delete their attempts. Run the migration with `tributary db upgrade`."
        )


def _refuse_mismatched_events() -> None:
    mismatched = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM events e WHERE NOT EXISTS "
        "(SELECT 1 FROM projects p WHERE p.id = e.project_id AND p.account_id = e.account_id)"
    )
    if count := mismatched.scalar():
        raise RuntimeError(
            f"{count} events name a project that is missing or belongs to another account; "
            "nothing was changed"
        )


def _statistics_again() -> None:
    """SQLite: after the rebuild, the statistics of `events` (and the projects' new index), if the
    database keeps statistics at all."""
    bind = op.get_bind()
    if bind.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
        op.execute("ANALYZE events")
        op.execute("ANALYZE projects")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _foreign_keys_off()
    _refuse_mismatched_events()
    op.create_index(PAIR_INDEX, "projects", ["id", "account_id"], unique=True)
    with op.batch_alter_table("events", recreate="always" if sqlite else "auto") as batch_op:
        batch_op.drop_constraint(ACCOUNT_KEY, type_="foreignkey")
        batch_op.drop_constraint(PROJECT_KEY, type_="foreignkey")
        batch_op.create_foreign_key(
            PROJECT_KEY, "projects", ["project_id", "account_id"], ["id", "account_id"], ondelete="CASCADE"
        )
    if sqlite:
        _statistics_again()


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _foreign_keys_off()
    with op.batch_alter_table("events", recreate="always" if sqlite else "auto") as batch_op:
        batch_op.drop_constraint(PROJECT_KEY, type_="foreignkey")
        batch_op.create_foreign_key(ACCOUNT_KEY, "accounts", ["account_id"], ["id"], ondelete="CASCADE")
        batch_op.create_foreign_key(PROJECT_KEY, "projects", ["project_id"], ["id"], ondelete="CASCADE")
    op.drop_index(PAIR_INDEX, table_name="projects")
    if sqlite:
        _statistics_again()
