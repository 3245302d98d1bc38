"""Power, MDE and sample size of the gate's paired test (tasks/decision/power.py), and the issue-9 power table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide
from spectral_surgery.tasks.decision.power import (exact_rejects, gate_mde, gate_sample_size, mcnemar_critical,
                                                   guard_resolution_note, mcnemar_mde, mcnemar_mde_floor,
                                  mcnemar_power, mcnemar_sample_size, pair_counts, paired_mde, paired_sample_size,
                                  power_table, simulate_tables)  # fmt: skip

SEED = 9
# Connor (1987), Biometrics 43:207-211, p. 209, as worked in powerandsamplesize.com's "Compare Paired
# Proportions: McNemar's Z-test, 1-Sided": p01 = 0.45, p10 = 0.05, alpha = 0.05, power 0.90 → n = 23 (22.81).
CONNOR = {"delta": 0.40, "psi": 0.50, "alpha": 0.05, "power": 0.90, "n": 23}
# Issue 9's table for the fixed gate (exact one-sided McNemar vs baseline AND vs control, alpha 0.05, 5% flips):
# power at +2/+4/+6 pts for 60/200/500/1000 documents, rounded to two digits.
ISSUE_TABLE = {60: (0.01, 0.03, 0.14), 200: (0.10, 0.34, 0.69), 500: (0.25, 0.81, 0.98), 1000: (0.52, 0.98, 1.00)}
ISSUE_SIMS = 1000  # assumed size of the issue's simulation (its numbers carry that Monte-Carlo error)


def test_connor_sample_size_textbook_value():
    n = mcnemar_sample_size(CONNOR["delta"], CONNOR["psi"], CONNOR["alpha"], CONNOR["power"])
    assert n == pytest.approx(22.809, abs=1e-3) and math.ceil(n) == CONNOR["n"]
    assert mcnemar_sample_size(-CONNOR["delta"], CONNOR["psi"], CONNOR["alpha"], CONNOR["power"]) == n


@pytest.mark.parametrize(("n", "psi"), [(100, 0.1), (400, 0.05), (2000, 0.3), (60, 0.5)])
def test_mde_inverts_sample_size(n, psi):
    d = mcnemar_mde(n, psi, 0.025, 0.8)
    if d < psi:
        assert mcnemar_sample_size(d, psi, 0.025, 0.8) == pytest.approx(n, rel=1e-9)
    assert mcnemar_mde(4 * n, psi, 0.025, 0.8) < d


@pytest.mark.parametrize("n", [30, 60, 200, 800])
@pytest.mark.parametrize("psi", [0.001, 0.01, 0.05, 0.2])
def test_mde_never_claims_a_gain_larger_than_the_discordance_allows(n, psi):
    """At a discordance below the gain, Connor's root would exceed ψ; the MDE then solves at ψ = δ (the floor), so
    it inverts the sample size the gate reports (ψ floored at δ) everywhere: "needs ~N documents" and "MDE at n"
    never contradict. The exact test's power at the floor (every discordant document the candidate's) is about the
    target: within 0.1, Connor being a normal approximation."""
    psi = max(psi, 1 / n)
    d = mcnemar_mde(n, psi, 0.0125, 0.8)
    assert d >= mcnemar_mde_floor(n, 0.0125, 0.8) - 1e-12
    assert mcnemar_sample_size(d, max(psi, d), 0.0125, 0.8) == pytest.approx(n, rel=1e-9)
    assert gate_sample_size(d + 1e-9, [psi], 0.05, 0.8, m=4) == n  # the inverse, as the gate floors ψ at δ
    floor = mcnemar_mde_floor(n, 0.0125, 0.8)
    assert mcnemar_power(n, floor, floor, 0.0125) == pytest.approx(0.8, abs=0.1)


def test_mde_at_near_zero_discordance_is_not_one_document():
    """The demo's report read "needs ~790 documents (MDE at 30: +3.3 pts)": a gain of one document out of 30, which no
    one-sided level below ½ can call significant. At 30 documents and Holm α/4 the floor is +29 pts (9 of 30
    documents, all one way: exact p = 2⁻⁹)."""
    d = gate_mde(30, [0.0], 0.05, 0.8, m=4)
    assert d == pytest.approx(0.2902, abs=1e-4) and d == mcnemar_mde_floor(30, 0.0125, 0.8)
    assert mcnemar_mde_floor(5, 0.0125, 0.8) == 1.0  # 5 < z²: not even a gain on every document is detectable


def test_gate_mde_is_the_worst_reference_at_holms_first_step():
    assert gate_mde(300, [0.05], 0.05, 0.8, m=1) == mcnemar_mde(300, 0.05, 0.05, 0.8)
    assert gate_mde(300, [0.02, 0.08, 0.05], 0.05, 0.8, m=4) == mcnemar_mde(300, 0.08, 0.0125, 0.8)
    assert gate_mde(50, [0.001], 0.05, 0.8) == mcnemar_mde(50, 1 / 50, 0.05, 0.8)  # ψ floored at 1/n, as the gate


@pytest.mark.parametrize(("delta", "psis", "m"), [(0.03, [0.05], 4), (0.03, [0.04, 0.10], 4), (0.05, [0.2], 1)])
def test_gate_sample_size_is_the_fewest_documents_reaching_the_mde(delta, psis, m):
    n = gate_sample_size(delta, psis, 0.05, 0.8, m)
    assert gate_mde(n, psis, 0.05, 0.8, m) <= delta + 1e-12 < gate_mde(n - 1, psis, 0.05, 0.8, m)
    # the exact test's power at that n, vs the worst reference, is about the target (Connor is a normal approximation)
    assert mcnemar_power(n, delta, max(psis), 0.05 / m) == pytest.approx(0.8, abs=0.06)


def test_gate_power_figures_match_the_gates_decision():
    """Four promotable candidates (Holm α/4): the decision's recorded mde and n_needed are gate_mde/gate_sample_size
    at the discordant rates it saw against the baseline and the control."""
    n, base = 400, [1.0] * 200 + [0.0] * 200

    def arm(name: str, gain: int, loss: int, control: bool = False) -> ArmOutcomes:
        x = list(base)
        x[200 : 200 + gain], x[:loss] = [1.0] * gain, [0.0] * loss
        return ArmOutcomes(name, "random_index" if control else name, control, x, [1.0] * 50)

    held = arm("abs_select", 12, 8)  # +1 pt: held
    others = [arm(f"p{i}", 0, 6) for i in range(3)]  # lose 6: rejected
    ctrl = arm("random_s0", 0, 2, control=True)
    cfg = GateConfig()
    d = decide(arm("baseline", 0, 0), [held, *others], [ctrl], cfg)
    v = next(v for v in d.verdicts if v.name == "abs_select")
    assert v.verdict == "hold"
    psis = [sum(a != b for a, b in zip(held.task, ref)) / n for ref in (base, ctrl.task)]
    assert psis == [20 / n, 18 / n]  # 12 + 8 vs the baseline; 12 + 6 vs the control (which also lost 0..1)
    assert v.mde == pytest.approx(gate_mde(n, psis, cfg.alpha, cfg.power, m=4))
    assert v.n_needed == gate_sample_size(cfg.min_effect, psis, cfg.alpha, cfg.power, m=4)


def test_critical_counts_match_binomtest():
    crit = mcnemar_critical(120, 0.05)
    for d in range(1, 121):
        p = [sps.binomtest(k, d, 0.5, alternative="greater").pvalue for k in range(d + 1)]
        expected = next((k for k in range(d + 1) if p[k] < 0.05), d + 1)
        assert crit[d] == expected, d
    assert crit[0] == 1  # no discordance, never significant


def test_exact_power_matches_monte_carlo():
    n, delta, psi, alpha, sims = 300, 0.03, 0.08, 0.05, 40000
    rng = np.random.default_rng(SEED)
    p10, p01 = (psi + delta) / 2, (psi - delta) / 2
    cells = rng.multinomial(n, [p10, p01, 1 - psi], size=sims)
    mc = exact_rejects(cells[:, 0], cells[:, 1], alpha).mean()
    exact = mcnemar_power(n, delta, psi, alpha)
    assert abs(mc - exact) < 3 * math.sqrt(exact * (1 - exact) / sims)
    assert mcnemar_power(n, 0.0, psi, alpha) <= alpha  # the exact test is conservative


def test_connor_n_gives_about_the_target_exact_power():
    for delta, psi in ((0.02, 0.07), (0.04, 0.1), (0.1, 0.3)):
        n = math.ceil(mcnemar_sample_size(delta, psi, 0.05, 0.8))
        assert mcnemar_power(n, delta, psi, 0.05) == pytest.approx(0.8, abs=0.05)


def test_continuous_formulas_match_the_z_test_power():
    sd, delta = 0.3, 0.02
    n = paired_sample_size(delta, sd, 0.05, 0.8)
    assert sps.norm.sf(sps.norm.isf(0.05) - delta * math.sqrt(n) / sd) == pytest.approx(0.8, abs=1e-12)
    assert paired_mde(round(n), sd, 0.05, 0.8) == pytest.approx(delta, rel=1e-3)


def test_simulated_tables_follow_the_flip_model():
    rng = np.random.default_rng(SEED)
    cells = simulate_tables([1000], 0.04, 0.05, 3000, rng)[:, 0]
    assert (cells.sum(axis=1) == 1000).all()
    _, b10, b01, _ = pair_counts(cells, "c", "b")
    assert np.mean(b10 - b01) == pytest.approx(40, abs=0.5)  # exactly round(0.04·1000) converted, minus flips' net 0
    assert np.mean(b10 + b01) == pytest.approx(50 + 40 * 0.95 + 40 * 0.05 * -1, rel=0.05)
    _, r10, r01, _ = pair_counts(cells, "r", "b")
    assert np.mean(r10 + r01) == pytest.approx(50, rel=0.03) and np.mean(r10 - r01) == pytest.approx(0, abs=0.5)


def test_power_table_reproduces_issue_9():
    sims = 4000
    table = power_table(list(ISSUE_TABLE), [0.02, 0.04, 0.06], discordance=0.05, alpha=0.05, sims=sims, seed=SEED)
    for n, row in ISSUE_TABLE.items():
        for e, want in zip((0.02, 0.04, 0.06), row):
            got = table[n][e]
            var = want * (1 - want)
            tol = 0.005 + 3 * math.sqrt(var / ISSUE_SIMS + var / sims) + 1e-3
            assert abs(got - want) <= tol, (n, e, got, want)
    assert power_table([200], [0.02], sims=500, seed=1) == power_table([200], [0.02], sims=500, seed=1)


def test_power_table_no_effect_is_below_alpha():
    sims = 20000
    table = power_table([60, 200, 1000], [0.0], sims=sims, seed=SEED, with_control=False)
    for n in table:
        assert table[n][0.0] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="psi"):
        mcnemar_sample_size(0.3, 0.2)
    with pytest.raises(ValueError, match="alpha"):
        mcnemar_mde(100, 0.1, alpha=1.5)
    with pytest.raises(ValueError, match="effect"):
        simulate_tables([10], -0.1, 0.05, 2, np.random.default_rng(0))


@pytest.mark.parametrize(("prompts", "tolerance", "says"), [
    (30, 0.02, "one prompt is 3.3 pts, above guard_tolerance 2.0 pts, so a single lost prompt rejects an edit "
               "(guard_limit >= 50 (--guard-limit) lets it allow one)"),
    (49, 0.02, "guard_limit >= 50"),
    (50, 0.02, None), (541, 0.02, None), (None, 0.02, None),
    (10, 0.0, "a tolerance of 0 allows none at any size"),
])
def test_the_guard_says_when_one_prompt_outweighs_its_tolerance(prompts, tolerance, says):
    """The default demo's guard scores 30 prompts at a 2-pt tolerance: one lost prompt (−3.3) rejected demo-math's
    scalar. The note says so, and the size at which the tolerance allows one prompt; and that size really does: the
    gate's own check passes a one-prompt drop at 50 prompts and fails it at 49 and at 30."""
    from spectral_surgery.tasks.decision.gate import guard_check

    note = guard_resolution_note(prompts, tolerance)
    assert (note is None) if says is None else (says in note)
    cfg = GateConfig(guard_tolerance=0.02, guard_alpha=1e-9)  # the tolerance alone (no test can reject at 1e-9)
    for n, holds in ((50, True), (49, False), (30, False)):
        base = [1.0] * (n // 2) + [0.0] * (n - n // 2)
        cand = [0.0] + base[1:]  # one prompt lost
        assert guard_check(cand, base, cfg)[0] is holds
