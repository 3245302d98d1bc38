"""Decision statistics for tests, built through the typed record (:mod:`tasks.decision.record`), never by hand.

* :func:`recorded`: a real gate decision as the flow records it (:meth:`DecisionRecord.of`) and a reader reads it
  back from the registry (a JSON round trip, then :meth:`DecisionRecord.from_json`);
* :func:`stored`: the same as the registry holds it (``to_json``);
* :func:`statistics`: a partial row (a few fields, as a test registry row or an older shape needs), each field
  checked against the record's types, and a name the record does not know refused (a typo fails here, not in a
  reader that would see the field's default).
"""

from __future__ import annotations

import json
from typing import Any

from spectral_surgery.tasks.decision.gate import Decision
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
