"""Results keyed by stage: a decision names the candidates it weighed, an adapter run the decision it reached.

Until 0002 one run-config hash keyed candidates, decisions and adapter runs alike, so a decision found its candidates
and a run its decision by that shared hash. From 0003 each stage has its own key (candidates: what determines the
edit; decisions: the gate settings and the evaluations weighed), so the links are explicit:
``decisions.candidate_key`` (the candidates' ``config_hash``) and ``adapter_runs.decision_id``. Existing rows are
back-filled from the old shared hash.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_adapter_runs_decision_id_decisions"


def upgrade() -> None:
    op.add_column("decisions", sa.Column("candidate_key", sa.String(64), nullable=True))
    op.execute("UPDATE decisions SET candidate_key = config_hash")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot ALTER a constraint in, but ADD COLUMN may carry a named REFERENCES clause (no table copy).
        op.execute("ALTER TABLE adapter_runs ADD COLUMN decision_id INTEGER "
                   f"CONSTRAINT {FK} REFERENCES decisions (id)")
    else:
        op.add_column("adapter_runs", sa.Column("decision_id", sa.Integer(), nullable=True))
        op.create_foreign_key(FK, "adapter_runs", "decisions", ["decision_id"], ["id"])
    op.execute(
        "UPDATE adapter_runs SET decision_id = (SELECT d.id FROM decisions d "
        "WHERE d.adapter_version_id = adapter_runs.adapter_version_id AND d.config_hash = adapter_runs.config_hash) "
        "WHERE status = 'completed'")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(FK, "adapter_runs", type_="foreignkey")
    op.drop_column("adapter_runs", "decision_id")
    op.drop_column("decisions", "candidate_key")
