"""What each edit and each evaluation cost, so the fleet report can say what an edit costs per adapter.

``candidates.seconds_json``: the seconds of writing the candidate (``write``), of the stored decomposition and
calibration it was written from (``decompose``, ``calibrate``: the stage's own cost when it was computed, shared by
every candidate of that key) and of choosing the global scalar's γ (``gamma``). ``evaluations.seconds``: the wall
seconds of scoring that subject. Both are NULL for rows written before this revision (cost unknown).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("candidates", sa.Column("seconds_json", sa.JSON(), nullable=True))
    op.add_column("evaluations", sa.Column("seconds", sa.Double(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy of these tables would trip the foreign keys that reference them.
    op.drop_column("evaluations", "seconds")
    op.drop_column("candidates", "seconds_json")
