"""A night that fits its window (issue 27 §1): declared priorities, deferred adapter runs, forecasts.

``adapters.priority``: the declared priority of an adapter (higher runs first when the night is short; 0 = none).
``adapter_runs.status`` gets a fifth value, ``deferred``: a version the run planned but did not start because it
did not fit the window (not failed: the next night puts it first in line); ``adapter_runs.forecast_seconds``: the
planner's forecast of the refinement (NULL: run without a window, or before this revision); ``plan_reason``: why
it started where it did, or why it waits; ``wall_seconds``: what the visit cost as the nightly flow measured it, from
submitting the version to its result (the row's own ``started_at`` comes later, at the claim, after the download and
the model load: on the tiny test fleet the span missed up to three quarters of the visit).

SQLite cannot alter a CHECK constraint: the table's stored ``CREATE TABLE`` text is edited in place, as 0007 does
for ``refinement_runs`` (the new constraint only admits more values, so every stored row satisfies it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_adapter_runs_status"
OLD = "status IN ('pending', 'running', 'completed', 'failed')"
NEW = "status IN ('pending', 'running', 'completed', 'failed', 'deferred')"


def _sqlite_replace(old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'adapter_runs'")).scalar()
    if old not in sql:
        raise RuntimeError(f"adapter_runs: constraint {NAME} is not {old!r} in {sql!r}")
    version = bind.execute(text("PRAGMA schema_version")).scalar()
    bind.execute(text("PRAGMA writable_schema = ON"))
    bind.execute(text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'adapter_runs'"),
                 {"sql": sql.replace(old, new)})
    bind.execute(text(f"PRAGMA schema_version = {int(version) + 1}"))  # other connections re-read the schema
    bind.execute(text("PRAGMA writable_schema = OFF"))


def _change(old: str, new: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_replace(old, new)
        return
    op.drop_constraint(NAME, "adapter_runs", type_="check")
    op.create_check_constraint(NAME, "adapter_runs", new)


def upgrade() -> None:
    op.add_column("adapters", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("adapter_runs", sa.Column("forecast_seconds", sa.Double(), nullable=True))
    op.add_column("adapter_runs", sa.Column("plan_reason", sa.Text(), nullable=True))
    op.add_column("adapter_runs", sa.Column("wall_seconds", sa.Double(), nullable=True))
    _change(OLD, NEW)


def downgrade() -> None:
    # a deferred version was never started: before 0008 it simply had no adapter run in that night
    op.execute("DELETE FROM adapter_runs WHERE status = 'deferred'")
    _change(NEW, OLD)
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy would trip the foreign keys that reference these tables.
    op.drop_column("adapter_runs", "wall_seconds")
    op.drop_column("adapter_runs", "plan_reason")
    op.drop_column("adapter_runs", "forecast_seconds")
    op.drop_column("adapters", "priority")
