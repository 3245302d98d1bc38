"""Power, minimum detectable effect and sample size of the gate's paired test (pure, numpy + scipy).

Notation for one candidate ``a`` against a reference ``b`` on n aligned 0/1 documents: ``p10`` is the rate of
documents only ``a`` solves, ``p01`` the rate only ``b`` solves, ``δ = p10 − p01`` the gain (difference of
accuracies) and ``ψ = p10 + p01`` the discordant rate. Given D discordant documents, the exact one-sided
McNemar test (:func:`tasks.decision.stats.mcnemar_exact`) is a binomial test of ``n10 ~ Bin(D, ½)``; under an effect
``n10 ~ Bin(D, π)`` with ``π = (ψ + δ) / (2ψ)`` and ``D ~ Bin(n, ψ)``.

* :func:`mcnemar_sample_size` — Connor (1987), "Sample size for testing differences in proportions for the
  paired-sample design", Biometrics 43:207-211, p. 209 (normal approximation, one-sided level α, power 1−β):
  ``n = (z_{1−α}·√ψ + z_{1−β}·√(ψ − δ²))² / δ²``.
* :func:`mcnemar_mde` — the same equation solved for δ at given n (the larger root of
  ``(n + z_β²)δ² − 2A√n·δ + A² − z_β²ψ = 0`` with ``A = z_{1−α}√ψ``). A gain needs at least as many discordant
  documents as it gains (``|δ| ≤ ψ``), so where that root exceeds ψ the discordance is taken as ``ψ = δ``, as
  :func:`gate_sample_size` does: the smallest gain detectable when every discordant document goes the candidate's way
  (:func:`mcnemar_mde_floor`), never ψ itself (at ψ̂ ≈ 0 that would claim "+3.3 pts at 30 documents", a gain of one
  document, which no level below ½ can call significant).
* :func:`mcnemar_power` — EXACT power of the exact test: ``Σ_D Bin(D; n, ψ)·P(n10 ≥ c_D | Bin(D, π))`` where
  ``c_D`` is the exact critical count (:func:`mcnemar_critical`).
* :func:`gate_mde` / :func:`gate_sample_size` — the gate's own power figures (``Decision.mde``/``n_needed``) before a
  run: Connor's MDE and n at Holm's first step ``α/m`` over the m promotable candidates, the largest over the
  references (baseline, random control, scalar) the gate must beat, each at its discordant rate ψ_X.
* :func:`paired_mde` / :func:`paired_sample_size` — continuous outcomes: ``δ = (z_{1−α} + z_{1−β})·s/√n``
  with ``s`` the standard deviation of the per-document differences.
* :func:`power_table` — vectorised simulation of the gate's rule (exact one-sided McNemar vs the baseline AND
  vs one random control) under the "flip" model of :func:`simulate_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


def _z(p: float) -> float:
    return float(sps.norm.ppf(p))


def _check_level(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")


def mcnemar_sample_size(delta: float, psi: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Connor's (1987) documents needed to detect ``delta`` with a one-sided McNemar test (not rounded up).

    Args:
        delta: Gain ``p10 − p01`` to detect, ``0 < |delta| ≤ psi``.
        psi: Discordant rate ``p10 + p01`` in (0, 1].
        alpha: One-sided level.
        power: Target power ``1 − β``.

    Returns:
        ``n = (z_{1−α}√ψ + z_{1−β}√(ψ − δ²))² / δ²``.

    Raises:
        ValueError: arguments out of range (``|delta| > psi`` is impossible: gains need discordant documents).
    """
    _check_level(alpha, power)
    d = abs(float(delta))
    if not 0.0 < psi <= 1.0 or not 0.0 < d <= psi:
        raise ValueError(f"need 0 < |delta| <= psi <= 1, got delta={delta}, psi={psi}")
    return (_z(1 - alpha) * math.sqrt(psi) + _z(power) * math.sqrt(max(0.0, psi - d * d))) ** 2 / (d * d)


def mcnemar_mde(n: int, psi: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable gain at n documents: Connor's equation solved for δ (see the module docstring).

    Args:
        n: Documents, ≥ 1.
        psi: Discordant rate in (0, 1].
        alpha: One-sided level.
        power: Target power.

    Returns:
        The δ > 0 with ``δ√n = z_{1−α}√ψ' + z_{1−β}√(ψ' − δ²)`` at ``ψ' = max(ψ, δ)``: Connor's root at ψ where it is
        at most ψ, else :func:`mcnemar_mde_floor` (a gain needs as many discordant documents as it gains). So
        ``mcnemar_sample_size(δ, max(ψ, δ)) = n`` wherever δ < 1; 1.0 means no gain is detectable at n.
    """
    _check_level(alpha, power)
    if n < 1 or not 0.0 < psi <= 1.0:
        raise ValueError(f"need n >= 1 and 0 < psi <= 1, got n={n}, psi={psi}")
    za, zb = _z(1 - alpha), _z(power)
    a = za * math.sqrt(psi)
    qa, qb, qc = n + zb * zb, -2.0 * a * math.sqrt(n), a * a - zb * zb * psi
    root = (-qb + math.sqrt(max(0.0, qb * qb - 4 * qa * qc))) / (2 * qa)
    return root if root <= psi else mcnemar_mde_floor(n, alpha, power)


def mcnemar_mde_floor(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest gain detectable at n documents whatever the discordance: Connor's equation at ``ψ = δ``.

    With ``x = √δ``: ``x√n = z_{1−α} + z_{1−β}√(1 − x²)``, whose root is
    ``x = (z_{1−α}√n + z_{1−β}√(n − z_{1−α}² + z_{1−β}²)) / (n + z_{1−β}²)`` for ``n ≥ z_{1−α}²``; below that not
    even a gain on every document is detectable (returns 1.0).

    Args:
        n: Documents, ≥ 1.
        alpha: One-sided level.
        power: Target power.

    Returns:
        δ in (0, 1].
    """
    _check_level(alpha, power)
    if n < 1:
        raise ValueError(f"need n >= 1, got n={n}")
    za, zb = _z(1 - alpha), _z(power)
    if n < za * za:
        return 1.0
    x = (za * math.sqrt(n) + zb * math.sqrt(n - za * za + zb * zb)) / (n + zb * zb)
    return min(1.0, x * x)


def gate_mde(n: int, psis: Sequence[float], alpha: float = 0.05, power: float = 0.8, m: int = 1) -> float:
    """The gain the gate detects at n documents with ``power``: as ``Decision.mde`` (tasks/decision/gate.py).

    Args:
        n: Documents per arm, ≥ 1.
        psis: Discordant rate of the candidate against each reference it must beat (baseline, best random
            control, global scalar), each in (0, 1]; a rate below ``1/n`` counts as ``1/n``, as in the gate (a
            rate that low gives :func:`mcnemar_mde_floor` in any case).
        alpha: One-sided family-wise level.
        power: Target power of each comparison.
        m: Promotable candidates Holm corrects over (the first step tests at ``alpha/m``).

    Returns:
        ``max_X mcnemar_mde(n, ψ_X, α/m, power)``: the gate must beat every reference.
    """
    if m < 1 or not psis:
        raise ValueError(f"need m >= 1 and at least one reference rate, got m={m}, psis={list(psis)}")
    return max(mcnemar_mde(n, max(float(p), 1.0 / n), alpha / m, power) for p in psis)


def gate_sample_size(delta: float, psis: Sequence[float], alpha: float = 0.05, power: float = 0.8,
                     m: int = 1) -> int:
    """Fewest documents at which the gate detects ``delta`` with ``power`` (the inverse of :func:`gate_mde`).

    Args:
        delta: Gain to detect, > 0 (0.03 = +3 pts).
        psis: Discordant rate against each reference, as in :func:`gate_mde`; a rate below ``delta`` counts as
            ``delta`` (a gain needs that many discordant documents), as ``Decision.n_needed`` does.
        alpha: One-sided family-wise level.
        power: Target power.
        m: Promotable candidates Holm corrects over.

    Returns:
        ``ceil(max_X mcnemar_sample_size(δ, max(ψ_X, δ), α/m, power))``.
    """
    if m < 1 or not psis or not 0.0 < delta <= 1.0:
        raise ValueError(f"need m >= 1, a reference rate and 0 < delta <= 1, got m={m}, psis={list(psis)}, "
                         f"delta={delta}")
    need = max(mcnemar_sample_size(delta, max(float(p), delta), alpha / m, power) for p in psis)
    return math.ceil(need - 1e-9)


def mcnemar_critical(d_max: int, alpha: float) -> np.ndarray:
    """Exact one-sided critical counts: ``c[D]`` = smallest k with ``P(X ≥ k | Bin(D, ½)) < alpha``.

    The gate rejects when the exact p-value is strictly below alpha, so this is its rejection region:
    ``n10 ≥ c[n10 + n01]``. ``c[D] = D + 1`` (never rejects) where even ``n10 = D`` is not significant.

    Args:
        d_max: Largest discordant count needed.
        alpha: One-sided level.

    Returns:
        Integer array of shape (d_max + 1,).
    """
    d = np.arange(d_max + 1)
    c = np.asarray(sps.binom.isf(alpha, d, 0.5), dtype=np.int64) + 1
    c = np.clip(c, 0, d + 1)
    # isf is a float computation; fix the region exactly against the strict "p < alpha" of the gate.
    for _ in range(3):
        too_low = (c <= d) & ~(sps.binom.sf(c - 1, d, 0.5) < alpha)
        c = np.where(too_low, c + 1, c)
        lower_ok = (c >= 1) & (sps.binom.sf(c - 2, d, 0.5) < alpha)
        c = np.where(lower_ok, c - 1, c)
    c[0] = 1  # D = 0: no evidence, never significant
    return c


def mcnemar_power(n: int, delta: float, psi: float, alpha: float = 0.05) -> float:
    """Exact power of the exact one-sided McNemar test at n documents (see the module docstring).

    Args:
        n: Documents, ≥ 1.
        delta: True gain ``p10 − p01``, ``|delta| ≤ psi``.
        psi: True discordant rate in (0, 1].
        alpha: One-sided level.

    Returns:
        ``P(reject) = Σ_D Bin(D; n, ψ)·P(n10 ≥ c_D | Bin(D, π))``, ``π = (ψ + δ)/(2ψ)``.
    """
    if n < 1 or not 0.0 < psi <= 1.0 or abs(delta) > psi + 1e-15:
        raise ValueError(f"need n >= 1, 0 < psi <= 1 and |delta| <= psi, got n={n}, delta={delta}, psi={psi}")
    d = np.arange(n + 1)
    c = mcnemar_critical(n, alpha)
    pi = min(1.0, max(0.0, (psi + delta) / (2 * psi)))
    return float(np.sum(sps.binom.pmf(d, n, psi) * sps.binom.sf(c - 1, d, pi)))


def paired_sample_size(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Documents needed for a one-sided paired z test of continuous outcomes: ``((z_{1−α}+z_{1−β})·s/δ)²``."""
    _check_level(alpha, power)
    if delta == 0 or sd < 0:
        raise ValueError(f"need delta != 0 and sd >= 0, got delta={delta}, sd={sd}")
    return ((_z(1 - alpha) + _z(power)) * sd / abs(delta)) ** 2


def guard_resolution_note(prompts: int | None, tolerance: float) -> str | None:
    """What the IFEval guard's tolerance means at its size, when one prompt weighs more than the tolerance.

    The guard fails on a drop larger than ``tolerance`` (:func:`tasks.decision.gate.guard_check`); with n prompts a
    drop comes in steps of 1/n, so below ``n = ⌈1/tolerance⌉`` prompts a single lost prompt already exceeds it.

    Args:
        prompts: Prompts the guard scores (``guard_limit``), or None (the whole suite, or no guard).
        tolerance: ``gate.guard_tolerance`` (0.02 = 2 pts).

    Returns:
        A one-line note, or None when one prompt is within the tolerance.
    """
    if prompts is None or prompts < 1 or 1.0 / prompts <= tolerance + 1e-12:
        return None
    enough = math.ceil(1.0 / tolerance - 1e-9) if tolerance > 0 else None
    fix = (f"guard_limit >= {enough} (--guard-limit) lets it allow one" if enough else
           "a tolerance of 0 allows none at any size")
    return (f"the IFEval guard scores {prompts} prompts: one prompt is {100 / prompts:.1f} pts, above "
            f"guard_tolerance {100 * tolerance:.1f} pts, so a single lost prompt rejects an edit ({fix})")


def paired_mde(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean difference of continuous outcomes: ``(z_{1−α}+z_{1−β})·s/√n``."""
    _check_level(alpha, power)
    if n < 1 or sd < 0:
        raise ValueError(f"need n >= 1 and sd >= 0, got n={n}, sd={sd}")
    return (_z(1 - alpha) + _z(power)) * sd / math.sqrt(n)


# ------------------------------------------------------------------------------------------ simulation
def simulate_tables(
    blocks: Sequence[int], effect: float, discordance: float, sims: int, rng: np.random.Generator,
    base_rate: float = 0.5,
) -> np.ndarray:
    """Per-document outcomes of baseline b, candidate c and random control r, simulated as cell counts.

    The model (it reproduces the power table quoted in issue 9): every document is solved by the baseline
    with probability ``base_rate``; the candidate and the control each flip every baseline outcome
    independently with probability ``discordance`` (so each differs from the baseline on ~5% of documents
    at 0.05, and from each other on ~9.5%); then the candidate solves exactly ``round(effect·n)`` more of
    its unsolved documents, chosen uniformly (all of them if fewer). With several blocks (sequential looks),
    each block gets its share so that the cumulative count after block k is ``round(effect·n_k)``.

    Only counts matter to the tests, so it draws a multinomial over the 8 cells (b, c, r) per block and a
    multivariate hypergeometric (as chained hypergeometrics) for the documents the effect converts.

    Args:
        blocks: Documents per block (one block for a fixed design), each ≥ 1.
        effect: Gain δ as a fraction (0.02 = +2 pts), ≥ 0.
        discordance: Flip probability of each arm vs the baseline.
        sims: Number of simulated adapters.
        rng: Random generator.
        base_rate: Baseline accuracy.

    Returns:
        Counts of shape (sims, len(blocks), 8); cell index ``4·b + 2·c + r``.
    """
    if effect < 0:
        raise ValueError(f"effect must be >= 0, got {effect}")
    f, p = discordance, base_rate
    probs = np.array([(p if b else 1 - p) * (f if c != b else 1 - f) * (f if r != b else 1 - f)
                      for b in (0, 1) for c in (0, 1) for r in (0, 1)])  # fmt: skip
    out = np.empty((sims, len(blocks), 8), dtype=np.int64)
    total = 0
    for k, m in enumerate(blocks):
        cells = rng.multinomial(int(m), probs, size=sims)
        want = round(effect * (total + m)) - round(effect * total)
        total += m
        wrong = [4 * b + r for b in (0, 1) for r in (0, 1)]  # cells with c = 0
        left = cells[:, wrong].sum(axis=1)
        need = np.minimum(want, left)  # documents the effect converts, drawn without replacement
        for i, w in enumerate(wrong):
            pool = cells[:, w]
            left = left - pool
            take = need if i == len(wrong) - 1 else rng.hypergeometric(pool, left, need)
            cells[:, w] -= take
            cells[:, w + 2] += take  # c: 0 → 1
            need = need - take
        out[:, k] = cells
    return out


def pair_counts(cells: np.ndarray, a: str, b: str) -> tuple[np.ndarray, ...]:
    """``(n11, n10, n01, n00)`` of arm ``a`` vs arm ``b`` (each ``"b"``, ``"c"`` or ``"r"``) from 8-cell counts."""
    bit = {"b": 2, "c": 1, "r": 0}
    idx = np.arange(8)
    xa, xb = (idx >> bit[a]) & 1, (idx >> bit[b]) & 1
    return tuple(cells[..., (xa == i) & (xb == j)].sum(axis=-1) for i, j in ((1, 1), (1, 0), (0, 1), (0, 0)))


def exact_rejects(n10: np.ndarray, n01: np.ndarray, alpha: float) -> np.ndarray:
    """Vectorised exact one-sided McNemar decision ``p < alpha`` for arrays of discordant counts."""
    d = n10 + n01
    crit = mcnemar_critical(int(d.max(initial=0)), alpha)
    return (d > 0) & (n10 >= crit[d])


def power_table(
    ns: Sequence[int], effects: Sequence[float], discordance: float = 0.05, alpha: float = 0.05,
    sims: int = 4000, seed: int = 0, *, base_rate: float = 0.5, with_control: bool = True,
) -> dict[int, dict[float, float]]:
    """Simulated probability that the fixed gate promotes, per document count and true effect.

    The rule simulated is the gate's statistical core: exact one-sided McNemar ``p < alpha`` vs the baseline
    AND (``with_control``) vs one random control, under the model of :func:`simulate_tables`. With the
    defaults it reproduces issue 9's table (n = 60/200/500/1000 at +2/+4/+6 pts: 0.01/0.03/0.14,
    0.10/0.34/0.69, 0.25/0.81/0.98, 0.52/0.98/1.00) within Monte-Carlo error.

    Args:
        ns: Document counts.
        effects: True gains as fractions (0.02 = +2 pts); 0 gives the false-promotion rate.
        discordance: Flip probability of each arm vs the baseline.
        alpha: One-sided level of each test.
        sims: Simulated adapters per cell (Monte-Carlo standard error ``√(p(1−p)/sims)``).
        seed: Seed of the generator; same arguments → same table.
        base_rate: Baseline accuracy.
        with_control: Also require beating the control.

    Returns:
        ``{n: {effect: promotion rate}}``.
    """
    rng = np.random.default_rng(seed)
    table: dict[int, dict[float, float]] = {}
    for n in ns:
        table[int(n)] = {}
        for e in effects:
            cells = simulate_tables([int(n)], float(e), discordance, sims, rng, base_rate)[:, 0]
            _, b10, b01, _ = pair_counts(cells, "c", "b")
            ok = exact_rejects(b10, b01, alpha)
            if with_control:
                _, r10, r01, _ = pair_counts(cells, "c", "r")
                ok &= exact_rejects(r10, r01, alpha)
            table[int(n)][float(e)] = float(ok.mean())
    return table
