"""The promotion gate as a decision table (tasks/decision/gate.py; ARCHITECTURE.md, "The gate, precisely").

Outcomes are 0/1, so every test is an exact McNemar test whose p-value follows from the discordant counts:
the baseline solves documents 0..199 of 400; an arm "gaining k" also solves documents 200..200+k, so arms
are nested and k − j discordant documents all favour the larger gain (p = 0.5**(k − j)).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import ValidationError

import math

from spectral_surgery.tasks.decision.gate import ArmOutcomes, Decision, GateConfig, decide, guard_check
from spectral_surgery.tasks.decision.power import mcnemar_mde, mcnemar_sample_size, paired_mde
from spectral_surgery.tasks.decision.stats import adjust_pvalues

N_DOCS, N_PROMPTS = 400, 100
CFG = GateConfig()


def task(gain: int = 0, loss: int = 0) -> list[float]:
    """Baseline pattern with ``gain`` extra documents solved (200..) and ``loss`` lost (0..)."""
    x = [1.0] * 200 + [0.0] * 200
    x[200 : 200 + gain] = [1.0] * gain
    x[:loss] = [0.0] * loss
    return x


def guard(drop: int = 0, rise: int = 0) -> list[float]:
    """IFEval strict outcomes: baseline passes prompts 0..79; ``drop`` of those fail, ``rise`` of 80.. pass."""
    x = [1.0] * 80 + [0.0] * 20
    x[:drop] = [0.0] * drop
    x[80 : 80 + rise] = [1.0] * rise
    return x


BASE = ArmOutcomes("baseline", "identity", False, task(), guard())


def cand(name: str, gain: int = 40, loss: int = 0, g: list[float] | None = None, **kw) -> ArmOutcomes:
    return ArmOutcomes(name, name, False, task(gain, loss), guard() if g is None else g, **kw)


def ctrl(name: str = "random_s0", gain: int = 10) -> ArmOutcomes:
    return ArmOutcomes(name, "random_index", True, task(gain))


def one(d: Decision, name: str):
    return next(v for v in d.verdicts if v.name == name)


# -------------------------------------------------------------------------------------------- table
def test_passes_all_conditions():
    d = decide(BASE, [cand("smooth_abs", g=guard(drop=1))], [ctrl(gain=10)], CFG)
    v = one(d, "smooth_abs")
    assert d.promoted == "smooth_abs"
    assert (v.beats_baseline, v.beats_control, v.guard_ok, v.passed) == (True, True, True, True)
    assert v.vs_baseline.p_value == pytest.approx(0.5**40)
    assert v.vs_control.p_value == pytest.approx(0.5**30) and v.control_name == "random_s0"
    assert v.task_mean == pytest.approx(240 / 400) and v.guard_delta == pytest.approx(-0.01)
    assert d.sentence == (
        "smooth_abs +10.0 pts vs baseline (p<0.001) and +7.5 vs random_s0 (p<0.001); "
        "IFEval −1.0 within 2.0 → promoted"
    )


def test_fails_baseline_delta():
    d = decide(BASE, [cand("abs_select", gain=0, loss=6)], [ctrl(gain=0)], CFG)
    v = one(d, "abs_select")
    assert d.promoted is None and not v.beats_baseline and not v.passed
    assert "abs_select −1.5 pts vs baseline (p=1, no gain)" in v.reason


def test_fails_significance():
    # 6 documents gained, 2 lost: delta +1.0 pt, p = P(X >= 6 | Bin(8, ½)) = 37/256.
    d = decide(BASE, [cand("abs_select", gain=6, loss=2)], [ctrl(gain=0)], CFG)
    v = one(d, "abs_select")
    assert v.vs_baseline.p_value == pytest.approx(37 / 256)
    assert not v.beats_baseline and d.promoted is None
    assert "abs_select +1.0 pts vs baseline (p=0.145, not significant)" in v.reason
    assert d.sentence.startswith("no candidate promoted: abs_select +1.0 pts vs baseline (p=0.145, not significant)")


def test_fails_vs_control():
    d = decide(BASE, [cand("smooth_abs", gain=40)], [ctrl(gain=38)], CFG)
    v = one(d, "smooth_abs")
    assert v.beats_baseline and not v.beats_control and not v.passed and d.promoted is None
    assert v.vs_control.p_value == pytest.approx(0.25)
    assert "+0.5 vs random_s0 (p=0.25, not significant)" in v.reason


def test_best_of_several_controls_is_the_reference():
    controls = [ctrl("random_s0", 10), ctrl("random_s1", 38), ctrl("random_s2", 5)]
    v = one(decide(BASE, [cand("smooth_abs")], controls, CFG), "smooth_abs")
    assert v.control_name == "random_s1" and not v.beats_control


def test_fails_guard_by_tolerance():
    # 3 of 100 prompts lost: −3.0 pts > 2.0 tolerance, though p = 0.125 is not significant.
    d = decide(BASE, [cand("grad_direction", g=guard(drop=3))], [ctrl()], CFG)
    v = one(d, "grad_direction")
    assert v.beats_baseline and v.beats_control and not v.guard_ok and d.promoted is None
    assert v.guard_test.p_value == pytest.approx(0.125) and v.guard_delta == pytest.approx(-0.03)
    assert "IFEval −3.0 exceeds 2.0" in v.reason


def test_guard_drop_of_exactly_the_tolerance_is_within():
    v = one(decide(BASE, [cand("smooth_abs", g=guard(drop=2))], [ctrl()], CFG), "smooth_abs")
    assert v.guard_ok and v.passed and "IFEval −2.0 within 2.0" in v.reason


def test_fails_guard_by_significance():
    # 8 prompts lost, none gained: −8 pts is inside a 10-pt tolerance but p = 0.5**8 < 0.05.
    cfg = GateConfig(guard_tolerance=0.10)
    d = decide(BASE, [cand("grad_direction", g=guard(drop=8))], [ctrl()], cfg)
    v = one(d, "grad_direction")
    assert not v.guard_ok and d.promoted is None
    assert v.guard_test.alternative == "less" and v.guard_test.p_value == pytest.approx(0.5**8)
    assert "IFEval −8.0 significant drop (p=0.00391)" in v.reason


def test_guard_check_direct():
    ok, delta, test = guard_check(guard(drop=1, rise=3), guard(), CFG)
    assert ok and delta == pytest.approx(0.02) and test.p_value == pytest.approx(1 - 0.5**4)
    ok, delta, _ = guard_check(guard(drop=5), guard(), CFG)
    assert not ok and delta == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="aligned"):
        guard_check(guard()[:50], guard(), CFG)


def test_guard_missing_for_candidate_fails_and_absent_for_baseline_is_skipped():
    d = decide(BASE, [ArmOutcomes("smooth_abs", "smooth_abs", False, task(40), None)], [ctrl()], CFG)
    v = one(d, "smooth_abs")
    assert not v.guard_ok and v.guard_delta is None and "IFEval guard missing for this candidate" in v.reason
    no_guard_base = ArmOutcomes("baseline", "identity", False, task(), None)
    d = decide(no_guard_base, [cand("smooth_abs")], [ctrl()], CFG)
    v = one(d, "smooth_abs")
    assert v.guard_ok and v.guard_test is None and d.promoted == "smooth_abs"
    assert "IFEval guard not evaluated" in v.reason


def test_tie_on_task_mean_broken_by_p_then_name():
    # Same mean (+40 docs): "zeta" gains 40 cleanly (p = ½**40), "alpha" gains 45 and loses 5 (larger p).
    d = decide(BASE, [cand("alpha", gain=45, loss=5), cand("zeta", gain=40)], [ctrl()], CFG)
    assert one(d, "alpha").task_mean == one(d, "zeta").task_mean
    assert one(d, "alpha").vs_baseline.p_value > one(d, "zeta").vs_baseline.p_value
    assert d.promoted == "zeta" and "(also passed: alpha)" in d.sentence
    # Identical outcomes: the name decides, whatever the input order.
    for order in ([cand("b_pol"), cand("a_pol")], [cand("a_pol"), cand("b_pol")]):
        assert decide(BASE, order, [ctrl()], CFG).promoted == "a_pol"


def test_best_task_mean_wins_among_passing():
    d = decide(BASE, [cand("small", gain=30), cand("big", gain=50), cand("bad", gain=1)], [ctrl()], CFG)
    assert d.promoted == "big"
    assert [v.name for v in d.verdicts] == ["small", "big", "bad"]  # input order kept
    assert [v.passed for v in d.verdicts] == [True, True, False]


@pytest.mark.parametrize("require", [True, False])
def test_missing_controls(require):
    cfg = GateConfig(require_control=require)
    d = decide(BASE, [cand("smooth_abs")], [], cfg)
    v = one(d, "smooth_abs")
    assert v.vs_control is None and v.control_name is None and not v.beats_control
    if require:
        assert d.promoted is None and not v.passed
        assert "no random control evaluated" in v.reason and "not required" not in v.reason
        assert d.sentence.startswith("no candidate promoted:")
    else:
        assert d.promoted == "smooth_abs" and v.passed
        assert "no random control evaluated (not required)" in d.sentence


def test_all_candidates_failing():
    cands = [cand("abs_select", gain=5, loss=2), cand("grad_direction", g=guard(drop=9)), cand("z_score", gain=0)]
    d = decide(BASE, cands, [ctrl(gain=0)], CFG)
    assert d.promoted is None and not any(v.passed for v in d.verdicts)
    assert d.sentence.startswith("no candidate promoted: ")
    for v in d.verdicts:
        assert v.reason in d.sentence
    assert "grad_direction" in d.sentence and "IFEval −9.0 exceeds 2.0" in d.sentence


def test_no_candidates():
    d = decide(BASE, [], [ctrl()], CFG)
    assert d.promoted is None and d.verdicts == () and d.sentence == "no candidate promoted: no candidates evaluated"


def test_control_is_never_promoted():
    strong_control = ArmOutcomes("random_s9", "random_index", True, task(100), guard())
    d = decide(BASE, [strong_control, cand("smooth_abs", gain=20)], [ctrl(gain=0)], CFG)
    v = one(d, "random_s9")
    assert not v.passed and v.reason.startswith("random_s9 is a random control, never promoted (")
    assert d.promoted == "smooth_abs"
    # The best arm overall being a control (in `controls`) promotes nothing, and blocks a weaker candidate.
    d = decide(BASE, [cand("smooth_abs", gain=20)], [ctrl(gain=100)], CFG)
    assert d.promoted is None and all(v.name != "random_s0" for v in d.verdicts)


def test_min_delta():
    # +8 documents = +2.0 pts, p = ½**8: significant, but only above a min_delta below 2 points.
    arms = [cand("smooth_abs", gain=8)], [ctrl(gain=0)]
    assert decide(BASE, *arms, GateConfig(min_delta=0.019)).promoted == "smooth_abs"
    d = decide(BASE, *arms, GateConfig(min_delta=0.02))
    assert d.promoted is None
    assert "+2.0 pts vs baseline (p=0.00391, not above min_delta 2.0)" in one(d, "smooth_abs").reason


def test_alpha_is_respected():
    arms = [cand("smooth_abs", gain=5)], [ctrl(gain=0)]  # p = ½**5 = 0.03125
    assert decide(BASE, *arms, GateConfig(alpha=0.05)).promoted == "smooth_abs"
    assert decide(BASE, *arms, GateConfig(alpha=0.03)).promoted is None


def test_lower_is_better():
    # Error-type metric: 1 = error. "fixer" removes 30 errors, "breaker" adds 30; controls remove 0 and 5.
    def err(name: str, errors: int, control: bool = False) -> ArmOutcomes:
        x = [1.0] * errors + [0.0] * (N_DOCS - errors)
        return ArmOutcomes(name, "p", control, x, None if control else guard(), higher_is_better=False)

    base = err("baseline", 100)
    d = decide(base, [err("fixer", 70), err("breaker", 130)], [err("r0", 100, True), err("r1", 95, True)], CFG)
    fixer, breaker = one(d, "fixer"), one(d, "breaker")
    assert d.promoted == "fixer" and not d.higher_is_better
    assert fixer.control_name == "r1"  # best control = lowest error
    assert fixer.vs_baseline.alternative == "less" and fixer.vs_baseline.p_value == pytest.approx(0.5**30)
    assert fixer.vs_baseline.delta == pytest.approx(-0.075)
    assert not breaker.beats_baseline and "+7.5 pts vs baseline (p=1, no gain)" in breaker.reason
    assert d.sentence.endswith("→ promoted (task metric: lower is better)")
    # Two passing lower-is-better candidates: the lower mean wins.
    d = decide(base, [err("good", 80), err("better", 60)], [err("r0", 100, True)], CFG)
    assert d.promoted == "better"


def test_continuous_outcomes_use_bootstrap():
    rng = np.random.default_rng(0)
    b = rng.random(300)
    base = ArmOutcomes("baseline", "identity", False, b.tolist())
    up = ArmOutcomes("smooth_abs", "smooth_abs", False, np.clip(b + 0.1 + rng.normal(0, 0.05, 300), 0, 1).tolist())
    r = ArmOutcomes("random_s0", "random_index", True, (b + rng.normal(0, 0.05, 300)).tolist())
    d = decide(base, [up], [r], GateConfig(n_boot=2000))
    v = one(d, "smooth_abs")
    assert v.vs_baseline.method == "paired_bootstrap" and v.vs_baseline.p_value == pytest.approx(1 / 2001)
    assert d.promoted == "smooth_abs"
    assert decide(base, [up], [r], GateConfig(n_boot=2000)) == d  # seeded: reproducible


# ------------------------------------------------------------------------------------------ errors
def test_misaligned_inputs_raise():
    with pytest.raises(ValueError, match=r"candidate 'short': task has 399 outcomes, baseline 'baseline' has 400"):
        decide(BASE, [ArmOutcomes("short", "p", False, task()[:-1], guard())], [ctrl()], CFG)
    with pytest.raises(ValueError, match=r"control 'random_s0': task has 10 outcomes"):
        decide(BASE, [cand("smooth_abs")], [ArmOutcomes("random_s0", "r", True, [0.0] * 10)], CFG)
    with pytest.raises(ValueError, match=r"candidate 'g': guard has 99 outcomes.*aligned by prompt"):
        decide(BASE, [cand("g", g=guard()[:-1])], [ctrl()], CFG)


def test_inconsistent_arms_raise():
    with pytest.raises(ValueError, match="appears twice"):
        decide(BASE, [cand("x"), cand("x")], [ctrl()], CFG)
    with pytest.raises(ValueError, match="higher_is_better"):
        decide(BASE, [cand("x", higher_is_better=False)], [ctrl()], CFG)
    with pytest.raises(ValueError, match="is_control=False"):
        decide(BASE, [cand("x")], [cand("not_a_control")], CFG)
    with pytest.raises(ValueError, match="baseline 'b' has is_control=True"):
        decide(ArmOutcomes("b", "identity", True, task()), [cand("x")], [], CFG)
    with pytest.raises(ValueError, match=r"arm 'bad' task: outcome at index 0 is nan"):
        ArmOutcomes("bad", "p", False, [float("nan")])
    with pytest.raises(ValueError, match=r"arm 'bad' task: no outcomes"):
        ArmOutcomes("bad", "p", False, [])


def test_config_validation():
    for bad in ({"alpha": 0.0}, {"alpha": 1.0}, {"min_delta": -0.01}, {"guard_tolerance": 2.0}, {"typo": 1}):
        with pytest.raises(ValidationError):
            GateConfig(**bad)
    with pytest.raises(ValidationError):
        CFG.alpha = 0.1  # frozen


# ------------------------------------------------------------------------------------------ record
def test_to_dict_is_json_serialisable_and_complete():
    d = decide(BASE, [cand("smooth_abs"), cand("abs_select", gain=1)], [ctrl()], GateConfig(min_delta=0.005))
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["promoted"] == "smooth_abs" and out["sentence"] == d.sentence
    assert out["config"]["min_delta"] == 0.005 and out["config"]["guard_tolerance"] == 0.02
    assert out["baseline"] == "baseline" and out["baseline_task_mean"] == 0.5
    v = out["verdicts"][0]
    assert v["vs_baseline"]["method"] == "mcnemar_exact" and v["vs_baseline"]["n_a_only"] == 40
    assert v["vs_control"]["p_value"] == pytest.approx(0.5**30) and v["guard_test"]["n"] == N_PROMPTS
    assert [x["passed"] for x in out["verdicts"]] == [True, False]


# ------------------------------------------------------------------------------------ verdicts (wave 2)
def test_verdict_promote_records_power_numbers():
    d = decide(BASE, [cand("smooth_abs")], [ctrl(gain=10)], CFG)
    v = one(d, "smooth_abs")
    assert d.verdict == v.verdict == "promote" and d.n_needed is None
    assert (v.n, v.n_a_only, v.n_b_only) == (400, 40, 0)
    assert v.p_adjusted == pytest.approx(0.5**30)  # max(p vs baseline, p vs control); one candidate: no change
    assert 0 < v.mde < 0.1 and v.n_needed >= 1


def test_verdict_hold_says_how_many_documents():
    # +20/−14 documents: +1.5 pts, p = P(X ≥ 20 | Bin(34, ½)) ≈ 0.196; the interval holds 0 and +2 pts.
    d = decide(BASE, [cand("abs_select", gain=20, loss=14)], [ctrl(gain=0)], CFG)
    v = one(d, "abs_select")
    assert v.verdict == d.verdict == "hold" and d.promoted is None
    assert v.gain_upper > CFG.min_effect and v.vs_baseline.ci_low < 0
    # Connor (1987) at the observed discordance 34/400 vs baseline (and vs the control), alpha 0.05, power 0.8.
    expected = math.ceil(mcnemar_sample_size(0.02, 34 / 400, 0.05, 0.8))
    assert v.n_needed == expected == 1312
    assert v.mde == pytest.approx(mcnemar_mde(400, 34 / 400, 0.05, 0.8))
    assert d.n_needed == expected and d.sentence.endswith(f"adapter held for evidence ({v.name}): needs ~{expected} "
                                                          "documents")
    assert f"hold: held for evidence: needs ~{expected} documents" in v.reason


def test_hold_sentence_names_the_held_candidate_not_the_last_one_listed():
    """A held candidate beside a guard-rejected one listed after it: the sentence's tail is about the adapter and
    names the held candidate, so it cannot be read as the guard-rejected candidate's verdict."""
    d = decide(BASE, [cand("abs_select", gain=20, loss=14), cand("smooth_abs", gain=60, g=guard(drop=30))],
               [ctrl(gain=0)], CFG)
    assert one(d, "abs_select").verdict == "hold" and one(d, "smooth_abs").verdict == "reject"
    assert d.verdict == "hold"
    tail = d.sentence.rsplit(" — ", 1)[1]
    assert tail == f"adapter held for evidence (abs_select): needs ~{d.n_needed} documents"
    assert "smooth_abs" in d.sentence and "the IFEval guard fails" in d.sentence


def test_verdict_reject_by_upper_bound():
    d = decide(BASE, [cand("abs_select", gain=2, loss=10)], [ctrl(gain=0)], CFG)
    v = one(d, "abs_select")
    assert v.verdict == d.verdict == "reject" and v.gain_upper < CFG.min_effect
    assert "reject: the gain's upper bound" in v.reason and "below min_effect 2.0" in v.reason


def test_verdict_reject_by_guard():
    v = one(decide(BASE, [cand("grad_direction", g=guard(drop=3))], [ctrl()], CFG), "grad_direction")
    assert v.verdict == "reject" and "reject: the IFEval guard fails" in v.reason


def test_verdict_reject_random_control_explains():
    v = one(decide(BASE, [cand("smooth_abs", gain=40)], [ctrl(gain=40)], CFG), "smooth_abs")
    assert v.verdict == "reject" and v.explained_by == "random_s0"
    assert "the random control random_s0 explains this gain" in v.reason


def test_verdict_reject_a_global_rescale_explains():
    scalar = ArmOutcomes("scalar_g0.40", "global_scalar", True, task(40), guard())
    d = decide(BASE, [cand("hns", gain=41)], [ctrl(gain=0)], CFG, scalar_control=scalar)
    v = one(d, "hns")
    assert v.beats_baseline and v.beats_control and v.beats_scalar is False
    assert v.scalar_name == "scalar_g0.40" and v.vs_scalar.n_a_only == 1 and v.explained_by == "scalar_g0.40"
    assert v.verdict == d.verdict == "reject" and "a global rescale explains this gain" in v.reason
    # The scalar as a candidate too: it is compared with baseline and control, not itself, and may win.
    as_cand = ArmOutcomes("scalar_g0.40", "global_scalar", False, task(40), guard())
    d = decide(BASE, [cand("hns", gain=20), as_cand], [ctrl(gain=0)], CFG, scalar_control=as_cand)
    assert d.promoted == "scalar_g0.40" and one(d, "scalar_g0.40").vs_scalar is None
    assert one(d, "hns").verdict == "reject" and "a global rescale explains this gain" in one(d, "hns").reason
    with pytest.raises(ValueError, match="scalar_control"):
        decide(BASE, [as_cand], [ctrl()], CFG, scalar_control=ArmOutcomes("scalar_g0.40", "g", True, task(3)))


def test_zero_rebuild_canary():
    zr = ArmOutcomes("zero_rebuild", "zero_rebuild", True, task(gain=3))  # differs on 3 of 400 documents
    d = decide(BASE, [cand("smooth_abs")], [ctrl()], CFG, zero_rebuild=zr)
    assert d.promoted is None and d.verdict == "reject" and len(d.flags) == 1
    assert "zero-rebuild canary zero_rebuild differs from the baseline on 3 of 400 documents" in d.flags[0]
    v = one(d, "smooth_abs")
    assert v.verdict == "reject" and not v.passed and "canary failed: zero-rebuild" in v.reason
    assert d.canaries["zero_rebuild"] == {"arm": "zero_rebuild", "n_differ": 3, "fraction": 0.0075, "ok": False,
                                          "tolerance": 0.0}  # fmt: skip
    ok = decide(BASE, [cand("smooth_abs")], [ctrl()], GateConfig(canary_tolerance=0.01), zero_rebuild=zr)
    assert ok.promoted == "smooth_abs" and ok.flags == () and ok.canaries["zero_rebuild"]["ok"]


def test_adapter_not_applied_canary():
    bare = ArmOutcomes("bare_base", "none", True, task())  # identical to the baseline: adapter never loaded
    d = decide(BASE, [cand("abs_select", gain=20, loss=14)], [ctrl(gain=0)], CFG, bare_base=bare)
    assert d.promoted is None and d.verdict == "reject"  # not "hold": a flag blocks everything
    assert d.flags == ("adapter not applied: the baseline matches the bare base bare_base on all 400 documents",)
    assert one(d, "abs_select").verdict == "reject"
    fine = decide(BASE, [cand("smooth_abs")], [ctrl()], CFG,
                  bare_base=ArmOutcomes("bare_base", "none", True, task(loss=30)))
    assert fine.promoted == "smooth_abs" and fine.canaries["bare_base"]["n_differ"] == 30


@pytest.mark.parametrize(("correction", "promoted", "p_adj"), [("none", "a", 0.5**5), ("holm", None, 2 * 0.5**5),
                                                               ("bonferroni", None, 2 * 0.5**5)])  # fmt: skip
def test_multiplicity_correction_across_candidates(correction, promoted, p_adj):
    # "a" gains 5 documents (p = 1/32 vs baseline and control); "b" gains nothing (p = 1).
    cfg = GateConfig(correction=correction)
    d = decide(BASE, [cand("a", gain=5), cand("b", gain=0)], [ctrl(gain=0)], cfg)
    v = one(d, "a")
    assert d.promoted == promoted
    assert v.p_adjusted == pytest.approx(p_adj) and v.p_adjusted_vs_baseline == pytest.approx(p_adj)
    assert v.p_adjusted_vs_control == pytest.approx(p_adj) and one(d, "b").p_adjusted == 1.0
    if correction != "none":
        assert f"{correction} p=0.0625, not significant after {correction}" in v.reason
        assert v.verdict == "hold" and d.verdict == "hold"
    assert d.to_dict()["correction"] == correction


def test_intersection_union_p_is_holm_of_the_largest_p():
    # "x" is far better than the baseline but barely above the control; "y" the reverse.
    base = ArmOutcomes("baseline", "identity", False, task(), guard())
    r = ArmOutcomes("r0", "random_index", True, task(gain=20))
    d = decide(base, [cand("x", gain=25), cand("y", gain=22)], [r], CFG)
    x, y = one(d, "x"), one(d, "y")
    raw = [max(x.vs_baseline.p_value, x.vs_control.p_value), max(y.vs_baseline.p_value, y.vs_control.p_value)]
    assert [x.p_adjusted, y.p_adjusted] == pytest.approx(adjust_pvalues(raw, "holm"))
    for v in (x, y):
        assert v.p_adjusted_vs_baseline <= v.p_adjusted and v.p_adjusted_vs_control <= v.p_adjusted


def test_to_dict_carries_verdicts_and_power():
    zr = ArmOutcomes("zero_rebuild", "zero_rebuild", True, task())
    d = decide(BASE, [cand("smooth_abs"), cand("abs_select", gain=20, loss=14)], [ctrl(gain=0)], CFG,
                zero_rebuild=zr)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["verdict"] == "promote" and out["flags"] == [] and out["correction"] == "holm"
    assert out["canaries"]["zero_rebuild"]["ok"] is True and out["n_needed"] is None
    assert out["config"]["min_effect"] == 0.02 and out["config"]["power"] == 0.8
    v = {x["name"]: x for x in out["verdicts"]}
    assert v["smooth_abs"]["verdict"] == "promote" and v["abs_select"]["verdict"] == "hold"
    for key in ("n", "n_a_only", "n_b_only", "mde", "n_needed", "p_adjusted", "p_adjusted_vs_baseline",
                "p_adjusted_vs_control", "p_adjusted_vs_scalar", "gain_upper", "explained_by", "vs_scalar"):
        assert key in v["abs_select"]


def test_a_significant_gain_below_min_effect_is_rejected_and_never_promoted():
    """Rule 2 comes before rule 4: +3 pts with p < 0.001 but an upper bound under min_effect 5 pts is a REJECT,
    and a rejected candidate is not eligible (it was promoted through ``passed`` before; found by
    tests/tasks/decision/test_gate_guard_skips.py)."""
    cfg = GateConfig(min_effect=0.05)
    d = decide(BASE, [cand("smooth_abs", gain=12)], [ctrl(gain=0)], cfg)
    v = one(d, "smooth_abs")
    assert v.beats_baseline and v.beats_control and v.vs_baseline.p_value < 0.001 and v.gain_upper < 0.05
    assert v.verdict == d.verdict == "reject" and not v.passed and d.promoted is None
    assert "reject: the gain's upper bound" in v.reason and "→ promoted" not in d.sentence


# --------------------------------------------------------------------------- pairing and the continuous metric
def _scored(arm: ArmOutcomes, shift: float, seed: int) -> ArmOutcomes:
    """``arm`` with continuous scores: a margin whose sign is its outcome (|margin| from a seeded draw) + shift."""
    rng = np.random.default_rng(seed)
    mag = 0.5 + rng.random(len(arm.task))
    return dataclasses.replace(arm, scores=[(m if o else -m) + shift for o, m in zip(arm.task, mag)])


def test_every_verdict_records_correlation_and_effective_sample_size():
    from spectral_surgery.tasks.decision.stats import pairing

    c, r = cand("smooth_abs"), ctrl()
    d = decide(BASE, [c], [r], CFG)
    pair = {p.reference: p for p in d.verdicts[0].pairing}
    assert list(pair) == ["baseline", "random_s0"]
    # nested arms: the candidate solves documents 0..239, the baseline 0..199 -> phi and n_eff by hand
    phi = (200 * 160) / math.sqrt(240 * 160 * 200 * 200)
    n_eff = 400 * (240 * 160 / 400 / 399 + 200 * 200 / 400 / 399) / (40 * 360 / 400 / 399)
    assert pair["baseline"].outcomes.correlation == pytest.approx(phi)
    assert pair["baseline"].outcomes.n_eff == pytest.approx(n_eff)
    assert pair["baseline"].scores is None  # arms without scores
    assert pair["random_s0"].outcomes == pairing(c.task, r.task)
    stats = json.loads(json.dumps(d.to_dict()))
    assert stats["verdicts"][0]["pairing"][0]["outcomes"]["n_eff"] == pytest.approx(n_eff)
    assert stats["decision"]["metric"] == "task"
    sb, sc = _scored(BASE, 0.0, 1), _scored(c, 0.0, 2)
    scored = decide(sb, [sc], [], CFG.model_copy(update={"require_control": False}))
    assert scored.verdicts[0].pairing[0].scores == pairing(sc.scores, sb.scores, "scores")


def test_continuous_power_without_spread_is_unknown_not_zero():
    """Paired differences that are all equal (up to float rounding) carry no spread: the gate records no MDE and no
    documents needed, and a HOLD says that it cannot size them; it used to say "needs ~0 documents (MDE at 2:
    +0.000 nats)". With any spread the figures are the normal formulas' again."""
    from spectral_surgery.tasks.decision.gate import NO_SPREAD, DecisionConfig

    cont = DecisionConfig(metric="continuous", min_effect=0.1)
    cfg = GateConfig(require_control=False)

    def arm(name: str, s: list[float]) -> ArmOutcomes:
        return ArmOutcomes(name, name, False, [1.0 if x > 0 else 0.0 for x in s], scores=s)

    d = decide(arm("baseline", [0.2, 0.4]), [arm("c", [0.5, 0.7])], [], cfg, decision=cont)  # +0.3 twice
    v = d.verdicts[0]
    assert v.vs_baseline.method == "none" and v.verdict == "hold" and d.verdict == "hold"
    assert v.mde is None and v.n_needed is None and d.n_needed is None
    assert d.sentence.endswith(f"held for evidence (c): {NO_SPREAD}") and "~0 documents" not in d.sentence
    spread = decide(arm("baseline", [0.2, 0.4, 0.1]), [arm("c", [0.5, 0.8, 0.3])], [], cfg, decision=cont)
    w = spread.verdicts[0]
    sd = float(np.std([0.3, 0.4, 0.2], ddof=1))
    assert w.vs_baseline.method == "paired_t" and w.mde == pytest.approx(paired_mde(3, sd, CFG.alpha, CFG.power))


def test_continuous_metric_decides_on_scores_with_the_same_verdicts():
    from spectral_surgery.tasks.decision.gate import DecisionConfig, decision_metric

    cont = DecisionConfig(metric="continuous", min_effect=0.1)
    cfg = CFG.model_copy(update={"require_control": False})
    b = _scored(BASE, 0.0, 1)
    same = _scored(cand("same", gain=0), 0.0, 1)  # the baseline's own scores: no gain
    better = _scored(cand("better", gain=0), 0.3, 1)  # every margin +0.3 nats, not one more document solved
    d = decide(b, [same, better], [], cfg, decision=cont)
    v = {x.name: x for x in d.verdicts}
    assert v["better"].vs_baseline.method == "none" and v["better"].vs_baseline.delta == pytest.approx(0.3)
    assert d.promoted == "better" and v["better"].verdict == "promote" and "+0.300 nats" in v["better"].reason
    assert v["same"].verdict == "reject" and "min_effect 0.100 nats" in v["same"].reason
    # every difference the same: no spread to size the power from, so unknown rather than an MDE of 0
    assert v["better"].mde is None and v["better"].n_needed is None and v["same"].mde is None
    assert v["better"].task_mean == pytest.approx(0.5)  # task_mean stays the task metric's
    assert d.to_dict()["decision"] == {"metric": "continuous", "min_effect": 0.1, "min_delta": 0.0}
    assert decide(b, [same, better], [], cfg).promoted is None  # the task metric sees no gain at all
    # noisy scores: a paired t-test, power in the score's units from the paired SD
    noisy = dataclasses.replace(better, scores=[x + 0.5 * np.sin(i) for i, x in enumerate(better.scores)])
    t = decide(b, [noisy], [], cfg, decision=cont).verdicts[0]
    diffs = np.asarray(noisy.scores) - np.asarray(b.scores)
    assert t.vs_baseline.method == "paired_t"
    assert t.mde == pytest.approx(paired_mde(400, float(np.std(diffs, ddof=1)), CFG.alpha, CFG.power))
    with pytest.raises(ValueError, match="no continuous scores"):
        decide(BASE, [better], [], cfg, decision=cont)
    choice = decision_metric(cont, [BASE, better], "ss_arith")
    assert (
        choice.used.metric == "task"
        and "ss_arith has no continuous" in choice.fallback
        and "baseline" in choice.fallback
    )
    assert decision_metric(cont, [b, better], "ss_mc") == type(choice)(cont)
