"""What a decision is keyed by and what it records besides the gate's verdicts (pure: no Prefect, no registry).

The flow's ``decide_and_promote`` keys its decision by :func:`tasks.keys.decision_key` over the gate settings, the
candidates' key and :func:`decision_evidence` (the evaluations weighed), runs the gate on the stored outcomes and
stores :func:`decision_record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spectral_surgery.tasks.decision.arms import Arm
from spectral_surgery.tasks.decision.gate import Decision
from spectral_surgery.tasks.decision.record import (
    DecisionRecord,
    EvidenceKeys,
    GuardRecord,
    LadderRecord,
    MetricFallback,
)


def decision_evidence(task_name: str, task_key: str, guard_name: str | None, guard_key: str | None,
                      candidate_ids: Mapping[str, int], sequential: dict | None = None,
                      guard_skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The evaluations a decision weighs, as its key holds them.

    Args:
        task_name: The task benchmark; ``task_key`` its evaluation key.
        guard_name: The guard benchmark (None: no guard); ``guard_key`` its evaluation key (None: not evaluated).
        candidate_ids: Arm name -> candidate row id of every subject weighed.
        sequential: The sequential run's record (its ``design`` is keyed; None: one look).
        guard_skipped: Arm name -> why its guard was not evaluated; absent from the evidence when empty, so the
            keys of decisions made before guard arms existed stay the same.
    """
    evidence: dict[str, Any] = {"task": [task_name, task_key], "guard": [guard_name, guard_key],
                                "subjects": sorted(candidate_ids.items())}
    if sequential is not None:
        evidence["sequential"] = sequential["design"]
    if guard_skipped:
        evidence["guard_skipped"] = sorted(guard_skipped)
    return evidence


def _means(outcomes: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {n: sum(x) / len(x) for n, x in outcomes.items()}


def decision_record(decision: Decision, arms: Sequence[Arm], *, candidate_ids: Mapping[str, int],
                    candidates_key: str, candidate_keys: Mapping[str, str], ladder_skipped: Mapping[str, str],
                    task_key: str, task_out: Mapping[str, Sequence[float]], guard_key: str | None,
                    guard_out: Mapping[str, Sequence[float]] | None, guard_name: str | None,
                    guard_arms: Any, guard_skipped: Mapping[str, str] | None, sequential: dict | None,
                    edit_budget: dict | None, requested_metric: str, metric_fallback: str | None) -> DecisionRecord:
    """The record a decision stores: the gate's decision with the means, keys, ladder, guard plan, looks, edit
    budget and decision-metric fallback (:meth:`DecisionRecord.of`).

    Args:
        candidate_ids: Arm name -> candidate row id of the visit (the ladder's roles are of these arms).
        candidates_key: The key of the candidate set; ``candidate_keys`` each arm's own candidate key.
        ladder_skipped: Ladder members not written, and why.
        task_out: Subject -> task outcomes (``task_key``: their evaluation key); ``guard_out`` likewise (None: no
            guard evaluated).
        guard_name: The guard benchmark (None: no guard configured: no guard section).
        guard_arms: The configured guard arms (:attr:`tasks.run_config.RunConfig.guard_arms`).
        guard_skipped: Arm name -> why its guard was not evaluated.
        requested_metric: The configured decision metric; ``metric_fallback`` why it fell back to the task
            outcomes (None: used as requested).
    """
    role = {a.name: a.role for a in arms if a.name in candidate_ids}
    return DecisionRecord.of(
        decision, means=_means(task_out), guard_means=_means(guard_out) if guard_out else None,
        keys=EvidenceKeys(candidates=candidates_key, task_evaluation=task_key, guard_evaluation=guard_key,
                          candidate_arms=dict(sorted(candidate_keys.items()))),
        ladder=LadderRecord(roles=role, skipped=ladder_skipped),
        guard=GuardRecord(arms=guard_arms, skipped={n: f"guard not evaluated: {why}"
                                                    for n, why in (guard_skipped or {}).items()})
        if guard_name else None,
        sequential=sequential, edit_budget=edit_budget,
        decision_metric=MetricFallback(requested=requested_metric, used="task", why=metric_fallback)
        if metric_fallback else None)
