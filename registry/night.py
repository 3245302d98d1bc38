"""The registry's reads for planning a night (:mod:`tasks.night_plan`): what each pending adapter cost before,
where it stands in line, and what the latest windowed run planned against what it did.

* :func:`night_history`: one :class:`tasks.night_plan.AdapterHistory` per pending version, from one read
  transaction: never refined / new version / deferred by the latest run that saw it, declared priority, latest
  decision time, the per-stage seconds of the adapter's latest decision (``candidates.seconds_json``,
  ``evaluations.seconds``) and the wall seconds of the visit that made it (``adapter_runs.wall_seconds``);
* :func:`run_plan`: the adapter runs of one run with their forecast, actual seconds and plan reason (the
  dashboard's planned-vs-actual table, ``why``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import Adapter, AdapterRun, AdapterVersion, Candidate, Decision, Evaluation
from spectral_surgery.tasks.night_plan import AdapterHistory

SHARED_STAGES = ("decompose", "calibrate")  # one stored stage, recorded on every candidate written from it


def _stage_seconds(s: Session, decision: Decision) -> dict[str, float]:
    """Per-stage seconds of refining the version ``decision`` decided: the stored stages once, the write and γ of
    every candidate it weighed, and every evaluation of them and of the baseline under the same evaluator keys."""
    out: dict[str, float] = {}
    ids = decision.record.candidate_ids  # each candidate keyed on its own since issue 25
    weighed = (Candidate.id.in_([int(i) for i in ids]) if ids is not None
               else Candidate.config_hash == decision.candidate_key)  # a decision made before: one key for all
    cands = s.execute(select(Candidate.id, Candidate.seconds_json).where(
        Candidate.adapter_version_id == decision.adapter_version_id, weighed)).all()
    for _cid, spent in cands:
        for stage, sec in (spent or {}).items():
            if sec is None:
                continue
            out[stage] = max(out.get(stage, 0.0), sec) if stage in SHARED_STAGES else out.get(stage, 0.0) + sec
    ids = [cid for cid, _ in cands]
    if ids:
        keys = select(Evaluation.evaluator_key).where(Evaluation.candidate_id.in_(ids)).distinct()
        evaluate = s.scalar(select(func.sum(Evaluation.seconds)).where(
            Evaluation.adapter_version_id == decision.adapter_version_id, Evaluation.evaluator_key.in_(keys),
            (Evaluation.candidate_id.in_(ids)) | (Evaluation.candidate_id.is_(None))))
        if evaluate is not None:
            out["evaluate"] = float(evaluate)
    return out


def night_history(registry, versions: Sequence[AdapterVersion]) -> list[AdapterHistory]:
    """What the planner needs of each version that needs work tonight (one read transaction).

    Args:
        registry: A :class:`registry.repository.Registry`.
        versions: The pending versions (:meth:`registry.runs.RunStore.pending_work`), ``adapter`` loaded. A
            version counts as deferred when the latest run that recorded it deferred it, whatever that run's
            config: it waited a night either way.

    Returns:
        One record per version, in the order given.
    """
    out = []
    with session_scope(registry.engine, write=False) as s:
        for v in versions:
            adapter = v.adapter
            done = s.execute(select(AdapterRun.adapter_version_id).join(
                AdapterVersion, AdapterVersion.id == AdapterRun.adapter_version_id).where(
                AdapterVersion.adapter_id == adapter.id, AdapterRun.status == "completed")).scalars().all()
            latest = s.scalars(select(AdapterRun).where(AdapterRun.adapter_version_id == v.id)
                               .order_by(AdapterRun.id.desc()).limit(1)).first()
            decision = s.scalars(select(Decision).join(AdapterVersion, AdapterVersion.id == Decision.adapter_version_id)
                                 .where(AdapterVersion.adapter_id == adapter.id)
                                 .order_by(Decision.created_at.desc(), Decision.id.desc()).limit(1)).first()
            wall = None
            if decision is not None:
                wall = s.scalars(select(AdapterRun.wall_seconds).where(
                    AdapterRun.decision_id == decision.id, AdapterRun.status == "completed",
                    AdapterRun.wall_seconds.is_not(None)).order_by(AdapterRun.id.desc()).limit(1)).first()
            out.append(AdapterHistory(
                name=adapter.name, version_id=v.id, never_refined=not done, new_version=bool(done) and v.id not in done,
                deferred=latest is not None and latest.status == "deferred", priority=adapter.priority or 0,
                last_decision_at=decision.created_at if decision is not None else None,
                stage_seconds=_stage_seconds(s, decision) if decision is not None else {}, wall_seconds=wall))
    return out


@dataclass(frozen=True)
class PlannedRun:
    """One adapter run of a windowed night: what was planned and what happened.

    Attributes:
        adapter: The adapter's name; ``version_id`` the version.
        status: ``completed``, ``failed``, ``deferred``, ``running`` or ``pending``.
        forecast_s: The planner's forecast (None: the run had no window).
        actual_s: Wall seconds of the visit as the flow measured it (None: not started or not ended).
        reason: The plan's reason (why it started where it did, or why it waits).
    """

    adapter: str
    version_id: int
    status: str
    forecast_s: float | None
    actual_s: float | None
    reason: str | None
    started_at: datetime | None

    @property
    def error(self) -> float | None:
        """``(actual − forecast) / forecast``, None when either is unknown."""
        if self.forecast_s is None or self.actual_s is None or self.forecast_s <= 0:
            return None
        return (self.actual_s - self.forecast_s) / self.forecast_s


def run_plan(registry, run_id: int) -> list[PlannedRun]:
    """The adapter runs of ``run_id`` with forecast and actual seconds, by adapter name."""
    with session_scope(registry.engine, write=False) as s:
        rows = s.execute(select(AdapterRun, Adapter.name).join(
            AdapterVersion, AdapterVersion.id == AdapterRun.adapter_version_id).join(
            Adapter, Adapter.id == AdapterVersion.adapter_id).where(AdapterRun.run_id == run_id)).all()
    out = []
    for row, name in rows:
        actual = row.wall_seconds if row.status in ("completed", "failed") else None
        out.append(PlannedRun(name, row.adapter_version_id, row.status, row.forecast_seconds, actual,
                              row.plan_reason, row.started_at))
    return sorted(out, key=lambda r: r.adapter)
