"""Run leases: who runs a refinement run, and when it last showed it was alive.

A run killed outright (SIGKILL, a lost machine, a stopped worker) never closes its row, which used to stay
``running`` forever. From 0004 a run records its ``owner`` (host:pid) and refreshes ``heartbeat_at`` while it
works; the next run marks a run whose heartbeat is older than the lease (or whose process on this host is gone) as
``crashed``, with ``crash_reason``, and fails its open adapter runs so that their versions are refined again.
Claims read the same columns: a version being refined by a live run is not refined twice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refinement_runs", sa.Column("owner", sa.String(200), nullable=True))
    op.add_column("refinement_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("refinement_runs", sa.Column("crash_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("refinement_runs", "crash_reason")
    op.drop_column("refinement_runs", "heartbeat_at")
    op.drop_column("refinement_runs", "owner")
