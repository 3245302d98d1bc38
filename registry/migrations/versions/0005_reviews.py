"""Review windows: a passing decision can wait for a person's approval instead of moving production at once.

``reviews`` holds one row per decision put up for review (``promote: review``): when it was requested, when it
expires, and what became of it (``pending`` → ``approved`` | ``expired`` | ``superseded``), by whom and when. An
approval moves the pointer like any other move, so ``promotion_events`` gets a fourth kind, ``approval``, which
(like ``promotion``) carries the decision it carries out; its two CHECK constraints change accordingly.

SQLite cannot alter a CHECK constraint: the table is rebuilt (renamed aside, created anew, rows copied, the old
one dropped) inside the migration's transaction, and its append-only triggers are recreated around it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "promotion_events is append-only"
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER promotion_events_no_{op_name.lower()} BEFORE {op_name} ON promotion_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {op_name} refused'); END"""
    for op_name in ("UPDATE", "DELETE")
]
OLD_KIND = "kind IN ('promotion', 'manual_override', 'rollback')"
NEW_KIND = "kind IN ('promotion', 'manual_override', 'rollback', 'approval')"
OLD_DECISION = "decision_id IS NULL OR kind = 'promotion'"
NEW_DECISION = "decision_id IS NULL OR kind IN ('promotion', 'approval')"
COLUMNS = ("id, adapter_id, kind, actor, at, from_candidate_id, to_candidate_id, from_version_id, to_version_id, "
           "reason, evidence_json, decision_id, reverts_event_id")


def _events_table(kind_check: str, decision_check: str) -> None:
    """``promotion_events`` as 0001 made it, with the given two CHECK constraints (SQLite rebuild only)."""
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
        sa.CheckConstraint(decision_check, name="ck_promotion_events_decision"),
        sa.CheckConstraint(kind_check, name="ck_promotion_events_kind"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name=op.f("fk_promotion_events_adapter_id_adapters")),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_promotion_events_decision_id_decisions")
        ),
        sa.ForeignKeyConstraint(
            ["from_candidate_id"], ["candidates.id"], name=op.f("fk_promotion_events_from_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["from_version_id"], ["adapter_versions.id"],
            name=op.f("fk_promotion_events_from_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["reverts_event_id"], ["promotion_events.id"],
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


def _change_event_checks(kind_check: str, decision_check: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        for name, check in (("ck_promotion_events_kind", kind_check), ("ck_promotion_events_decision", decision_check)):
            op.drop_constraint(name, "promotion_events", type_="check")
            op.create_check_constraint(name, "promotion_events", check)
        return
    # Renamed aside first: SQLite rewrites the self-reference (reverts_event_id) to the old table, so dropping the
    # old table afterwards trips no foreign key of the new one (foreign keys stay on: this runs in a transaction).
    op.execute("DROP TRIGGER IF EXISTS promotion_events_no_update")
    op.execute("DROP TRIGGER IF EXISTS promotion_events_no_delete")
    op.drop_index("ix_promotion_events_adapter", table_name="promotion_events")
    op.execute("ALTER TABLE promotion_events RENAME TO _promotion_events_old")
    _events_table(kind_check, decision_check)
    op.execute(f"INSERT INTO promotion_events ({COLUMNS}) SELECT {COLUMNS} FROM _promotion_events_old")
    op.execute("DROP TABLE _promotion_events_old")
    op.create_index("ix_promotion_events_adapter", "promotion_events", ["adapter_id", "id"])
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    _change_event_checks(NEW_KIND, NEW_DECISION)
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("promotion_event_id", sa.Integer(), nullable=True),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'approved', 'expired', 'superseded')", name="ck_reviews_state"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name=op.f("fk_reviews_adapter_id_adapters")),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], name=op.f("fk_reviews_decision_id_decisions")),
        sa.ForeignKeyConstraint(
            ["promotion_event_id"], ["promotion_events.id"],
            name=op.f("fk_reviews_promotion_event_id_promotion_events"),
        ),
        sa.ForeignKeyConstraint(["superseded_by_id"], ["reviews.id"], name=op.f("fk_reviews_superseded_by_id_reviews")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("decision_id", name="uq_reviews_decision"),
    )
    op.create_index("ix_reviews_adapter_state", "reviews", ["adapter_id", "state"])


def downgrade() -> None:
    # refused by the old CHECK constraints if an approval was ever recorded: the audit history is never rewritten
    op.drop_index("ix_reviews_adapter_state", table_name="reviews")
    op.drop_table("reviews")
    _change_event_checks(OLD_KIND, OLD_DECISION)
