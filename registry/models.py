"""The registry's tables as SQLAlchemy 2 typed models.

What exists (``Adapter``, ``AdapterVersion``), what a nightly run did (``RefinementRun``, ``AdapterRun``), the
evidence it produced (``Candidate``, ``Evaluation``, ``GuardResult``, ``Decision``) and what is in production
(``ProductionPointer``, with ``PromotionEvent`` as its append-only history, and ``Review`` for decisions waiting
for a person's approval).

Every natural key is a named unique constraint: the repository's writes are get-or-create on these keys, so a
re-run or two racing processes can never duplicate a row. The schema is created by the Alembic migrations in
``registry/migrations`` (``registry.migrations.init_db``), never by ``metadata.create_all``; a test checks that the two
agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from spectral_surgery.tasks.decision.record import DecisionRecord

# Primary and foreign keys are named by convention; unique, check and index names are spelled out (short enough
# for PostgreSQL's 63-character limit) so that the migration and the models name them identically.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

RUN_STATUSES = ("running", "completed", "failed", "crashed", "cancelled")  # cancelled: SIGINT/SIGTERM (0007)
ADAPTER_RUN_STATUSES = ("pending", "running", "completed", "failed", "deferred")  # deferred: not in the window (0008)
EVALUATION_KINDS = ("task", "guard")
EVENT_KINDS = ("promotion", "manual_override", "rollback", "approval")
REVIEW_STATES = ("pending", "approved", "expired", "superseded")
BASELINE = "baseline"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind of timestamp the registry stores)."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out timezone-aware UTC on every backend.

    SQLite has no time zone type: values are stored as naive UTC and tagged UTC again on the way out, so that
    timestamps compare the same on SQLite and PostgreSQL (``timestamptz``).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the registry stores timezone-aware UTC timestamps")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base: one ``MetaData`` with the naming convention, Python types mapped to column types."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # none_as_null: a Python None is stored as SQL NULL, not as the JSON text 'null'.
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
        float: Double(),
    }


class Adapter(Base):
    """A LoRA adapter under management: where it comes from and what it is evaluated on."""

    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("name", name="uq_adapters_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source_uri: Mapped[str] = mapped_column(Text, doc="hf://org/name@revision or a local path.")
    base_model_id: Mapped[str] = mapped_column(String(500))
    base_model_revision: Mapped[str | None] = mapped_column(String(200))
    task_family: Mapped[str] = mapped_column(String(64), doc="math | code | instruction | commonsense")
    benchmark_override: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    config_json: Mapped[dict[str, Any] | None] = mapped_column(doc="Per-adapter overrides of the run config.")
    fetch_error: Mapped[str | None] = mapped_column(Text, doc="Why the source could not be fetched (None = it was).")
    fetch_error_at: Mapped[datetime | None] = mapped_column(doc="When that last failed fetch happened.")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0",
                                          doc="Declared priority: higher runs first when the night is short.")

    def __repr__(self) -> str:
        return f"Adapter(id={self.id}, name={self.name!r}, enabled={self.enabled})"


class AdapterVersion(Base):
    """One content of an adapter, keyed by the sha256 of its files (a new revision, same bytes: same version)."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "content_sha256", name="uq_adapter_versions_content"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    content_sha256: Mapped[str] = mapped_column(String(64))
    resolved_revision: Mapped[str | None] = mapped_column(String(200))
    local_path: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, doc="Latest version = latest last_seen_at.")

    # Joined so that a version handed out detached still knows its adapter.
    adapter: Mapped[Adapter] = relationship(lazy="joined", innerjoin=True)

    def __repr__(self) -> str:
        return f"AdapterVersion(id={self.id}, adapter_id={self.adapter_id}, sha256={self.content_sha256[:12]})"


class RefinementRun(Base):
    """One nightly flow run (a retried flow run keeps its Prefect id and so its row)."""

    __tablename__ = "refinement_runs"
    __table_args__ = (
        UniqueConstraint("flow_run_id", name="uq_refinement_runs_flow_run"),
        CheckConstraint(_in("status", RUN_STATUSES), name="ck_refinement_runs_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_run_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    config_snapshot: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200), doc="host:pid of the process running it.")
    heartbeat_at: Mapped[datetime | None] = mapped_column(doc="Last sign of life; a stale one means crashed.")
    crash_reason: Mapped[str | None] = mapped_column(Text, doc="Why the run was marked crashed, and when.")


class AdapterRun(Base):
    """The refinement of one adapter version inside one run, with the failure if it failed."""

    __tablename__ = "adapter_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "adapter_version_id", name="uq_adapter_runs_run_version"),
        CheckConstraint(_in("status", ADAPTER_RUN_STATUSES), name="ck_adapter_runs_status"),
        # "Was this (version, config hash) already refined?" is asked for every version every night.
        Index("ix_adapter_runs_done", "adapter_version_id", "config_hash", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("refinement_runs.id"))
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    config_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    decision_id: Mapped[int | None] = mapped_column(
        ForeignKey("decisions.id"), doc="The decision this run reached (several runs can reach the same one).")
    forecast_seconds: Mapped[float | None] = mapped_column(doc="The night planner's forecast (None: no window).")
    plan_reason: Mapped[str | None] = mapped_column(Text, doc="Why it started where it did, or why it was deferred.")
    wall_seconds: Mapped[float | None] = mapped_column(
        doc="What the visit cost as the nightly flow measured it, submit to result (started_at is the later claim).")


class Candidate(Base):
    """One edited adapter: a policy with its parameters and seed applied to one version under one config."""

    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("adapter_version_id", "config_hash", "policy", "seed", name="uq_candidates_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    config_hash: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(100))
    params_json: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer)
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    spectrum_json: Mapped[dict[str, Any] | None] = mapped_column(doc="sigma before/after summary per module.")
    sensitivity_json: Mapped[dict[str, Any] | None] = mapped_column(doc="|g| and sign agreement summary.")
    seconds_json: Mapped[dict[str, Any] | None] = mapped_column(
        doc="What it cost: write (this edit), decompose/calibrate (the stored stage it was written from), gamma.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """One benchmark score of the unedited version (``subject='baseline'``) or of a candidate.

    ``subject`` is ``'baseline'`` or ``'candidate:<id>'``: unlike the nullable ``candidate_id`` it is never NULL, so
    the unique key also holds for baselines (NULLs never collide in a unique constraint).
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("adapter_version_id", "subject", "benchmark", "evaluator_key", name="uq_evaluations_key"),
        CheckConstraint(
            f"(candidate_id IS NULL AND subject = '{BASELINE}') OR "
            "(candidate_id IS NOT NULL AND subject = 'candidate:' || CAST(candidate_id AS VARCHAR(20)))",
            name="ck_evaluations_subject",
        ),
        CheckConstraint(_in("kind", EVALUATION_KINDS), name="ck_evaluations_kind"),
        Index("ix_evaluations_candidate", "candidate_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    subject: Mapped[str] = mapped_column(String(40))
    benchmark: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float]
    n: Mapped[int | None] = mapped_column(Integer)
    stderr: Mapped[float | None]
    samples_uri: Mapped[str | None] = mapped_column(Text)
    doc_outcomes_json: Mapped[list[Any] | None] = mapped_column(
        doc="[[doc_id, value], ...] or [[doc_id, value, score], ...] per document (score: continuous, issue 24).")
    evaluator_key: Mapped[str] = mapped_column(String(64), doc="Hash of evaluator identity + limit.")
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(16), default="task")
    seconds: Mapped[float | None] = mapped_column(doc="Wall seconds of scoring this subject (None: not measured).")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuardResult(Base):
    """The guard benchmark (IFEval) of a candidate against its baseline."""

    __tablename__ = "guard_results"
    __table_args__ = (UniqueConstraint("candidate_id", "benchmark", name="uq_guard_results_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    benchmark: Mapped[str] = mapped_column(String(200))
    baseline_value: Mapped[float]
    candidate_value: Mapped[float]
    delta: Mapped[float]
    p_value: Mapped[float | None]
    tolerance: Mapped[float]
    passed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Decision(Base):
    """The gate's verdict for one version: which candidate (if any) to promote, and why.

    ``config_hash`` is the decision key: a hash of exactly what determines the verdict (the gate settings and the
    evaluations it weighed), so a threshold change makes a new decision from stored outcomes and nothing else.
    ``candidate_key`` is the key of the candidates it weighed (``Candidate.config_hash``).
    """

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("adapter_version_id", "config_hash", name="uq_decisions_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    config_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("refinement_runs.id"))
    promoted_candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    promoted: Mapped[bool] = mapped_column(Boolean)
    candidate_key: Mapped[str | None] = mapped_column(String(64), doc="Candidate.config_hash of its candidates.")
    statistics_json: Mapped[dict[str, Any]]
    sentence: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def record(self) -> DecisionRecord:
        """``statistics_json`` read as a typed record, upgraded from whatever older shape the row holds (a row without
        statistics reads as an empty record)."""
        from spectral_surgery.tasks.decision.record import DecisionRecord  # pydantic + the gate: only when read

        return DecisionRecord.from_json(self.statistics_json, bool(self.promoted))


class ProductionPointer(Base):
    """What each adapter serves: a candidate, or (``candidate_id`` NULL) the unedited version."""

    __tablename__ = "production_pointers"

    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), primary_key=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromotionEvent(Base):
    """One move of a production pointer (append-only: never updated, never deleted).

    ``decision_id`` is unique, so a decision can promote at most once (by the gate, ``promotion``, or by a person's
    approval of its review, ``approval``); ``reverts_event_id`` is unique, so an event
    can be rolled back at most once. Both allow any number of NULLs.
    """

    __tablename__ = "promotion_events"
    __table_args__ = (
        UniqueConstraint("decision_id", name="uq_promotion_events_decision"),
        UniqueConstraint("reverts_event_id", name="uq_promotion_events_reverts"),
        CheckConstraint(_in("kind", EVENT_KINDS), name="ck_promotion_events_kind"),
        CheckConstraint("decision_id IS NULL OR kind IN ('promotion', 'approval')",
                        name="ck_promotion_events_decision"),
        CheckConstraint("(kind = 'rollback') = (reverts_event_id IS NOT NULL)", name="ck_promotion_events_reverts"),
        Index("ix_promotion_events_adapter", "adapter_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    kind: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    from_candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    to_candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    from_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    to_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    reason: Mapped[str] = mapped_column(Text)
    evidence_json: Mapped[dict[str, Any] | None]
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"))
    reverts_event_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_events.id"))

    def __repr__(self) -> str:
        return (f"PromotionEvent(id={self.id}, kind={self.kind!r}, adapter_id={self.adapter_id}, "
                f"{self.from_version_id}/{self.from_candidate_id} -> {self.to_version_id}/{self.to_candidate_id})")


class Review(Base):
    """A passing decision waiting for a person's approval (``promote: review``) instead of moving production.

    ``pending`` until approved (the pointer moves: ``promotion_event_id``), expired (``expires_at`` passed
    first) or superseded (a newer decision of the same adapter asked for review: ``superseded_by_id``); who
    decided, when and why are kept. One review per decision (``unique(decision_id)``).
    """

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("decision_id", name="uq_reviews_decision"),
        CheckConstraint(_in("state", REVIEW_STATES), name="ck_reviews_state"),
        Index("ix_reviews_adapter_state", "adapter_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(200), doc="Who approved; 'expiry' or the superseder.")
    decided_at: Mapped[datetime | None] = mapped_column(doc="When it left pending.")
    reason: Mapped[str | None] = mapped_column(Text, doc="The approver's reason, or why it expired/was superseded.")
    promotion_event_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_events.id"))
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"))

    # Joined so that a review handed out detached still knows its adapter's name.
    adapter: Mapped[Adapter] = relationship(lazy="joined", innerjoin=True)

    def __repr__(self) -> str:
        return f"Review(id={self.id}, decision_id={self.decision_id}, state={self.state!r})"


class AppendOnlyError(RuntimeError):
    """Raised on an attempt to update or delete a promotion event (the audit history is append-only)."""


@event.listens_for(PromotionEvent, "before_update")
@event.listens_for(PromotionEvent, "before_delete")
def _refuse_change(mapper, connection, target: PromotionEvent) -> None:
    # The ORM-level guard; the database triggers of the migration catch bulk UPDATE/DELETE statements as well.
    raise AppendOnlyError(f"promotion_events is append-only: event {target.id} cannot be updated or deleted")
