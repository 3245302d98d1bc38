"""Group-sequential design (tasks/decision/sequential.py): boundaries vs published constants, looks, and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats as sps

from spectral_surgery.tasks.decision.gate import GateConfig
from spectral_surgery.tasks.decision.sequential import (SequentialConfig, SequentialDesign, boundaries,
                                                        classical_constant, combine,
                              crossing_probabilities, design_for, last_look_alpha, last_look_config, look,
                              look_candidates, look_config, simulate_sequential, spending_function)  # fmt: skip

# Jennison & Turnbull (2000), Group Sequential Methods, Table 2.3 (O'Brien–Fleming C_B) and Table 2.1 (Pocock C_P),
# two-sided alpha = 0.05 (one-sided 0.025), K equally spaced looks.
JT_OBF = {2: 1.977, 3: 2.004, 4: 2.024, 5: 2.040}
JT_POCOCK = {2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413}
# Lan–DeMets spending boundaries, K = 5 equally spaced, one-sided alpha = 0.025 (as tabulated by R's ldbounds /
# gsDesign sfLDOF and sfLDPocock).
LD_OBF_5 = (4.877, 3.357, 2.680, 2.290, 2.031)
LD_POCOCK_5 = (2.438, 2.427, 2.410, 2.397, 2.386)
SIMS = 20000
MC = 3 * math.sqrt(0.05 * 0.95 / SIMS)  # three Monte-Carlo standard errors at alpha = 0.05


# ------------------------------------------------------------------------------------------ boundaries
@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_classical_constants_match_jennison_turnbull(k):
    assert classical_constant(k, 0.025, "obrien_fleming") == pytest.approx(JT_OBF[k], abs=1e-2)
    assert classical_constant(k, 0.025, "pocock") == pytest.approx(JT_POCOCK[k], abs=1e-2)


def test_lan_demets_boundaries_match_published_values():
    obf = boundaries(SequentialDesign.equally_spaced(500, 5, alpha=0.025))
    poc = boundaries(SequentialDesign.equally_spaced(500, 5, alpha=0.025, spending="pocock"))
    assert obf.z == pytest.approx(LD_OBF_5, abs=1e-2)
    assert poc.z == pytest.approx(LD_POCOCK_5, abs=1e-2)
    assert obf.spent[-1] == pytest.approx(0.025) and obf.nominal_alpha == pytest.approx(sps.norm.sf(obf.z))
    one = boundaries(SequentialDesign(looks=(300,), alpha=0.05))  # one look = the fixed design
    assert one.z[0] == pytest.approx(sps.norm.isf(0.05), abs=1e-6)


@pytest.mark.parametrize("looks", [(250, 500, 750, 1000), (100, 400, 1000)])
def test_crossing_probabilities_match_scipy_multivariate_normal(looks):
    d = SequentialDesign(looks=looks, alpha=0.05)
    b = boundaries(d)
    t = np.array(d.fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))  # Brownian correlation √(t_i/t_j)
    p_none = sps.multivariate_normal(mean=np.zeros(len(t)), cov=cov).cdf(np.array(b.z))
    assert 1 - p_none == pytest.approx(0.05, abs=2e-4)
    assert sum(crossing_probabilities(b.z, t)) == pytest.approx(0.05, abs=1e-6)
    assert np.diff(b.spent).min() > 0


def test_spending_functions():
    for kind in ("obrien_fleming", "pocock"):
        assert spending_function(1.0, 0.05, kind) == pytest.approx(0.05)
        assert spending_function(0.0, 0.05, kind) == 0.0
    assert spending_function(0.25, 0.05, "obrien_fleming") < spending_function(0.25, 0.05, "pocock")
    with pytest.raises(ValueError, match="spending"):
        spending_function(0.5, 0.05, "haybittle")  # type: ignore[arg-type]


def test_design_validation():
    assert SequentialDesign.equally_spaced(1000, 4).looks == (250, 500, 750, 1000)
    assert SequentialDesign.equally_spaced(10, 3).looks == (4, 7, 10)
    for bad in ({"looks": ()}, {"looks": (10, 10)}, {"looks": (0, 5)}, {"looks": (5,), "alpha": 0.7}, {"typo": 1}):
        with pytest.raises(ValidationError):
            SequentialDesign(**bad)
    with pytest.raises(ValueError, match="n_looks"):
        SequentialDesign.equally_spaced(3, 4)


# ----------------------------------------------------------------------------------------------- looks
def _pair(n: int, n10: int, n01: int) -> tuple[list[int], list[int]]:
    """a vs b on n documents: n10 only a solves, n01 only b solves, the rest split both/neither."""
    rest = n - n10 - n01
    a = [1] * n10 + [0] * n01 + [1] * (rest // 2) + [0] * (rest - rest // 2)
    b = [0] * n10 + [1] * n01 + [1] * (rest // 2) + [0] * (rest - rest // 2)
    return a, b


def test_look_outcomes():
    d = SequentialDesign.equally_spaced(400, 4)  # looks at 100, 200, 300, 400
    assert look(d, 1, *_pair(100, 20, 0)) == "efficacy"  # p = 2**-20 below the 1st nominal level
    assert look(d, 1, *_pair(100, 4, 1)) == "continue"  # promising, not yet conclusive
    assert look(d, 2, *_pair(200, 5, 15)) == "futility"  # the gain's upper bound is below +2 pts
    assert look(d, 4, *_pair(400, 14, 10)) == "futility"  # last look, not significant: the fixed gate rejects
    a, b = _pair(400, 40, 2)
    assert look(d, 4, a, b) == "efficacy"
    assert look(d, 1, a + [0] * 50, b + [1] * 50) == look(d, 1, a[:100], b[:100])  # only the first n_k count
    with pytest.raises(ValueError, match="first 300"):
        look(d, 3, a[:200], b[:200])
    with pytest.raises(ValueError, match="look k"):
        look(d, 5, a, b)
    with pytest.raises(ValueError, match="0/1"):
        look(d, 1, [0.5] * 100, [0.0] * 100)
    no_fut = d.model_copy(update={"futility": False})
    assert look(no_fut, 2, *_pair(200, 5, 15)) == "continue"


def test_combine_and_last_look_config():
    assert combine(["efficacy", "efficacy"]) == "efficacy"
    assert combine(["efficacy", "continue"]) == "continue"
    assert combine(["efficacy", "futility"]) == "futility"
    with pytest.raises(ValueError):
        combine([])
    d = SequentialDesign.equally_spaced(1000, 4, alpha=0.05 / 3)
    cfg = last_look_config(d, GateConfig(), n_candidates=3)
    assert cfg.correction == "bonferroni" and cfg.alpha == pytest.approx(3 * last_look_alpha(d))
    assert last_look_alpha(d) < 0.05 / 3  # spending earlier leaves a stricter last look


# ---------------------------------------------------------------------------------------- the flow's rule
def test_design_for_splits_alpha_over_candidates_and_checks_the_budget():
    d = design_for(SequentialConfig(enabled=True, looks=4), GateConfig(alpha=0.06, min_effect=0.03), 1000, 3)
    assert d.looks == (250, 500, 750, 1000) and d.alpha == pytest.approx(0.02) and d.min_effect == 0.03
    with pytest.raises(ValueError, match="task_limit >= looks"):
        design_for(SequentialConfig(looks=5), GateConfig(), 4, 1)
    cfg = look_config(d, GateConfig(), 2, 3)
    assert cfg.correction == "bonferroni" and cfg.alpha == pytest.approx(3 * boundaries(d).nominal_alpha[1])


def test_look_candidates_against_baseline_best_control_and_scalar():
    d = SequentialDesign.equally_spaced(400, 4, alpha=0.05)
    rng = np.random.default_rng(3)
    base = (rng.random(400) < 0.5).astype(float)
    good = np.maximum(base, (rng.random(400) < 0.6).astype(float))  # wins on ~30% of the documents, never loses
    bad = np.minimum(base, (rng.random(400) < 0.3).astype(float))
    ctrl = {"r1": base.copy(), "r2": np.minimum(base, (rng.random(400) < 0.9).astype(float))}
    noisy = base.copy()
    noisy[np.flatnonzero(base[:100] == 1)[:8]] = 0.0  # 8 losses and 8 wins among the first look's 100 documents
    noisy[np.flatnonzero(base[:100] == 0)[:8]] = 1.0
    res = look_candidates(d, 1, base, {"good": good, "bad": bad, "noisy": noisy, "same": base.copy()}, ctrl)
    # no discordant pair in 100 documents bounds the gain below 2 pts: identical to the baseline is futile
    assert res == {"good": "efficacy", "bad": "futility", "noisy": "continue", "same": "futility"}
    # the scalar is a reference for the others, not for itself; a scalar as good as "good" blocks its efficacy
    res = look_candidates(d, 1, base, {"good": good, "scalar": good.copy()}, ctrl, scalar=("scalar", good.copy()))
    assert res["good"] != "efficacy" and res["scalar"] == "efficacy"
    # lower-is-better metrics are flipped: "bad" (more zeros = lower) now wins
    assert look_candidates(d, 1, base, {"bad": bad}, ctrl, higher_is_better=False)["bad"] == "efficacy"
    # outcomes that are not 0/1 cannot be looked at: everything continues (the fixed gate decides)
    assert look_candidates(d, 1, base * 0.5, {"good": good}, ctrl) == {"good": "continue"}


# ------------------------------------------------------------------------------------------ simulation
@pytest.mark.parametrize("with_control", [True, False])
def test_false_promotion_rate_under_no_effect(with_control):
    d = SequentialDesign.equally_spaced(1000, 4, alpha=0.05)
    res = simulate_sequential(d, 0.0, discordance=0.05, sims=SIMS, seed=11, with_control=with_control)
    assert res.sequential <= 0.05 + MC and res.fixed <= 0.05 + MC
    assert res.mean_documents < 0.75 * d.looks[-1]  # futility saves documents when nothing works


@pytest.mark.parametrize("effect", [0.02, 0.04, 0.06])
def test_power_close_to_the_fixed_design(effect):
    d = SequentialDesign.equally_spaced(1000, 4, alpha=0.05)
    res = simulate_sequential(d, effect, discordance=0.05, sims=SIMS, seed=12)
    assert res.sequential >= res.fixed - 0.05
    assert res.mean_documents < d.looks[-1]
    if effect >= 0.04:
        assert res.mean_documents < 0.8 * d.looks[-1]  # real gains stop early
