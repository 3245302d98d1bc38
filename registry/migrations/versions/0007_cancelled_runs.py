"""A run stopped by SIGINT or SIGTERM ends ``cancelled``: an interrupt is not a failure of the work.

``refinement_runs.status`` gets a fifth value, ``cancelled`` (``registry.runs.RunStore.cancel_run``: the run
asked to stop, its open adapter runs released as ``failed`` with error type ``Interrupted``); its CHECK constraint
changes.

SQLite cannot alter a CHECK constraint, and ``refinement_runs`` cannot be rebuilt the way 0005 rebuilt
``promotion_events``: adapter runs and decisions reference it, SQLite rewrites their foreign keys to a renamed
table, and the rebuild's ``DROP TABLE`` then fails (foreign keys stay on: this runs in a transaction). So the
table's stored ``CREATE TABLE`` text is edited in place, the procedure SQLite documents for changing a CHECK
constraint (https://www.sqlite.org/lang_altertable.html, "making other kinds of table schema changes"): the new
constraint only admits more values, so every stored row satisfies it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_refinement_runs_status"
OLD = "status IN ('running', 'completed', 'failed', 'crashed')"
NEW = "status IN ('running', 'completed', 'failed', 'crashed', 'cancelled')"


def _sqlite_replace(old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'refinement_runs'")).scalar()
    if old not in sql:
        raise RuntimeError(f"refinement_runs: constraint {NAME} is not {old!r} in {sql!r}")
    version = bind.execute(text("PRAGMA schema_version")).scalar()
    bind.execute(text("PRAGMA writable_schema = ON"))
    bind.execute(text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'refinement_runs'"),
                 {"sql": sql.replace(old, new)})
    bind.execute(text(f"PRAGMA schema_version = {int(version) + 1}"))  # other connections re-read the schema
    bind.execute(text("PRAGMA writable_schema = OFF"))


def _change(old: str, new: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_replace(old, new)
        return
    op.drop_constraint(NAME, "refinement_runs", type_="check")
    op.create_check_constraint(NAME, "refinement_runs", new)


def upgrade() -> None:
    _change(OLD, NEW)


def downgrade() -> None:
    # a cancelled run was stopped before it finished: before 0007 the same ending was recorded as failed
    op.execute("UPDATE refinement_runs SET status = 'failed' WHERE status = 'cancelled'")
    _change(NEW, OLD)
