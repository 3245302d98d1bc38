"""Group-sequential evaluation of a candidate: look at growing document counts, stop early (pure, scipy).

**Looks.** ``n_1 < … < n_K = N`` documents (default ``n_k = ⌈N·k/K⌉``), information fractions
``t_k = n_k / N``. The standardised paired statistic at look k is ``Z_k = (n10 − n01)/√(n10 + n01)``
(the McNemar score statistic on the first n_k documents); under H0 with a steady discordant rate the
``Z_k`` are jointly normal with Brownian correlation ``corr(Z_i, Z_j) = √(t_i/t_j)`` (i ≤ j).

**Efficacy (Lan & DeMets 1983, Biometrika 70:659-663).** A spending function α(t) with α(1) = α spends
``α(t_k) − α(t_{k−1})`` at look k; the boundary ``b_k`` solves
``P(Z_1 < b_1, …, Z_{k−1} < b_{k−1}, Z_k ≥ b_k) = α(t_k) − α(t_{k−1})`` (one-sided):

* O'Brien–Fleming type (default): ``α(t) = 2 − 2Φ(z_{1−α/2}/√t)``;
* Pocock type: ``α(t) = α·ln(1 + (e − 1)t)``.

The probabilities come from the recursive numerical integration of Armitage, McPherson & Rowe (1969) as in
Jennison & Turnbull (2000), *Group Sequential Methods*, ch. 19: the density of the score ``W_k = Z_k√t_k``
on the continuation region is carried from look to look by convolution with the N(0, t_k − t_{k−1})
increment, on a grid with Simpson weights. :func:`classical_constant` gives the classical O'Brien–Fleming
(``b_k = C·√(1/t_k)``) and Pocock (``b_k = C``) designs by the same integration, to check it against J&T's
Tables 2.1/2.3. A look rejects when its exact McNemar p-value is below the look's nominal level
``α_k = 1 − Φ(b_k)``, so the last look is the fixed gate at ``alpha = α_K``.

**Futility (non-binding).** At look k < K the candidate stops for futility when the upper end of the gate's
Newcombe interval (two-sided ``futility_confidence``) of the gain is below ``min_effect``: exactly the rule by
which the fixed gate REJECTS. Non-binding: the efficacy boundaries are computed ignoring it, so obeying it
can only lower the false-promotion rate.

**How the flow uses it** (one design per adapter version, ``alpha`` split over m candidates, Bonferroni):
for each look k, evaluate documents ``n_{k−1}..n_k`` for every arm still running, then for each candidate
call ``look(design, k, cand, baseline)`` and ``look(design, k, cand, best_control)`` (and the scalar control
when configured) and :func:`combine` them: it stops for efficacy only when every comparison says
"efficacy", for futility when any says "futility", else continues. Efficacy at k < K goes on to the gate
(guard and canaries still apply); at the last look run ``decide`` with :func:`last_look_config`.
:func:`run_looks` is that loop over a ``score`` callback (the flow's evaluates each look's new documents), and
:func:`sequential_decision` the gate at the look where it stopped.

Over 400 lines: the design (boundaries, α spending), the looks and the simulation share the same boundary code;
split candidate: the simulation (simulate_sequential, used by tests and benchmarks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import optimize, special
from scipy import stats as sps

from spectral_surgery.tasks.decision.gate import ArmOutcomes, Decision, GateConfig, decide, summarize
from spectral_surgery.tasks.decision.power import exact_rejects, pair_counts, simulate_tables
from spectral_surgery.tasks.decision.stats import as_outcomes, is_binary, newcombe_paired_ci_array

Spending = Literal["obrien_fleming", "pocock"]
LookResult = Literal["continue", "efficacy", "futility"]
_GRID = 801  # grid points per look; Simpson on ~14 sd keeps crossing probabilities to ~1e-7


class SequentialDesign(BaseModel):
    """A group-sequential plan for one candidate vs one comparator (all recorded with the decision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    looks: tuple[int, ...] = Field(description="Cumulative document counts n_1 < … < n_K at which to look.")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="One-sided level spent over all looks.")
    spending: Spending = Field("obrien_fleming", description="Lan–DeMets spending function type.")
    futility: bool = Field(True, description="Stop early when the gain's upper bound is below min_effect.")
    min_effect: float = Field(0.02, gt=0.0, le=1.0, description="Smallest gain worth having (0.02 = 2 pts).")
    futility_confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Two-sided level of the Newcombe interval "
                                       "used for futility.")  # fmt: skip

    @model_validator(mode="after")
    def _increasing(self) -> SequentialDesign:
        if not self.looks or self.looks[0] < 1 or any(b <= a for a, b in zip(self.looks, self.looks[1:])):
            raise ValueError(f"looks must be strictly increasing positive document counts, got {self.looks}; "
                             "e.g. SequentialDesign.equally_spaced(1000, 4)")  # fmt: skip
        return self

    @classmethod
    def equally_spaced(cls, budget: int, n_looks: int, **kw: object) -> SequentialDesign:
        """Looks at ``n_k = ⌈budget·k/K⌉``, k = 1..K."""
        if n_looks < 1 or budget < n_looks:
            raise ValueError(f"need 1 <= n_looks <= budget, got budget={budget}, n_looks={n_looks}")
        return cls(looks=tuple(math.ceil(budget * k / n_looks) for k in range(1, n_looks + 1)), **kw)

    @property
    def fractions(self) -> tuple[float, ...]:
        """Information fractions ``t_k = n_k / n_K``."""
        return tuple(n / self.looks[-1] for n in self.looks)


@dataclass(frozen=True)
class Boundaries:
    """Efficacy boundaries of a design.

    Attributes:
        z: Per-look one-sided z thresholds ``b_k`` (reject when ``Z_k ≥ b_k``).
        nominal_alpha: Per-look nominal levels ``1 − Φ(b_k)`` (reject when the exact p-value is below).
        spent: Cumulative alpha spent ``α(t_k)``.
    """

    z: tuple[float, ...]
    nominal_alpha: tuple[float, ...]
    spent: tuple[float, ...]


def spending_function(t: float, alpha: float, kind: Spending) -> float:
    """Lan–DeMets cumulative alpha at information fraction t (see the module docstring)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if kind == "obrien_fleming":
        return float(2.0 - 2.0 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if kind == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise ValueError(f"spending must be 'obrien_fleming' or 'pocock', got {kind!r}")


def _simpson(lo: float, hi: float, m: int = _GRID) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(lo, hi, m)
    w = np.ones(m)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (hi - lo) / (3 * (m - 1))


class _Recursion:
    """Sub-density of the score ``W_k = Z_k√t_k`` on the continuation region, carried look to look."""

    def __init__(self, t: Sequence[float]) -> None:
        self.t = list(t)
        self.k = 0
        self.x: np.ndarray | None = None  # grid of W_{k} values below the boundary
        self.g: np.ndarray | None = None  # density × quadrature weight on that grid

    def cross(self, b: float) -> float:
        """P(not stopped before, Z_{k+1} ≥ b) for the next look."""
        t = self.t[self.k]
        if self.x is None:
            return float(sps.norm.sf(b))
        dt = t - self.t[self.k - 1]
        return float(np.sum(self.g * special.ndtr((self.x - b * math.sqrt(t)) / math.sqrt(dt))))

    def advance(self, b: float) -> None:
        """Condition on ``Z_{k+1} < b`` and move to the next look."""
        t = self.t[self.k]
        sd = math.sqrt(t)
        x, w = _simpson(-9.0 * sd, min(b, 9.0) * sd)
        if self.x is None:
            dens = sps.norm.pdf(x / sd) / sd
        else:
            dt = t - self.t[self.k - 1]
            u = (x[:, None] - self.x[None, :]) / math.sqrt(dt)
            dens = (np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi * dt)) @ self.g
        self.x, self.g, self.k = x, dens * w, self.k + 1


def crossing_probabilities(z: Sequence[float], t: Sequence[float]) -> list[float]:
    """``P(Z_1 < z_1, …, Z_{k−1} < z_{k−1}, Z_k ≥ z_k)`` under H0 for k = 1..K (Brownian correlation).

    Args:
        z: One-sided boundaries per look.
        t: Information fractions, strictly increasing in (0, 1].
    """
    rec, out = _Recursion(t), []
    for k, b in enumerate(z):
        out.append(rec.cross(b))
        if k < len(z) - 1:
            rec.advance(b)
    return out


@lru_cache(maxsize=256)
def _boundaries(t: tuple[float, ...], alpha: float, spending: Spending) -> Boundaries:
    rec, z, spent, prev = _Recursion(t), [], [], 0.0
    for k, tk in enumerate(t):
        cum = spending_function(tk, alpha, spending) if k < len(t) - 1 else alpha
        target = cum - prev
        if target <= 1e-14:
            b = 9.0  # nothing to spend: effectively never stop here
        else:
            b = optimize.brentq(lambda x: rec.cross(x) - target, -5.0, 12.0, xtol=1e-10)
        z.append(float(b))
        spent.append(cum)
        prev = cum
        if k < len(t) - 1:
            rec.advance(b)
    return Boundaries(tuple(z), tuple(float(sps.norm.sf(b)) for b in z), tuple(spent))


def boundaries(design: SequentialDesign) -> Boundaries:
    """Lan–DeMets efficacy boundaries of ``design`` (see the module docstring); cached per design."""
    return _boundaries(design.fractions, design.alpha, design.spending)


def classical_constant(n_looks: int, alpha: float, kind: Literal["obrien_fleming", "pocock"]) -> float:
    """The constant C of the classical equally spaced design: O'Brien–Fleming ``b_k = C√(K/k)``, Pocock ``b_k = C``.

    C solves ``Σ_k crossing_probabilities(b)_k = alpha`` (one-sided). Jennison & Turnbull (2000) Tables 2.1 and
    2.3 list these constants for two-sided 0.05 (one-sided 0.025 up to ~1e-5).
    """
    t = [k / n_looks for k in range(1, n_looks + 1)]

    def shape(c: float) -> list[float]:
        return [c * (math.sqrt(1 / tk) if kind == "obrien_fleming" else 1.0) for tk in t]

    return float(optimize.brentq(lambda c: sum(crossing_probabilities(shape(c), t)) - alpha, 0.5, 6.0, xtol=1e-10))


# ---------------------------------------------------------------------------------------------- looks
def look_counts(
    design: SequentialDesign, k: int, n11: np.ndarray, n10: np.ndarray, n01: np.ndarray, n00: np.ndarray
) -> np.ndarray:
    """Vectorised :func:`look` on 2×2 counts of the first ``n_k`` documents (used by simulations).

    Returns:
        Array of codes: 1 = efficacy, −1 = futility, 0 = continue.
    """
    if not 1 <= k <= len(design.looks):
        raise ValueError(f"look k must be in 1..{len(design.looks)}, got {k}")
    n10, n01 = np.asarray(n10), np.asarray(n01)
    d = n10 + n01
    level = boundaries(design).nominal_alpha[k - 1]
    # Exact one-sided McNemar p-value P(X ≥ n10 | Bin(D, ½)); D = 0 carries no evidence (p = 1).
    p = np.where(d > 0, sps.binom.sf(n10 - 1, np.maximum(d, 1), 0.5), 1.0)
    efficacy = p < level
    if k == len(design.looks):
        return np.where(efficacy, 1, -1)
    futile = np.zeros_like(efficacy)
    if design.futility:
        _, hi = newcombe_paired_ci_array(n11, n10, n01, n00, design.futility_confidence)
        futile = hi < design.min_effect
    return np.where(efficacy, 1, np.where(futile, -1, 0))


def look(design: SequentialDesign, k: int, a_outcomes: Sequence[float], b_outcomes: Sequence[float]) -> LookResult:
    """Decision at look k for candidate ``a`` vs comparator ``b`` on their first ``n_k`` documents.

    "efficacy" when the exact one-sided McNemar p-value (H1: a better) is below the look's nominal level
    ``1 − Φ(b_k)``; at k < K "futility" when the Newcombe upper bound of the gain is below ``min_effect``;
    else "continue". The last look (k = K) never continues: "efficacy" or "futility" (not significant).
    Outcomes are higher-is-better 0/1; for lower-is-better metrics pass ``1 − x``.

    Args:
        design: The plan.
        k: Look number, 1-based.
        a_outcomes: Candidate outcomes, at least ``n_k`` documents (only the first ``n_k`` are used).
        b_outcomes: Comparator outcomes, aligned.

    Raises:
        ValueError: k out of range, too few documents, misaligned or non-binary outcomes.
    """
    if not 1 <= k <= len(design.looks):
        raise ValueError(f"look k must be in 1..{len(design.looks)}, got {k}")
    n = design.looks[k - 1]
    a, b = as_outcomes(a_outcomes, "a"), as_outcomes(b_outcomes, "b")
    if a.size < n or b.size < n:
        raise ValueError(f"look {k} needs the first {n} documents, got a: {a.size}, b: {b.size}")
    a, b = a[:n], b[:n]
    if not (is_binary(a) and is_binary(b)):
        raise ValueError("sequential looks need 0/1 outcomes (exact McNemar)")
    counts = [int(np.sum((a == i) & (b == j))) for i, j in ((1, 1), (1, 0), (0, 1), (0, 0))]
    code = int(look_counts(design, k, *(np.array(c) for c in counts)))
    return "efficacy" if code == 1 else ("futility" if code == -1 else "continue")


def combine(results: Sequence[LookResult]) -> LookResult:
    """One candidate's verdict at a look from its comparisons (baseline, best control, scalar…).

    "efficacy" only when every comparison says so; "futility" when any does; else "continue".
    """
    if not results:
        raise ValueError("combine needs at least one comparison")
    if any(r == "futility" for r in results):
        return "futility"
    return "efficacy" if all(r == "efficacy" for r in results) else "continue"


def last_look_alpha(design: SequentialDesign) -> float:
    """The nominal one-sided level of the last look: the gate's ``alpha`` when the last look decides."""
    return boundaries(design).nominal_alpha[-1]


def last_look_config(design: SequentialDesign, cfg: GateConfig, n_candidates: int = 1) -> GateConfig:
    """The gate's config for the last look of a design built with ``alpha = cfg.alpha / n_candidates``.

    Each candidate's last look must test at the design's nominal level ``α_K``; with Bonferroni across the m
    candidates the gate tests at ``(m·α_K)/m``, so the returned config has ``alpha = m·α_K`` and
    ``correction = "bonferroni"`` (everything else unchanged).
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    return cfg.model_copy(update={"alpha": n_candidates * last_look_alpha(design), "correction": "bonferroni"})


# ------------------------------------------------------------------------------------- the flow's rule
class SequentialConfig(BaseModel):
    """How the nightly flow evaluates the task benchmark in looks (``RunConfig.sequential``; all recorded).

    The budget is ``RunConfig.task_limit``; looks at ``⌈budget·k/K⌉``; ``alpha`` is the gate's, split over the
    m candidates of a decision (Bonferroni) and spent over the looks by ``spending``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Evaluate in looks and stop early (off: every document, one look).")
    looks: int = Field(4, ge=2, le=20, description="Number of looks K (the last one at the whole budget).")
    spending: Spending = Field("obrien_fleming", description="Lan–DeMets spending function type.")
    futility: bool = Field(True, description="Stop a candidate whose gain's upper bound is below gate.min_effect.")


def design_for(seq: SequentialConfig, gate: GateConfig, budget: int, n_candidates: int) -> SequentialDesign:
    """The design of one decision: K looks over ``budget`` documents at level ``gate.alpha / m``."""
    if budget < seq.looks:
        raise ValueError(f"sequential evaluation needs task_limit >= looks, got task_limit={budget}, "
                         f"looks={seq.looks}; raise task_limit or lower sequential.looks")
    return SequentialDesign.equally_spaced(budget, seq.looks, alpha=gate.alpha / max(1, n_candidates),
                                           spending=seq.spending, futility=seq.futility, min_effect=gate.min_effect,
                                           futility_confidence=gate.confidence)


def _hib(x: Sequence[float], higher_is_better: bool) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a if higher_is_better else 1.0 - a


def look_candidates(design: SequentialDesign, k: int, baseline: Sequence[float], candidates: dict[str, Sequence[float]],
                    controls: dict[str, Sequence[float]], scalar: tuple[str, Sequence[float]] | None = None,
                    higher_is_better: bool = True) -> dict[str, LookResult]:  # fmt: skip
    """Every candidate's result at look k: :func:`look` against the baseline, the best control so far (by mean
    on these documents) and the calibrated scalar (not against itself), :func:`combine`-d.

    Outcomes that are not 0/1 cannot be looked at with exact McNemar: every candidate then continues (the flow
    evaluates the whole budget and the fixed gate decides).
    """
    n = design.looks[k - 1]
    base = _hib(baseline, higher_is_better)[:n]
    every = [base, *(_hib(v, higher_is_better)[:n] for v in (*candidates.values(), *controls.values()))]
    if scalar is not None:
        every.append(_hib(scalar[1], higher_is_better)[:n])
    if not all(is_binary(v) for v in every):
        return {name: "continue" for name in candidates}
    best = max(controls.items(), key=lambda kv: (float(np.mean(_hib(kv[1], higher_is_better)[:n])), kv[0]),
               default=None)  # fmt: skip
    out: dict[str, LookResult] = {}
    for name, c in candidates.items():
        a = _hib(c, higher_is_better)
        refs = [base] + ([_hib(best[1], higher_is_better)] if best is not None else [])
        if scalar is not None and scalar[0] != name:
            refs.append(_hib(scalar[1], higher_is_better))
        out[name] = combine([look(design, k, a, r) for r in refs])
    return out


def look_config(design: SequentialDesign, cfg: GateConfig, k: int, n_candidates: int) -> GateConfig:
    """The gate's config for a decision taken at look k: each candidate tested at that look's nominal level
    ``α_k`` (Bonferroni over the m candidates: ``alpha = m·α_k``); everything else unchanged."""
    level = boundaries(design).nominal_alpha[k - 1]
    return cfg.model_copy(update={"alpha": min(max(1, n_candidates) * level, 0.999), "correction": "bonferroni"})


# --------------------------------------------------------------------------------------- the look loop
@dataclass(frozen=True)
class LookRun:
    """What the look loop scored and how it stopped (:func:`run_looks`).

    Attributes:
        key: The task evaluation's key: the hash of every look's evaluation key, in order.
        outcomes: Subject name -> outcomes of the documents it was scored on (aligned from the first document).
        scores: Subject name -> continuous scores of those documents (absent where a look had none).
        record: The record that goes into the decision's statistics (``sequential``): design, looks, where each
            candidate stopped, documents evaluated.
    """

    key: str
    outcomes: dict[str, list]
    scores: dict[str, list]
    record: dict


ScoreLook = Callable[[list[str], tuple[int, int]], tuple[str, dict[str, list], dict[str, list]]]


def run_looks(design: SequentialDesign, roles: dict[str, str], score: ScoreLook, *, higher_is_better: bool = True,
              canary_tolerance: float = 0.0, baseline: str = "baseline") -> LookRun:
    """The task benchmark in looks: each look scores only its new documents, for the baseline, the controls and
    every candidate still running.

    The canaries: the zero rebuild is scored at the first look only (a broken write path shows on any document), and
    a zero rebuild that fails there stops the adapter at once (its run is flagged whatever more documents say). The
    bare base is scored at every look until the baseline differs from it on some document, so "the adapter is not
    applied" rests on the same documents as in the fixed design, and an adapter that merely agrees with the base on
    the first look's documents is not rejected for it. For the same reason an efficacy stop waits for that
    difference (``efficacy_deferred_at`` records the looks where it waited); stopping there would turn the fixed
    design's PROMOTE into a canary REJECT.

    A candidate stops at a look for futility (its gain's upper bound below ``design.min_effect``); the adapter stops
    when every candidate has stopped or one reaches efficacy, else at the budget.

    Args:
        design: The plan (:func:`design_for`).
        roles: Arm name -> role (``policy``, ``scalar_control``, ``random_control``, ``canary``, ``bare_base``) of
            every arm with a candidate, in plan order.
        score: ``(subject names besides the baseline, (start, stop)) -> (evaluation key, subject -> outcomes of
            documents start..stop-1, subject -> their continuous scores)``; the baseline is always scored.
        higher_is_better: Direction of the task metric.
        canary_tolerance: ``GateConfig.canary_tolerance`` (the zero-rebuild canary's allowed differing fraction).
        baseline: The baseline's subject name.
    """
    from spectral_surgery.tasks.decision.canaries import documents_differing, zero_rebuild_holds

    candidates = [n for n, r in roles.items() if r in ("policy", "scalar_control")]
    controls = [n for n, r in roles.items() if r == "random_control"]
    scalar = next((n for n, r in roles.items() if r == "scalar_control"), None)
    canaries = [n for n, r in roles.items() if r in ("canary", "bare_base")]
    zero = next((n for n, r in roles.items() if r == "canary"), None)
    bare = next((n for n, r in roles.items() if r == "bare_base"), None)
    live, futile, looks, keys = list(candidates), {}, [], []
    out: dict[str, list] = {}
    scores: dict[str, list] = {}
    no_scores: set[str] = set()
    start, stop_k, canary_stop, deferred = 0, len(design.looks), None, []

    def differing(name: str) -> int:  # documents where canary ``name`` differs from the baseline, of those scored
        return documents_differing(out[name], out[baseline])

    for k, n_k in enumerate(design.looks, 1):
        # the bare base goes on while the baseline has not differed from it: its canary needs one difference
        more_bare = [bare] if k > 1 and bare is not None and differing(bare) == 0 else []
        scored = (live + controls + ([scalar] if scalar and scalar not in live else [])
                  + (canaries if k == 1 else more_bare))
        ekey, chunk, chunk_scores = score(scored, (start, n_k))
        keys.append(ekey)
        for name, values in chunk.items():
            if len(scores.get(name, ())) == len(out.get(name, ())) and name in chunk_scores:
                scores.setdefault(name, []).extend(chunk_scores[name])
            else:  # a look without scores: the subject has none over its documents
                scores.pop(name, None)
                no_scores.add(name)
            out.setdefault(name, []).extend(values)
        results = look_candidates(design, k, out[baseline], {n: out[n] for n in live}, {n: out[n] for n in controls},
                                  (scalar, out[scalar]) if scalar else None, higher_is_better)
        last = k == len(design.looks)  # the last look decides nothing itself: the gate does, at its level
        looks.append({"look": k, "documents": n_k,
                      "results": {n: "not significant" if last and r == "futility" else r for n, r in results.items()}})
        if k < len(design.looks):
            futile.update({n: k for n, r in results.items() if r == "futility"})
        live = [n for n in live if n not in futile]
        if k == 1 and zero is not None and not zero_rebuild_holds(differing(zero), len(out[zero]), canary_tolerance):
            canary_stop = f"the zero-rebuild canary {zero} failed at look 1"  # final: it is scored at look 1 only
        efficacy = any(results[n] == "efficacy" for n in live)
        unapplied = bare is not None and differing(bare) == 0  # a stop now would read as "adapter not applied"
        if k < len(design.looks) and (not live or canary_stop or (efficacy and not unapplied)):
            stop_k = k
            break
        if efficacy and k < len(design.looks):
            deferred.append(k)
        start = n_k
    record = {"design": design.model_dump(mode="json"), "looks": looks, "stopped_at_look": stop_k,
              "documents": design.looks[stop_k - 1], "futile": futile, "evaluation_keys": keys,
              "canary_stop": canary_stop, "efficacy_deferred_at": deferred,
              "canary_documents": {n: len(out[n]) for n in canaries if n in out},
              "subject_documents": sum(len(v) for v in out.values()),
              "fixed_subject_documents": design.looks[-1] * (1 + len(candidates) + len(controls) + len(canaries))}
    key = hashlib.sha256("|".join(keys).encode()).hexdigest()[:64]
    return LookRun(key, out, {n: v for n, v in scores.items() if n not in no_scores}, record)


def sequential_decision(gate: GateConfig, record: dict, base: ArmOutcomes, cands: list[ArmOutcomes],
                        controls: list[ArmOutcomes], extras: dict[str, ArmOutcomes | None]) -> Decision:
    """The gate at the look where the task evaluation stopped (``record``: :attr:`LookRun.record`), with the
    candidates stopped earlier for futility rejected on the documents they had (each at its own look's level)."""
    design = SequentialDesign.model_validate(record["design"])
    m = len(cands)
    full = [c for c in cands if c.name not in record["futile"]]
    decision = decide(base, full, controls, look_config(design, gate, record["stopped_at_look"], m), **extras)
    stopped = []
    for c in cands:
        if c.name not in record["futile"]:
            continue
        j = record["futile"][c.name]
        nj = design.looks[j - 1]

        def first(a: ArmOutcomes | None) -> ArmOutcomes | None:
            # no guard at all (its stop is task evidence): the sub-decision only gives the numbers it had
            return None if a is None else dataclasses.replace(a, task=a.task[:nj], guard=None, guard_skipped=None)

        scalar = first(extras["scalar_control"])
        sub = decide(first(base), [first(c)], [first(r) for r in controls],
                     look_config(design, gate, j, m), scalar_control=scalar if scalar is not None and
                     scalar.name != c.name else None)  # fmt: skip
        v = sub.verdicts[0]
        stopped.append(dataclasses.replace(v, verdict="reject", passed=False, reason=(
            f"{c.name}: stopped for futility at look {j} of {len(design.looks)} ({nj} documents) — " + v.reason)))
    if not stopped:
        return decision
    verdicts = decision.verdicts + tuple(stopped)
    if decision.verdict == "promote":
        return dataclasses.replace(decision, verdicts=verdicts)
    # the gate's one sentence composer: only a HOLD gets the adapter's "held for evidence" tail
    promoted, verdict, sentence, n_needed = summarize(verdicts, decision.flags, decision.higher_is_better)
    return Decision(promoted, verdicts, sentence, decision.config, decision.baseline, decision.baseline_task_mean,
                    decision.higher_is_better, verdict, decision.flags, decision.canaries, n_needed)


# ------------------------------------------------------------------------------------------ simulation
@dataclass(frozen=True)
class SimulationResult:
    """Operating characteristics of a design, next to the fixed-n gate on the same simulated data.

    Attributes:
        sequential: Fraction promoted by the sequential rule (both comparisons reach efficacy at a look).
        fixed: Fraction promoted by the fixed gate at ``n_K`` documents (exact McNemar at ``design.alpha``).
        futility: Fraction stopped for futility before the last look.
        mean_documents: Average documents evaluated by the sequential rule.
        sims: Simulated adapters.
    """

    sequential: float
    fixed: float
    futility: float
    mean_documents: float
    sims: int


def simulate_sequential(
    design: SequentialDesign, effect: float, discordance: float = 0.05, sims: int = 4000, seed: int = 0,
    *, base_rate: float = 0.5, with_control: bool = True,
) -> SimulationResult:
    """Simulate ``sims`` adapters (candidate, baseline, one random control) through the design and the fixed gate.

    Data come from :func:`tasks.decision.power.simulate_tables` (flip model), one block per look. The sequential rule
    is the documented flow: at each look, :func:`look_counts` vs the baseline and vs the control,
    :func:`combine`-d; the fixed rule is exact McNemar ``p < design.alpha`` vs both on all ``n_K`` documents.
    ``with_control=False`` compares with the baseline only (the sharpest check of the level).
    """
    rng = np.random.default_rng(seed)
    blocks = np.diff((0, *design.looks))
    cum = np.cumsum(simulate_tables(blocks.tolist(), effect, discordance, sims, rng, base_rate), axis=1)
    state = np.zeros(sims, dtype=np.int64)  # 0 running, 1 efficacy, −1 futility
    used = np.full(sims, design.looks[-1], dtype=np.int64)
    refs = ("b", "r") if with_control else ("b",)
    for k in range(1, len(design.looks) + 1):
        cells = cum[:, k - 1]
        codes = [look_counts(design, k, *pair_counts(cells, "c", ref)) for ref in refs]
        futile, efficacy = np.logical_or.reduce([c == -1 for c in codes]), np.logical_and.reduce(
            [c == 1 for c in codes]
        )
        both = np.where(futile, -1, np.where(efficacy, 1, 0))
        stop = (state == 0) & (both != 0)
        used[stop] = design.looks[k - 1]
        state[stop] = both[stop]
    final = cum[:, -1]
    fixed = np.ones(sims, dtype=bool)
    for ref in refs:
        _, n10, n01, _ = pair_counts(final, "c", ref)
        fixed &= exact_rejects(n10, n01, design.alpha)
    futile_early = (state == -1) & (used < design.looks[-1])
    return SimulationResult(float((state == 1).mean()), float(fixed.mean()), float(futile_early.mean()),
                            float(used.mean()), sims)  # fmt: skip
