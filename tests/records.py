"""Decision statistics for tests, built through the typed record (:mod:`tasks.decision.record`), never by hand.

* :func:`recorded`: a real gate decision as the flow records it (:meth:`DecisionRecord.of`) and a reader reads it
  back from the registry (a JSON round trip, then :meth:`DecisionRecord.from_json`);
* :func:`stored`: the same as the registry holds it (``to_json``);
* :func:`ladder_promotion`: one worked decision against the whole ladder (random control, global scalar, both
  canaries, a guard), shared by the MLflow mapping's and the pinned report's tests;
* :func:`statistics`: a partial row (a few fields, as a test registry row or an older shape needs), each field
  checked against the record's types, and a name the record does not know refused (a typo fails here, not in a
  reader that would see the field's default).
"""

from __future__ import annotations

import json
from typing import Any

from spectral_surgery.tasks.decision.gate import ArmOutcomes, Decision, GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord, EvidenceKeys, LadderRecord


def recorded(decision: Decision, *, means: dict[str, float] | None = None, keys: EvidenceKeys | None = None,
             ladder: LadderRecord | None = None, **sections: Any) -> DecisionRecord:
    """``decision`` recorded as the flow records it and read back as every reader reads it.

    Args:
        decision: A real gate decision (:func:`tasks.decision.gate.decide`).
        means: Subject name -> task mean (default: the baseline's and every verdict's ``task_mean``).
        keys: The evidence keys (default: none known).
        ladder: The arms' roles (default: none recorded).
        **sections: The other sections of :meth:`DecisionRecord.of` (``guard_means``, ``guard``, ``sequential``...).
    """
    if means is None:
        means = {"baseline": decision.baseline_task_mean, **{v.name: v.task_mean for v in decision.verdicts}}
    rec = DecisionRecord.of(decision, means=means, keys=keys or EvidenceKeys(), ladder=ladder or LadderRecord(),
                            **sections)
    return DecisionRecord.from_json(json.loads(json.dumps(rec.to_json())), decision.promoted is not None)


def stored(decision: Decision, **kw: Any) -> dict[str, Any]:
    """The statistics the registry holds for ``decision`` (:func:`recorded`'s arguments), as plain JSON."""
    return json.loads(json.dumps(recorded(decision, **kw).to_json()))


def _task(gain: int) -> list[float]:
    x = [1.0] * 100 + [0.0] * 100  # the baseline solves documents 0..99 of 200
    x[100:100 + gain] = [1.0] * gain
    return x


def ladder_promotion() -> DecisionRecord:
    """The gate promoting ``smooth_abs`` (+20 pts on 200 documents) against the whole ladder: a random control, the
    global scalar, both canaries, an IFEval guard on 50 prompts; recorded as the flow records it, with evidence keys."""
    guard = [1.0] * 40 + [0.0] * 10
    arms = {"baseline": ArmOutcomes("baseline", "baseline", False, _task(0), guard),
            "smooth_abs": ArmOutcomes("smooth_abs", "smooth_abs", False, _task(40), guard),
            "abs_select": ArmOutcomes("abs_select", "abs_select", False, _task(3), guard),
            "random_index-s42": ArmOutcomes("random_index-s42", "random_index", True, _task(2), guard),
            "global_scalar": ArmOutcomes("global_scalar", "global_scalar", False, _task(1), guard),
            "zero_rebuild": ArmOutcomes("zero_rebuild", "zero_rebuild", True, _task(0)),
            "bare_base": ArmOutcomes("bare_base", "bare_base", True, [0.0] * 200)}
    d = decide(arms["baseline"], [arms["smooth_abs"], arms["abs_select"], arms["global_scalar"]],
               [arms["random_index-s42"]], GateConfig(), scalar_control=arms["global_scalar"],
               zero_rebuild=arms["zero_rebuild"], bare_base=arms["bare_base"])
    return recorded(d, means={n: sum(a.task) / len(a.task) for n, a in arms.items()},
                    guard_means={n: sum(a.guard) / len(a.guard) for n, a in arms.items() if a.guard},
                    keys=EvidenceKeys(candidates="c" * 64, task_evaluation="t" * 64, guard_evaluation="g" * 64))


def statistics(**fields: Any) -> dict[str, Any]:
    """A partial statistics document of exactly ``fields``, validated by :class:`DecisionRecord`.

    Raises:
        TypeError: A field the record does not have.
        pydantic.ValidationError: A value of the wrong type (the field is named).
    """
    unknown = sorted(set(fields) - set(DecisionRecord.model_fields))
    if unknown:
        raise TypeError(f"DecisionRecord has no field(s) {unknown}")
    return DecisionRecord.model_validate(fields).model_dump(mode="json", exclude_unset=True)
