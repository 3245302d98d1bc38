"""Initial schema: adapters, versions, runs, candidates, evaluations, guard results, decisions, production pointers
and the append-only promotion history.

A frozen copy of ``registry/models.py`` as of this revision (migrations never import the models: the models move
on, a revision must not). ``promotion_events`` gets database triggers that refuse UPDATE and DELETE (and TRUNCATE on
PostgreSQL), so the audit history stays append-only even outside the repository.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "promotion_events is append-only"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER promotion_events_no_{op_name.lower()} BEFORE {op_name} ON promotion_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {op_name} refused'); END"""
    for op_name in ("UPDATE", "DELETE")
]

POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION promotion_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END $$""",
    """CREATE TRIGGER promotion_events_no_change BEFORE UPDATE OR DELETE ON promotion_events
    FOR EACH ROW EXECUTE FUNCTION promotion_events_append_only()""",
    """CREATE TRIGGER promotion_events_no_truncate BEFORE TRUNCATE ON promotion_events
    FOR EACH STATEMENT EXECUTE FUNCTION promotion_events_append_only()""",
]


def _create_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS promotion_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS promotion_events_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS promotion_events_no_change ON promotion_events")
        op.execute("DROP TRIGGER IF EXISTS promotion_events_no_truncate ON promotion_events")
        op.execute("DROP FUNCTION IF EXISTS promotion_events_append_only()")


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("base_model_id", sa.String(length=500), nullable=False),
        sa.Column("base_model_revision", sa.String(length=200), nullable=True),
        sa.Column("task_family", sa.String(length=64), nullable=False),
        sa.Column("benchmark_override", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_json", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("name", name="uq_adapters_name"),
    )
    op.create_table(
        "refinement_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config_snapshot", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed', 'crashed')", name="ck_refinement_runs_status"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refinement_runs")),
        sa.UniqueConstraint("flow_run_id", name="uq_refinement_runs_flow_run"),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("resolved_revision", sa.String(length=200), nullable=True),
        sa.Column("local_path", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name=op.f("fk_adapter_versions_adapter_id_adapters")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_versions")),
        sa.UniqueConstraint("adapter_id", "content_sha256", name="uq_adapter_versions_content"),
    )
    op.create_table(
        "adapter_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'running', 'completed', 'failed')", name="ck_adapter_runs_status"),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_adapter_runs_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["refinement_runs.id"], name=op.f("fk_adapter_runs_run_id_refinement_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_runs")),
        sa.UniqueConstraint("run_id", "adapter_version_id", name="uq_adapter_runs_run_version"),
    )
    op.create_index("ix_adapter_runs_done", "adapter_runs", ["adapter_version_id", "config_hash", "status"])

    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=100), nullable=False),
        sa.Column("params_json", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("is_control", sa.Boolean(), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=True),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=True),
        sa.Column("spectrum_json", sa.JSON(), nullable=True),
        sa.Column("sensitivity_json", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_candidates_adapter_version_id_adapter_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("adapter_version_id", "config_hash", "policy", "seed", name="uq_candidates_key"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("promoted_candidate_id", sa.Integer(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("statistics_json", sa.JSON(), nullable=False),
        sa.Column("sentence", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_decisions_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["promoted_candidate_id"], ["candidates.id"], name=op.f("fk_decisions_promoted_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["refinement_runs.id"], name=op.f("fk_decisions_run_id_refinement_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("adapter_version_id", "config_hash", name="uq_decisions_key"),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=40), nullable=False),
        sa.Column("benchmark", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=True),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("samples_uri", sa.Text(), nullable=True),
        sa.Column("doc_outcomes_json", sa.JSON(), nullable=True),
        sa.Column("evaluator_key", sa.String(length=64), nullable=False),
        sa.Column("higher_is_better", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
        "(candidate_id IS NULL AND subject = 'baseline') OR "
        "(candidate_id IS NOT NULL AND subject = 'candidate:' || CAST(candidate_id AS VARCHAR(20)))",
        name="ck_evaluations_subject",
    ),
        sa.CheckConstraint("kind IN ('task', 'guard')", name="ck_evaluations_kind"),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_evaluations_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_evaluations_candidate_id_candidates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint("adapter_version_id", "subject", "benchmark", "evaluator_key", name="uq_evaluations_key"),
    )
    op.create_index("ix_evaluations_candidate", "evaluations", ["candidate_id"])

    op.create_table(
        "guard_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("benchmark", sa.String(length=200), nullable=False),
        sa.Column("baseline_value", sa.Double(), nullable=False),
        sa.Column("candidate_value", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("tolerance", sa.Double(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_guard_results_candidate_id_candidates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_results")),
        sa.UniqueConstraint("candidate_id", "benchmark", name="uq_guard_results_key"),
    )
    op.create_table(
        "production_pointers",
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapters.id"], name=op.f("fk_production_pointers_adapter_id_adapters")
        ),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_production_pointers_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_production_pointers_candidate_id_candidates")
        ),
        sa.PrimaryKeyConstraint("adapter_id", name=op.f("pk_production_pointers")),
    )
    op.create_table(
        "promotion_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_candidate_id", sa.Integer(), nullable=True),
        sa.Column("to_candidate_id", sa.Integer(), nullable=True),
        sa.Column("from_version_id", sa.Integer(), nullable=False),
        sa.Column("to_version_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_json", sa.JSON(), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("reverts_event_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("(kind = 'rollback') = (reverts_event_id IS NOT NULL)", name="ck_promotion_events_reverts"),
        sa.CheckConstraint("decision_id IS NULL OR kind = 'promotion'", name="ck_promotion_events_decision"),
        sa.CheckConstraint("kind IN ('promotion', 'manual_override', 'rollback')", name="ck_promotion_events_kind"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name=op.f("fk_promotion_events_adapter_id_adapters")),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_promotion_events_decision_id_decisions")
        ),
        sa.ForeignKeyConstraint(
            ["from_candidate_id"], ["candidates.id"], name=op.f("fk_promotion_events_from_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["from_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_promotion_events_from_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["reverts_event_id"],
            ["promotion_events.id"],
            name=op.f("fk_promotion_events_reverts_event_id_promotion_events"),
        ),
        sa.ForeignKeyConstraint(
            ["to_candidate_id"], ["candidates.id"], name=op.f("fk_promotion_events_to_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["to_version_id"], ["adapter_versions.id"], name=op.f("fk_promotion_events_to_version_id_adapter_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_events")),
        sa.UniqueConstraint("decision_id", name="uq_promotion_events_decision"),
        sa.UniqueConstraint("reverts_event_id", name="uq_promotion_events_reverts"),
    )
    op.create_index("ix_promotion_events_adapter", "promotion_events", ["adapter_id", "id"])
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index("ix_promotion_events_adapter", table_name="promotion_events")
    op.drop_table("promotion_events")
    op.drop_table("production_pointers")
    op.drop_table("guard_results")
    op.drop_index("ix_evaluations_candidate", table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("decisions")
    op.drop_table("candidates")
    op.drop_index("ix_adapter_runs_done", table_name="adapter_runs")
    op.drop_table("adapter_runs")
    op.drop_table("adapter_versions")
    op.drop_table("refinement_runs")
    op.drop_table("adapters")
