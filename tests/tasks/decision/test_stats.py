"""Paired statistics of the gate (tasks/decision/stats.py): exact McNemar, Newcombe CI, paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spectral_surgery.tasks.decision.stats import (
    PairedTest,
    adjust_pvalues,
    newcombe_paired_ci,
    newcombe_paired_ci_array,
    paired_test,
)

SEED = 1234
# Cavo et al. (2012), paired 2x2 table [[59, 6], [16, 80]]; Newcombe square-and-add interval as published in
# Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
# −0.0621 (95% CI −0.1186 to −0.0046).
CAVO = (59, 6, 16, 80)
CAVO_CI = (-0.1186, -0.0046)


def _table_arrays(n11: int, n10: int, n01: int, n00: int) -> tuple[list[int], list[int]]:
    a = [1] * n11 + [1] * n10 + [0] * n01 + [0] * n00
    b = [1] * n11 + [0] * n10 + [1] * n01 + [0] * n00
    return a, b


# --------------------------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alternative", ["greater", "less"])
def test_mcnemar_equals_binomtest_on_discordant_pairs(seed, alternative):
    rng = np.random.default_rng(seed)
    a = (rng.random(300) < 0.55).astype(int)
    b = (rng.random(300) < 0.5).astype(int)
    t = paired_test(a, b, alternative=alternative)
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    assert t.method == "mcnemar_exact"
    assert (t.n_a_only, t.n_b_only, t.n) == (n10, n01, 300)
    assert t.p_value == pytest.approx(sps.binomtest(n10, n10 + n01, 0.5, alternative=alternative).pvalue, rel=1e-12)
    assert t.delta == pytest.approx(a.mean() - b.mean())
    assert t.alternative == alternative


def test_mcnemar_hand_computed():
    # 8 documents only a solves, 2 only b solves: P(X >= 8 | Bin(10, ½)) = (45 + 10 + 1) / 1024.
    a, b = _table_arrays(5, 8, 2, 5)
    t = paired_test(a, b)
    assert t.p_value == pytest.approx(56 / 1024, abs=1e-15)
    assert t.delta == pytest.approx(6 / 20)
    assert (t.mean_a, t.mean_b) == (pytest.approx(13 / 20), pytest.approx(7 / 20))
    # H1: a < b is then P(X <= 8 | Bin(10, ½)) = 1 − P(X >= 9) = 1 − 11/1024.
    assert paired_test(a, b, alternative="less").p_value == pytest.approx(1 - 11 / 1024, abs=1e-15)


def test_no_discordant_pairs_gives_p_one():
    a, b = _table_arrays(7, 0, 0, 3)
    t = paired_test(a, b)
    assert (t.method, t.p_value, t.delta, t.n_a_only, t.n_b_only) == ("mcnemar_exact", 1.0, 0.0, 0, 0)
    assert paired_test(a, b, alternative="less").p_value == 1.0
    assert t.ci_low <= 0.0 <= t.ci_high


def test_newcombe_ci_matches_published_example():
    lo, hi = newcombe_paired_ci(*CAVO)
    assert (round(lo, 4), round(hi, 4)) == CAVO_CI
    t = paired_test(*_table_arrays(*CAVO))
    assert round(t.delta, 4) == -0.0621
    assert (round(t.ci_low, 4), round(t.ci_high, 4)) == CAVO_CI


def test_newcombe_ci_degenerate_tables_stay_in_range():
    for table in [(0, 0, 0, 10), (10, 0, 0, 0), (0, 10, 0, 0), (0, 0, 10, 0), (0, 1, 0, 0)]:
        lo, hi = newcombe_paired_ci(*table)
        d = (table[1] - table[2]) / sum(table)
        assert -1.0 <= lo <= d <= hi <= 1.0, table


def test_confidence_level_widens_interval():
    a, b = _table_arrays(*CAVO)
    narrow = paired_test(a, b, confidence=0.80)
    wide = paired_test(a, b, confidence=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.delta < narrow.ci_high < wide.ci_high
    assert wide.confidence == 0.99


# ------------------------------------------------------------------------------------------- bootstrap
def _continuous(effect: float, n: int = 400, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = rng.random(n)
    return b + effect + rng.normal(0, 0.3, n), b


def test_bootstrap_is_seed_reproducible():
    a, b = _continuous(0.03)
    t1, t2 = paired_test(a, b, seed=7), paired_test(a, b, seed=7)
    assert t1 == t2
    assert t1.method == "paired_bootstrap" and t1.n_a_only is None
    t3 = paired_test(a, b, seed=8)
    assert t3.p_value != t1.p_value or t3.ci_low != t1.ci_low


def test_bootstrap_agrees_with_scipy_t_test_and_bootstrap():
    a, b = _continuous(0.005)
    t = paired_test(a, b, n_boot=20000)
    d = a - b
    assert t.delta == pytest.approx(d.mean())
    # For 400 documents the bootstrap and the paired t test agree closely.
    p_t = sps.ttest_rel(a, b, alternative="greater").pvalue
    assert 0.005 < p_t < 0.2
    assert t.p_value == pytest.approx(p_t, abs=0.015)
    ref = sps.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                        n_resamples=20000, method="percentile", random_state=0).confidence_interval  # fmt: skip
    assert t.ci_low == pytest.approx(ref.low, abs=0.003)
    assert t.ci_high == pytest.approx(ref.high, abs=0.003)
    assert t.ci_low < t.delta < t.ci_high


def test_bootstrap_p_value_bounds_and_alternative_less():
    a, b = _continuous(0.2)  # overwhelming effect
    t = paired_test(a, b, n_boot=1000)
    assert t.p_value == pytest.approx(1 / 1001)  # the +1 correction: never exactly 0
    assert paired_test(a, b, n_boot=1000, alternative="less").p_value == pytest.approx(1.0)
    worse = paired_test(b, a, n_boot=1000, alternative="less")
    assert worse.p_value == pytest.approx(1 / 1001) and worse.delta == pytest.approx(-t.delta)


def test_bootstrap_null_gives_large_p():
    a, b = _continuous(0.0, seed=3)
    t = paired_test(a, b)
    assert 0.05 < t.p_value < 0.95
    assert t.ci_low < 0.0 < t.ci_high
    p_less = paired_test(a, b, alternative="less").p_value
    assert t.p_value + p_less == pytest.approx(1.0, abs=0.02)


def test_mixed_binary_and_continuous_uses_bootstrap():
    assert paired_test([1, 0, 1, 1], [0.5, 0.2, 0.9, 0.1]).method == "paired_bootstrap"


def test_constant_difference_uses_exact_sign_test():
    t = paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert t.method == "none"
    assert t.p_value == pytest.approx(0.125) and t.ci_low == t.ci_high == pytest.approx(0.1)
    assert paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7], alternative="less").p_value == 1.0
    same = paired_test([0.2, 0.4], [0.2, 0.4])
    assert (same.method, same.p_value, same.delta) == ("none", 1.0, 0.0)
    rounding = paired_test([0.1 + 0.2] * 30, [0.3] * 30)  # differs by 5.6e-17 in float64: a tie, not evidence
    assert (rounding.method, rounding.p_value) == ("none", 1.0)


def test_single_document():
    t = paired_test([1], [0])
    assert (t.n, t.p_value, t.n_a_only) == (1, 0.5, 1)


def test_result_is_frozen_plain_floats():
    t = paired_test(*_continuous(0.01, n=50))
    assert isinstance(t, PairedTest)
    assert all(type(getattr(t, f)) is float for f in ("mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value"))
    with pytest.raises(AttributeError):
        t.p_value = 0.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        ([1, 0, 1], [1, 0], {}, "a has 3 documents, b has 2"),
        ([], [], {}, "a: no outcomes"),
        ([1.0, math.nan], [1.0, 0.0], {}, r"a: outcome at index 1 is nan"),
        ([1.0, 0.0], [1.0, math.inf], {}, r"b: outcome at index 1 is inf"),
        ([[1, 0]], [[1, 0]], {}, "1-D"),
        (["x"], [1], {}, "a: outcomes must be numbers"),
        ([1], [0], {"alternative": "two-sided"}, "alternative"),
        ([1], [0], {"confidence": 1.0}, "confidence"),
        ([0.5], [0.2], {"n_boot": 0}, "n_boot"),
    ],
)
def test_invalid_inputs_raise(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_test(a, b, **kwargs)


# ------------------------------------------------------------------------------------------ multiplicity
# Textbook example (Holm–Bonferroni method, worked example in Wikipedia / Holm 1979's step-down rule): four
# hypotheses with p = 0.01, 0.04, 0.03, 0.005 at alpha = 0.05 → H1 and H4 rejected. Adjusted p-values by hand:
# sorted 0.005, 0.01, 0.03, 0.04 → 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06.
HOLM_P = [0.01, 0.04, 0.03, 0.005]
HOLM_ADJ = [0.03, 0.06, 0.06, 0.02]


def test_holm_textbook_example():
    adj = adjust_pvalues(HOLM_P, "holm")
    assert adj == pytest.approx(HOLM_ADJ, abs=1e-15)
    assert [a < 0.05 for a in adj] == [True, False, False, True]
    assert adjust_pvalues(HOLM_P, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_pvalues(HOLM_P, "none") == HOLM_P


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_closed_testing_with_bonferroni(seed):
    # Holm is the closed testing procedure with Bonferroni local tests: p̃_i = max over S ∋ i of |S|·min_{j∈S} p_j.
    rng = np.random.default_rng(seed)
    p = (rng.random(6) ** 3).tolist()
    m = len(p)
    closed = []
    for i in range(m):
        best = 0.0
        for mask in range(1 << m):
            if mask >> i & 1:
                s = [p[j] for j in range(m) if mask >> j & 1]
                best = max(best, min(1.0, len(s) * min(s)))
        closed.append(best)
    assert adjust_pvalues(p, "holm") == pytest.approx(closed, rel=1e-12)
    assert all(h <= b + 1e-15 for h, b in zip(adjust_pvalues(p, "holm"), adjust_pvalues(p, "bonferroni")))


def test_adjust_pvalues_edge_cases():
    assert adjust_pvalues([], "holm") == []
    assert adjust_pvalues([0.3], "holm") == [0.3]
    assert adjust_pvalues([0.6, 0.7], "bonferroni") == [1.0, 1.0]
    assert adjust_pvalues([0.02, 0.02], "holm") == [0.04, 0.04]  # ties
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues([0.1], "fdr")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([1.5], "holm")


def test_vectorised_newcombe_matches_scalar():
    rng = np.random.default_rng(SEED)
    tables = np.vstack([rng.integers(0, 40, (300, 4)), [CAVO, (0, 0, 0, 10), (0, 3, 0, 0), (5, 0, 0, 0)]])
    lo, hi = newcombe_paired_ci_array(*tables.T, confidence=0.9)
    ref = np.array([newcombe_paired_ci(*map(int, t), confidence=0.9) for t in tables])
    assert np.allclose(lo, ref[:, 0], atol=1e-14) and np.allclose(hi, ref[:, 1], atol=1e-14)


# ------------------------------------------------------------------------------------- pairing, paired t
def test_pairing_hand_computed_on_outcomes_and_scores():
    from spectral_surgery.tasks.decision.stats import pairing

    # a = 1,1,0,0 and b = 1,0,0,0: n11=1, n10=1, n01=0, n00=2 -> phi = (1·2 − 1·0)/√(2·2·1·3) = 1/√3;
    # var_a = 1/3, var_b = 1/4, a − b = 0,1,0,0 with var 1/4 -> n_eff = 4·(1/3 + 1/4)/(1/4) = 28/3
    p = pairing([1, 1, 0, 0], [1, 0, 0, 0])
    assert p.values == "outcomes" and p.n == 4
    assert p.correlation == pytest.approx(1 / math.sqrt(3)) and p.n_eff == pytest.approx(28 / 3)
    # scores 1,2,3,4 vs 2,2,4,4: var 5/3 and 4/3, differences −1,0,−1,0 with var 1/3 -> n_eff = 4·3/(1/3) = 36
    s = pairing([1, 2, 3, 4], [2, 2, 4, 4], "scores")
    assert s.values == "scores" and s.n_eff == pytest.approx(36.0)
    assert s.correlation == pytest.approx(float(sps.pearsonr([1, 2, 3, 4], [2, 2, 4, 4]).statistic))
    # independent arms: n_eff ≈ n; identical differences: the pairing removes all noise (None), constant arm: no r
    rng = np.random.default_rng(SEED)
    x, y = rng.standard_normal(20000), rng.standard_normal(20000)
    assert pairing(x, y, "scores").n_eff == pytest.approx(20000, rel=0.05)
    assert pairing([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], "scores").n_eff is None
    assert pairing([1.0, 1.0, 1.0], [0.0, 1.0, 0.0]).correlation is None
    with pytest.raises(ValueError, match="aligned"):
        pairing([1.0, 0.0], [1.0])


def test_paired_t_matches_scipy_and_hand_interval():
    from spectral_surgery.tasks.decision.stats import paired_t

    a, b = [1.0, 2.0, 3.0, 4.5], [1.0, 2.0, 3.0, 4.0]
    t = paired_t(a, b, alternative="greater")
    # differences 0,0,0,0.5: mean 0.125, sd 0.25, se 0.125, t = 1 on 3 df
    assert t.method == "paired_t" and t.delta == pytest.approx(0.125)
    assert t.p_value == pytest.approx(float(sps.t.sf(1.0, 3)))
    half = float(sps.t.ppf(0.975, 3)) * 0.125
    assert (t.ci_low, t.ci_high) == (pytest.approx(0.125 - half), pytest.approx(0.125 + half))
    assert paired_t(a, b, alternative="less").p_value == pytest.approx(float(sps.t.cdf(1.0, 3)))
    assert paired_t([1.0, 2.0], [0.0, 1.0]).method == "none"  # constant difference: the sign test
