"""Paired statistics of the gate: one system vs another on the same documents (pure, numpy + scipy).

Everything here works on two aligned per-document outcome arrays ``a`` and ``b`` (document i of ``a`` is
document i of ``b``) and reports the difference ``delta = mean(a) − mean(b)`` on the metric's own scale
(0..1 for accuracies; the gate prints it ×100 as "points").

* Both arrays 0/1 → **exact McNemar**: a one-sided binomial test (p = ½) on the discordant pairs, with
  Newcombe's square-and-add (Wilson-score, method 10) interval for the difference of paired proportions.
  Newcombe RG (1998), "Improved confidence intervals for the difference between binomial proportions
  based on paired data", Stat Med 17:2635-2650.
* Otherwise → **paired bootstrap** over documents (Efron & Tibshirani 1993, §16.4; Berg-Kirkpatrick
  et al. 2012, https://aclanthology.org/D12-1091): percentile interval of delta, one-sided p-value from
  the bootstrap distribution shifted to the null, with the +1 correction ``(1 + #extreme) / (B + 1)``.
  Bootstrap p-values are anti-conservative for very few documents (≲ 30); the gate runs on hundreds.
* All paired differences equal up to float rounding (nothing to resample) → method ``"none"``: the
  interval is the point ``[delta, delta]`` and the p-value is the exact sign test's (``0.5**n`` if every
  difference favours the alternative, else 1.0), which is 1.0 when ``a == b``.

:func:`paired_t` is the one-sided paired t-test (scipy's ``ttest_rel``) of the opt-in continuous decision metric;
:func:`pairing` measures what the pairing buys (correlation and effective sample size).
:func:`adjust_pvalues` corrects a family of p-values for multiplicity (Holm step-down, Bonferroni, none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

Alternative = Literal["greater", "less"]
Method = Literal["mcnemar_exact", "paired_bootstrap", "paired_t", "none"]
Correction = Literal["none", "holm", "bonferroni"]
_CHUNK = 1 << 21  # resampled values held at once by the bootstrap (~16 MiB of float64)


@dataclass(frozen=True)
class PairedTest:
    """Result of one paired comparison of ``a`` against ``b``.

    Attributes:
        method: ``"mcnemar_exact"`` (both 0/1), ``"paired_bootstrap"`` or ``"none"`` (constant difference).
        n: Number of paired documents.
        mean_a: Mean of ``a``.
        mean_b: Mean of ``b``.
        delta: ``mean_a − mean_b`` on the metric's scale (not ×100).
        ci_low: Lower end of the two-sided ``confidence`` interval of ``delta``.
        ci_high: Upper end of that interval.
        p_value: ONE-sided p-value; H1 is ``a > b`` for ``alternative="greater"``, ``a < b`` for ``"less"``.
        n_a_only: McNemar only: documents where ``a`` is 1 and ``b`` is 0 (else None).
        n_b_only: McNemar only: documents where ``b`` is 1 and ``a`` is 0 (else None).
        alternative: The alternative hypothesis the p-value refers to.
        confidence: Confidence level of ``[ci_low, ci_high]``.
    """

    method: Method
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_a_only: int | None
    n_b_only: int | None
    alternative: Alternative = "greater"
    confidence: float = 0.95


def as_outcomes(x: Sequence[float], name: str) -> np.ndarray:
    """``x`` as a finite, non-empty 1-D float64 array.

    Raises:
        ValueError: ``x`` is not 1-D, is empty, is not numeric or holds NaN/inf; the message names ``name``.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: outcomes must be numbers ({e})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: outcomes must be a 1-D sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: no outcomes (need at least one document)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}: outcome at index {int(bad[0])} is {arr[bad[0]]} (must be finite)")
    return arr


def is_binary(x: np.ndarray) -> bool:
    """True when every value is exactly 0 or 1."""
    return bool(np.all((x == 0.0) | (x == 1.0)))


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired_ci(
    n11: int, n10: int, n01: int, n00: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's square-and-add interval (method 10) for ``p_a − p_b`` of paired proportions.

    Args:
        n11: Documents where both are 1.
        n10: Documents where ``a`` is 1 and ``b`` is 0.
        n01: Documents where ``a`` is 0 and ``b`` is 1.
        n00: Documents where both are 0.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``, clipped to [-1, 1].
    """
    n = n11 + n10 + n01 + n00
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    xa, xb = n11 + n10, n11 + n01
    pa, pb = xa / n, xb / n
    la, ua = _wilson(xa, n, z)
    lb, ub = _wilson(xb, n, z)
    # Correlation of the two proportions, with Newcombe's continuity adjustment of the cross product.
    phi = 0.0
    if min(xa, n - xa, xb, n - xb) > 0:
        cross = n11 * n00 - n10 * n01
        adj = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = adj / math.sqrt(xa * (n - xa) * xb * (n - xb))
    d = pa - pb
    lo = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    hi = d + math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    return max(-1.0, lo), min(1.0, hi)


def newcombe_paired_ci_array(
    n11: np.ndarray, n10: np.ndarray, n01: np.ndarray, n00: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`newcombe_paired_ci` vectorised over arrays of 2×2 tables (same math, elementwise).

    Used by simulations and the sequential futility rule, which evaluate many tables at once.

    Args:
        n11, n10, n01, n00: Integer arrays of one shape (broadcastable), each table with n ≥ 1.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)`` arrays of that shape, clipped to [-1, 1].
    """
    n11, n10, n01, n00 = (np.asarray(x, dtype=np.float64) for x in (n11, n10, n01, n00))
    n = n11 + n10 + n01 + n00
    z = float(sps.norm.ppf(0.5 + confidence / 2))

    def wilson(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = x / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)

    xa, xb = n11 + n10, n11 + n01
    pa, pb = xa / n, xb / n
    (la, ua), (lb, ub) = wilson(xa), wilson(xb)
    cross = n11 * n00 - n10 * n01
    adj = np.where(cross > n / 2, cross - n / 2, np.where(cross >= 0, 0.0, cross))
    margins = xa * (n - xa) * xb * (n - xb)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(margins > 0, adj / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
    d = pa - pb
    lo = d - np.sqrt(np.maximum(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    hi = d + np.sqrt(np.maximum(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    return np.maximum(-1.0, lo), np.minimum(1.0, hi)


def mcnemar_exact(a: np.ndarray, b: np.ndarray, alternative: Alternative, confidence: float) -> PairedTest:
    """Exact McNemar test of two aligned 0/1 arrays (one-sided binomial test on discordant pairs)."""
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    n11 = int(np.sum((a == 1) & (b == 1)))
    n00 = a.size - n10 - n01 - n11
    # Under H0 each discordant pair is equally likely to favour a or b; no discordance = no evidence.
    p = 1.0 if n10 + n01 == 0 else float(sps.binomtest(n10, n10 + n01, 0.5, alternative=alternative).pvalue)
    lo, hi = newcombe_paired_ci(n11, n10, n01, n00, confidence)
    ma, mb = float(a.mean()), float(b.mean())
    return PairedTest("mcnemar_exact", int(a.size), ma, mb, ma - mb, lo, hi, p, n10, n01, alternative, confidence)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, alternative: Alternative, n_boot: int, seed: int, confidence: float
) -> PairedTest:
    """Paired bootstrap over documents: percentile CI of delta and a one-sided p-value (+1 corrected).

    The p-value resamples documents with replacement B times and counts resamples whose delta, shifted
    by the observed delta to sit under H0, is at least as extreme as the observed one:
    ``(1 + #{δ*_i − δ ≥ δ}) / (B + 1)`` for ``"greater"`` (mirrored for ``"less"``).
    """
    d = a - b
    n = d.size
    delta = float(d.mean())
    ma, mb = float(a.mean()), float(b.mean())
    tol = 1e-12 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    if np.ptp(d) <= tol:
        # Every resample equals the sample (up to float rounding): no bootstrap distribution to speak of.
        # All n differences share one sign, so the exact sign test applies; rounding noise is a tie.
        favours = delta > tol if alternative == "greater" else delta < -tol
        p = 0.5**n if favours else 1.0
        return PairedTest("none", n, ma, mb, delta, delta, delta, p, None, None, alternative, confidence)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, rows):  # chunked so memory stays bounded for large n × n_boot
        k = min(rows, n_boot - start)
        boot[start : start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    centred = boot - delta
    # A relative epsilon so resamples equal to the observed delta up to rounding count as extreme.
    eps = 1e-12 * max(1.0, abs(delta))
    extreme = centred >= delta - eps if alternative == "greater" else centred <= delta + eps
    p = (1.0 + float(extreme.sum())) / (n_boot + 1.0)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(boot, [tail, 1.0 - tail])
    return PairedTest("paired_bootstrap", n, ma, mb, delta, float(lo), float(hi), p, None, None, alternative,
                      confidence)  # fmt: skip


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alternative: Alternative = "greater",
    n_boot: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedTest:
    """One-sided paired test of ``a`` against ``b`` on aligned per-document outcomes.

    Exact McNemar when both arrays are 0/1, otherwise a paired bootstrap (see the module docstring).

    Args:
        a: Per-document outcomes of the system under test, shape (n,).
        b: Per-document outcomes of the reference, shape (n,), aligned with ``a``.
        alternative: ``"greater"`` tests H1: a > b; ``"less"`` tests H1: a < b.
        n_boot: Bootstrap resamples (continuous outcomes only).
        seed: Seed of the bootstrap's ``numpy.random.Generator``; same inputs + seed → same result.
        confidence: Level of the two-sided interval of ``delta``.

    Returns:
        A :class:`PairedTest`.

    Raises:
        ValueError: lengths differ, an array is empty or holds non-finite values, or an argument is out of range.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    xa, xb = as_outcomes(a, "a"), as_outcomes(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"paired outcomes must be aligned: a has {xa.size} documents, b has {xb.size}")
    if is_binary(xa) and is_binary(xb):
        return mcnemar_exact(xa, xb, alternative, confidence)
    return paired_bootstrap(xa, xb, alternative, int(n_boot), seed, confidence)


def paired_t(
    a: Sequence[float], b: Sequence[float], *, alternative: Alternative = "greater", confidence: float = 0.95
) -> PairedTest:
    """One-sided paired t-test of ``a`` against ``b`` (scipy ``ttest_rel``) with the t interval of the mean difference.

    The test of the opt-in continuous decision metric (per-document scores such as a log-prob margin). Exact for
    normal differences and asymptotically valid otherwise; its false-promotion rate under exchangeable arms is checked
    by simulation in ``tests/tasks/decision/test_continuous.py``. All differences equal (nothing to estimate the
    spread from) gives method ``"none"`` with the sign test's p-value, as :func:`paired_bootstrap`.

    Args:
        a: Per-document scores of the system under test, shape (n,), n ≥ 2.
        b: The reference's, aligned.
        alternative: ``"greater"`` tests H1: mean(a − b) > 0; ``"less"`` the opposite.
        confidence: Level of the two-sided interval ``mean(d) ± t_{n−1}·sd(d)/√n``.

    Returns:
        A :class:`PairedTest` with ``method="paired_t"`` (``n_a_only``/``n_b_only`` None).

    Raises:
        ValueError: lengths differ, fewer than 2 documents, or non-finite values.
    """
    xa, xb = as_outcomes(a, "a"), as_outcomes(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"paired scores must be aligned: a has {xa.size} documents, b has {xb.size}")
    if xa.size < 2:
        raise ValueError("paired_t needs at least 2 documents")
    d = xa - xb
    n, delta = int(d.size), float(d.mean())
    ma, mb = float(xa.mean()), float(xb.mean())
    tol = 1e-12 * max(1.0, float(np.abs(xa).max()), float(np.abs(xb).max()))
    if np.ptp(d) <= tol:
        favours = delta > tol if alternative == "greater" else delta < -tol
        return PairedTest("none", n, ma, mb, delta, delta, delta, 0.5**n if favours else 1.0, None, None,
                          alternative, confidence)  # fmt: skip
    res = sps.ttest_rel(xa, xb, alternative=alternative)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedTest("paired_t", n, ma, mb, delta, delta - half, delta + half, float(res.pvalue), None, None,
                      alternative, confidence)  # fmt: skip


@dataclass(frozen=True)
class Pairing:
    """What pairing two arms on the same documents buys, for one pair of per-document value arrays.

    Attributes:
        values: ``"outcomes"`` (the 0/1 task outcomes: the correlation is phi) or ``"scores"`` (continuous scores).
        n: Paired documents.
        correlation: Pearson correlation of the paired values (scipy ``pearsonr``); None when either is constant.
        n_eff: ``n·(var_a + var_b) / var(a − b)``: the documents per arm an UNPAIRED comparison would need for the
            same standard error of the mean difference (``= n / (1 − r)`` when the variances are equal); None when
            every difference is equal up to float rounding (``var(a − b) = 0``: the pairing removes all the noise).
    """

    values: Literal["outcomes", "scores"]
    n: int
    correlation: float | None
    n_eff: float | None


def pairing(a: Sequence[float], b: Sequence[float], values: Literal["outcomes", "scores"] = "outcomes") -> Pairing:
    """Pearson correlation and effective sample size of two aligned per-document arrays (see :class:`Pairing`).

    The unpaired standard error of ``mean(a) − mean(b)`` with m documents per arm is ``√((var_a + var_b)/m)``; the
    paired one with n documents is ``√(var(a − b)/n)``. Equating them gives
    ``n_eff = n·(var_a + var_b)/var(a − b)`` (sample variances, ``ddof=1``; the ratio does not depend on the choice).

    Args:
        a: Values of one arm, shape (n,).
        b: Values of the other, aligned.
        values: What they are (recorded; for 0/1 outcomes the Pearson correlation is the phi coefficient).

    Raises:
        ValueError: lengths differ or values are not finite.
    """
    xa, xb = as_outcomes(a, "a"), as_outcomes(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"paired values must be aligned: a has {xa.size} documents, b has {xb.size}")
    n = int(xa.size)
    if n < 2:
        return Pairing(values, n, None, None)
    va, vb, vd = (float(np.var(x, ddof=1)) for x in (xa, xb, xa - xb))
    r = None if va == 0.0 or vb == 0.0 else float(sps.pearsonr(xa, xb).statistic)
    # differences equal up to float rounding (relative 1e-12, as paired_bootstrap's tie rule): no finite n_eff
    flat = vd <= (1e-12 * max(1.0, float(np.abs(xa).max()), float(np.abs(xb).max()))) ** 2
    return Pairing(values, n, r, None if flat else n * (va + vb) / vd)


def adjust_pvalues(p_values: Sequence[float], method: Correction = "holm") -> list[float]:
    """Multiplicity-adjusted p-values of one family of m hypotheses (reject H_i when ``p̃_i < alpha``).

    * ``"bonferroni"``: ``p̃_i = min(1, m·p_i)``.
    * ``"holm"`` (Holm 1979, "A simple sequentially rejective multiple test procedure", Scand J Stat
      6:65-70): with the p-values sorted ``p_(1) ≤ … ≤ p_(m)``,
      ``p̃_(k) = min(1, max_{j ≤ k} (m − j + 1)·p_(j))``. It controls the family-wise error rate at alpha
      in the strong sense, like Bonferroni, and never rejects less (``p̃_holm ≤ p̃_bonferroni``).
    * ``"none"``: the p-values unchanged.

    Ties keep their input order; the adjusted values do not depend on it.

    Args:
        p_values: Raw p-values in [0, 1], any order; may be empty.
        method: ``"holm"``, ``"bonferroni"`` or ``"none"``.

    Returns:
        Adjusted p-values in the input order.

    Raises:
        ValueError: unknown method, or a p-value outside [0, 1] / not finite.
    """
    if method not in ("none", "holm", "bonferroni"):
        raise ValueError(f"correction must be 'none', 'holm' or 'bonferroni', got {method!r}")
    p = np.asarray(list(p_values), dtype=np.float64)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    if method == "none" or m == 0:
        return p.tolist()
    if method == "bonferroni":
        return np.minimum(1.0, m * p).tolist()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m − j + 1)·p_(j), running max
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out.tolist()
