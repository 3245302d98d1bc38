"""Adapters remember why their source could not be fetched (a missing path, an unknown repo, offline with no cache).

A fetch failure of an adapter that has no version yet has no adapter run to hang the error on; these two columns
hold it (cleared by the next successful fetch) so the registry, ``spectral-surgery list`` and the dashboard show it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("adapters", sa.Column("fetch_error", sa.Text(), nullable=True))
    op.add_column("adapters", sa.Column("fetch_error_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a batch copy: recreating ``adapters`` would trip the
    # foreign keys of every version that references it.
    op.drop_column("adapters", "fetch_error_at")
    op.drop_column("adapters", "fetch_error")
