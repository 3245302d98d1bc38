"""Guarding only what can matter (tasks/decision/gate.py, "Guarding only what can matter"; issue 9).

A candidate the gate rejects on its task evidence alone is rejected whatever its guard, so skipping its guard
leaves every verdict, the promoted candidate and the documents needed unchanged. Checked over random fleets of
0/1 outcomes with every kind of verdict, against deciding with every guard evaluated.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from spectral_surgery.tasks.decision.gate import (
    REJECTED_ON_TASK_EVIDENCE,
    ArmOutcomes,
    GateConfig,
    decide,
    guard_skips,
)


def _flip(rng: np.random.Generator, x: np.ndarray, gain: float, noise: float) -> list[float]:
    """``x`` with a fraction ``gain`` of its failures turned into successes (negative: successes into failures)
    and a fraction ``noise`` of all outcomes flipped at random."""
    y = x.copy()
    pool = np.flatnonzero(y == (0.0 if gain > 0 else 1.0))
    k = round(abs(gain) * len(pool))
    y[rng.choice(pool, size=k, replace=False)] = 1.0 if gain > 0 else 0.0
    noisy = rng.random(len(y)) < noise
    y[noisy] = 1.0 - y[noisy]
    return y.tolist()


def _fleet(rng: np.random.Generator):
    """One adapter's arms: baseline, 1-4 policies, maybe a scalar (a candidate and the scalar control), 1-3 random
    controls; gains, guard drops and the gate's settings drawn so that promote, hold and reject all occur."""
    n, n_g = int(rng.choice([60, 120, 200, 400])), int(rng.choice([30, 60, 100]))
    base_t = (rng.random(n) < rng.uniform(0.2, 0.7)).astype(float)
    base_g = (rng.random(n_g) < rng.uniform(0.3, 0.8)).astype(float)
    base = ArmOutcomes("baseline", "identity", False, base_t.tolist(), base_g.tolist())

    def arm(name: str, policy: str, control: bool = False) -> ArmOutcomes:
        gain = float(rng.choice([-0.3, -0.05, 0.0, 0.0, 0.05, 0.15, 0.4, 0.8]))
        drop = float(rng.choice([0.0, 0.0, 0.0, -0.1, -0.3]))
        return ArmOutcomes(name, policy, control, _flip(rng, base_t, gain, rng.choice([0.0, 0.02, 0.05])),
                           _flip(rng, base_g, drop, 0.02))

    cands = [arm(f"p{i}", f"policy{i}") for i in range(int(rng.integers(1, 5)))]
    scalar = arm("global_scalar", "global_scalar") if rng.random() < 0.7 else None
    cands += [scalar] if scalar is not None else []
    controls = [arm(f"random_index-s{42 + i}", "random_index", True) for i in range(int(rng.integers(1, 4)))]
    cfg = GateConfig(alpha=float(rng.choice([0.05, 0.2])), min_effect=float(rng.choice([0.01, 0.02, 0.05])),
                     correction=str(rng.choice(["holm", "bonferroni", "none"])),
                     confidence=float(rng.choice([0.8, 0.95])), min_delta=float(rng.choice([0.0, 0.01])))
    return base, cands, controls, scalar, cfg


def _skipping(base, cands, controls, scalar, cfg):
    """The decision made as the flow's ``guard_arms: promotable`` makes it: guards of the candidates rejected on
    task evidence (and of the random controls) not evaluated; the baseline's neither when no candidate needs it."""
    bare = {"guard": None}
    task_only = decide(dataclasses.replace(base, **bare), [dataclasses.replace(c, **bare) for c in cands],
                       [dataclasses.replace(r, **bare) for r in controls], cfg,
                       scalar_control=None if scalar is None else dataclasses.replace(scalar, **bare))
    skips = guard_skips(task_only)
    kept = [c if c.name not in skips else dataclasses.replace(c, guard=None, guard_skipped=skips[c.name])
            for c in cands]
    b = base if len(skips) < len(cands) else dataclasses.replace(base, guard=None)
    s = next((c for c in kept if scalar is not None and c.name == scalar.name), None)
    return decide(b, kept, [dataclasses.replace(r, guard=None) for r in controls], cfg, scalar_control=s), skips


def test_skipping_guards_of_task_rejected_arms_changes_no_decision():
    rng = np.random.default_rng(9)
    kinds, skipped, would_fail, arms = Counter(), 0, 0, 0
    for _ in range(400):
        base, cands, controls, scalar, cfg = _fleet(rng)
        full = decide(base, cands, controls, cfg, scalar_control=scalar)
        part, skips = _skipping(base, cands, controls, scalar, cfg)
        assert [v.verdict for v in part.verdicts] == [v.verdict for v in full.verdicts]
        assert (part.promoted, part.verdict, part.n_needed) == (full.promoted, full.verdict, full.n_needed)
        assert [v.passed for v in part.verdicts] == [v.passed for v in full.verdicts]
        for v in part.verdicts:
            if v.name in skips:
                assert v.guard_skipped == REJECTED_ON_TASK_EVIDENCE and v.guard_ok is None and v.guard_test is None
                assert "IFEval guard not evaluated: rejected on task evidence" in v.reason
        kinds.update(v.verdict for v in full.verdicts)
        kinds.update({f"decision {full.verdict}"})
        skipped += len(skips)
        arms += len(cands)
        would_fail += sum(not v.guard_ok for v in full.verdicts if v.name in skips)
    # the fleets exercise every verdict, many skips, and skipped candidates whose guard would have failed
    assert min(kinds[k] for k in ("promote", "hold", "reject", "decision promote", "decision hold",
                                  "decision reject")) >= 20, kinds
    assert 0.2 * arms < skipped < 0.9 * arms and would_fail >= 20, (skipped, arms, would_fail)


def _task(gain: int = 0, loss: int = 0) -> list[float]:
    x = [1.0] * 200 + [0.0] * 200
    x[200 : 200 + gain] = [1.0] * gain
    x[:loss] = [0.0] * loss
    return x


BASE = ArmOutcomes("baseline", "identity", False, _task(), [1.0] * 80 + [0.0] * 20)
RANDOM = ArmOutcomes("random_s0", "random_index", True, _task())


def test_guard_skips_names_only_the_task_rejected():
    held = ArmOutcomes("held", "a", False, _task(20, 14))
    winner = ArmOutcomes("winner", "b", False, _task(40))
    lost = ArmOutcomes("lost", "c", False, _task(2, 10))
    d = decide(dataclasses.replace(BASE, guard=None), [held, winner, lost], [RANDOM], GateConfig())
    assert [v.verdict for v in d.verdicts] == ["hold", "promote", "reject"]
    assert guard_skips(d) == {"lost": REJECTED_ON_TASK_EVIDENCE}


def test_the_gate_refuses_a_skipped_guard_that_could_matter():
    held = ArmOutcomes("held", "a", False, _task(20, 14), guard_skipped=REJECTED_ON_TASK_EVIDENCE)
    with pytest.raises(ValueError, match="'held': its guard was skipped .* does not reject it"):
        decide(BASE, [held], [RANDOM], GateConfig())
    with pytest.raises(ValueError, match="guard outcomes and guard_skipped"):
        ArmOutcomes("x", "a", False, _task(), [1.0] * 100, guard_skipped=REJECTED_ON_TASK_EVIDENCE)
    guarded = decide(BASE, [ArmOutcomes("y", "a", False, _task(2, 10), [1.0] * 100)], [RANDOM], GateConfig())
    with pytest.raises(ValueError, match="task evidence alone"):
        guard_skips(guarded)
