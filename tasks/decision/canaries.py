"""Canaries of the gate (ARCHITECTURE.md, "Verdicts"): checks that the run itself is sound (pure, numpy).

A failed canary flags the whole decision: nothing from the run is promoted, whatever the candidates' numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# ``ArmOutcomes`` (tasks.decision.gate, which imports this module) appears in annotations only, never imported.

_EPS = 1e-12  # outcomes equal up to float rounding count as the same


def documents_differing(own: Sequence[float], baseline: Sequence[float]) -> int:
    """Documents on which a canary's outcomes differ from the baseline's, over the first ``len(own)`` documents (a
    canary may be scored on fewer documents than the baseline: a sequential run's looks)."""
    own_a = np.asarray(own, dtype=np.float64)
    return int(np.sum(np.abs(own_a - np.asarray(baseline, dtype=np.float64)[: own_a.size]) > _EPS))


def zero_rebuild_holds(differ: int, n: int, tolerance: float) -> bool:
    """The zero-rebuild rule: at most ``tolerance`` (a fraction) of its ``n`` documents differ from the baseline."""
    return differ / n <= tolerance + _EPS


def canaries(baseline: ArmOutcomes, zero_rebuild: ArmOutcomes | None, bare_base: ArmOutcomes | None,
             tolerance: float = 0.0) -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:  # fmt: skip
    """Check the two canaries; returns (per-canary record, flags).

    * zero rebuild (σ unchanged through the candidates' write path, EXTENSIONS.md §8.4): its per-document
      task outcomes may differ from the baseline's on at most ``tolerance`` (a fraction) of the documents;
    * applied adapter: the baseline must differ from the bare base model on at least one document.

    Args:
        baseline: The unedited adapter.
        zero_rebuild: The zero-rebuild arm, aligned with the baseline on its first documents (a sequential run scores
            the canaries at the first look only; None: not checked).
        bare_base: The base model without the adapter, aligned the same way (None: not checked).
        tolerance: ``GateConfig.canary_tolerance``.

    Returns:
        ``({"zero_rebuild": {arm, n_differ, fraction, tolerance, ok}, "bare_base": {arm, n_differ, fraction,
        ok}}, flags)`` with one readable flag per failed canary.
    """
    record: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    for key, arm in (("zero_rebuild", zero_rebuild), ("bare_base", bare_base)):
        if arm is None:
            continue
        own = arm.task  # a canary may be scored on the first documents only
        differ = documents_differing(own, baseline.task)
        frac = differ / len(own)
        ok = zero_rebuild_holds(differ, len(own), tolerance) if key == "zero_rebuild" else differ > 0
        record[key] = {"arm": arm.name, "n_differ": differ, "fraction": frac, "ok": ok,
                       **({"tolerance": tolerance} if key == "zero_rebuild" else {})}  # fmt: skip
        if not ok and key == "zero_rebuild":
            flags.append(f"zero-rebuild canary {arm.name} differs from the baseline on {differ} of {len(own)} "
                         f"documents ({frac * 100:.1f}% > tolerance {tolerance * 100:.1f}%)")  # fmt: skip
        elif not ok:
            flags.append(f"adapter not applied: the baseline matches the bare base {arm.name} on all "
                         f"{len(own)} documents")  # fmt: skip
    return record, tuple(flags)
