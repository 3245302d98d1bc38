"""The promotion gate (ARCHITECTURE.md, "The gate, precisely" and "Verdicts"): pure, no I/O, every number recorded.

For the task metric m with per-document outcomes, a candidate c (any non-control policy), the baseline b
(the unedited adapter), the best random control r (best task mean among the evaluated seeds) and, when
given, the calibrated global scalar s (EXTENSIONS.md §8.3), each comparison X ∈ {b, r, s} is a one-sided
paired test of "c better than X" (:mod:`tasks.decision.stats`: exact McNemar for 0/1 outcomes, else paired
bootstrap) with its two-sided ``confidence`` interval of the gain.

**Rules.** c *beats* X when its gain over X exceeds ``min_delta`` and the corrected p-value (below) is under
``alpha``. The guard holds when ``IFEval(c) ≥ IFEval(b) − guard_tolerance`` and no one-sided paired test
finds a drop at ``guard_alpha``. Canaries: the zero rebuild must match the baseline on all but a
``canary_tolerance`` fraction of documents, and the baseline must differ from the bare base on ≥ 1 document.

**Multiplicity.** The family is the m non-control candidates of one decision. Candidate i's promotion null
("not better than every reference") is a union of per-reference nulls, so its intersection-union p-value
is ``max_X p_iX`` (Berger 1982); ``p_adjusted`` applies ``correction`` (Holm by default) to those m values,
which controls the family-wise false-promotion rate at alpha across candidates and references. For the
record, each reference's family is also adjusted on its own (``p_adjusted_vs_baseline`` …); these are never
larger than ``p_adjusted``, which promotion requires to be below alpha.

**Verdicts**, first match wins (gains are signed so that positive is better; U_X is the upper end of c's
gain interval over X):

1. REJECT if a canary failed (nothing from the run is promoted), the candidate is a control (never
   promoted), the guard fails, or a required random control was not evaluated;
2. REJECT if ``U_b < min_effect``: even the optimistic end of the gain is not worth having;
3. REJECT if, for X = r or s, c does not beat X and ``U_X < min_effect``: that control explains the gain
   ("a global rescale explains this gain" for s);
4. PROMOTE if c beats b, r and s, the guard holds and ``p_adjusted < alpha`` (the best m(c) among them is
   promoted; ties: lower p vs baseline, then name);
5. HOLD otherwise: the evidence cannot tell yet (typically the interval holds both 0 and ``min_effect``).

The decision is PROMOTE if a candidate is promoted, else HOLD if any non-control candidate holds and no
canary failed, else REJECT.

**Guarding only what can matter.** The guard enters a verdict only in rule 1 (a failing guard rejects) and rule 4
(promotion needs it to hold); it changes no test, no p-value and no correction. So a candidate that the gate
rejects on its task evidence alone (every guard absent, :func:`guard_skips`) is rejected whatever its guard
outcome, and its guard need not be evaluated. Such an arm carries ``guard_skipped`` (the reason, e.g.
:data:`REJECTED_ON_TASK_EVIDENCE`); its sentence says "IFEval guard not evaluated: rejected on task evidence", its
``guard_ok`` is None, and the gate refuses (ValueError) a skipped guard on a candidate it would not reject.

**Power.** For 0/1 outcomes with observed discordant rate ψ̂ = (n10 + n01)/n against reference X, at level
α* = alpha/m (Holm's first step, Bonferroni) or alpha (``"none"``): ``mde`` is Connor's (1987) minimum
detectable gain at n with power ``power`` (:func:`tasks.decision.power.mcnemar_mde` at ψ = max(ψ̂, 1/n), which
takes ψ = δ where the gain would exceed the discordance: never less than a gain every discordant document makes) and
``n_needed`` the documents at which a gain of ``min_effect`` is detected with that power
(:func:`tasks.decision.power.mcnemar_sample_size`, ψ = max(ψ̂, min_effect)); for continuous outcomes the normal
formulas with the standard deviation of the paired differences. Both are the largest over the references,
since the gate must beat all of them. Where some reference's continuous differences show no spread (one document,
or the same difference on every one) both are None, not 0: there is nothing to size them from.

**Pairing.** Every verdict records, against each reference, what pairing the arms on the same documents buys
(:func:`tasks.decision.stats.pairing`): the Pearson correlation of the paired per-document values (phi for the 0/1
outcomes; also on the continuous scores where the arms carry them) and the effective sample size
``n_eff = n·(var_c + var_X) / var(c − X)``, the documents per arm an unpaired comparison would need for the same
standard error.

**Continuous decision metric (opt-in).** With ``DecisionConfig(metric="continuous")`` the comparisons vs b, r and s
are one-sided paired t-tests (:func:`tasks.decision.stats.paired_t`) on the arms' continuous per-document scores (the
gold answer's log-likelihood margin), with the same rules, Holm, verdicts and power (the normal formulas with the
paired SD of the scores), ``min_effect``/``min_delta`` taken from the ``DecisionConfig`` in the score's units. The
canaries and the guard stay on the 0/1 outcomes, and ``task_mean`` stays the task metric's mean. Its false-promotion
rate is checked by simulation and by a permutation check on real outputs (``tests/tasks/decision/test_continuous.py``).

Differences are fractions of the metric's 0..1 scale (``min_delta = 0.01`` is one point); sentences print
them ×100 as "pts". For lower-is-better metrics "better" means lower, and the paired tests use
``alternative="less"``.

Over 400 lines: the rules, the verdicts and the Decision record are one contract (ARCHITECTURE.md, "The gate,
precisely"); split candidate: the Decision record and its serialisation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spectral_surgery.tasks.decision.canaries import canaries
from spectral_surgery.tasks.decision.power import mcnemar_mde, mcnemar_sample_size, paired_mde, paired_sample_size
from spectral_surgery.tasks.decision.stats import (
    Pairing,
    PairedTest,
    adjust_pvalues,
    as_outcomes,
    paired_t,
    paired_test,
    pairing,
)

# A held candidate whose continuous paired differences show no spread has no power estimate (:func:`_power`).
NO_SPREAD = "documents needed unknown (the paired differences show no spread to size them from)"
_EPS = 1e-12  # float slack on threshold comparisons, so a drop of exactly the tolerance is "within"
Verdict = Literal["promote", "hold", "reject"]
REJECTED_ON_TASK_EVIDENCE = "rejected on task evidence"  # why a guard was skipped (module docstring)


class GateConfig(BaseModel):
    """Thresholds of the gate; all recorded with every decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Level of the one-sided tests vs baseline and control.")
    min_delta: float = Field(0.0, ge=0.0, le=1.0, description="Required gain (0.01 = 1 pt).")
    guard_tolerance: float = Field(0.02, ge=0.0, le=1.0, description="Largest allowed IFEval drop (0.02 = 2 pts).")
    guard_alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Level of the test of an IFEval drop.")
    require_control: bool = Field(True, description="No evaluated random control → nothing promoted.")
    n_boot: int = Field(10000, ge=100, description="Bootstrap resamples for non-binary outcomes.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Level of the recorded two-sided intervals.")
    min_effect: float = Field(0.02, gt=0.0, le=1.0, description="Smallest gain worth having (0.02 = 2 pts): a gain "
                              "whose upper confidence bound is below it is rejected; one whose interval holds both "
                              "0 and it is held for evidence.")  # fmt: skip
    power: float = Field(0.8, gt=0.0, lt=1.0, description="Power for the recorded MDE and documents needed.")
    correction: Literal["none", "holm", "bonferroni"] = Field(
        "holm", description="Multiplicity correction across the non-control candidates of one decision.")
    canary_tolerance: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of documents on which the "
                                    "zero-rebuild canary may differ from the baseline.")  # fmt: skip


class DecisionConfig(BaseModel):
    """Which per-document values decide (``decision:`` in the run config); keyed into the decision only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["task", "continuous"] = Field(
        "task", description="task: the benchmark's 0/1 outcomes (exact McNemar; the default). continuous: a paired "
        "t-test on the per-document gold-answer log-likelihood margin (log-likelihood benchmarks only; a benchmark "
        "without scores is decided on the task metric, recorded).")
    min_effect: float = Field(0.1, gt=0.0, description="continuous only: smallest mean margin gain worth having, in "
                              "the score's units (nats); plays gate.min_effect's part.")
    min_delta: float = Field(0.0, ge=0.0, description="continuous only: required mean margin gain (nats); plays "
                             "gate.min_delta's part.")


@dataclass(frozen=True)
class ReferencePairing:
    """What pairing a candidate with one reference buys (module docstring, "Pairing").

    Attributes:
        reference: The reference arm's name.
        outcomes: On the 0/1 task outcomes (the correlation is phi).
        scores: On the continuous scores (None unless both arms carry them).
    """

    reference: str
    outcomes: Pairing
    scores: Pairing | None = None


@dataclass(frozen=True)
class ArmOutcomes:
    """One evaluated adapter ("arm") with its per-document outcomes.

    Attributes:
        name: Unique arm name (``baseline``, ``smooth_abs``, ``random_s1``...).
        policy: Policy that produced it (``identity``/``baseline`` for the unedited adapter).
        is_control: True for random controls (never promoted).
        task: Per-document task outcomes, shape (n_docs,), aligned by document across arms.
        guard: Per-prompt IFEval strict outcomes, shape (n_prompts,), aligned; None if not evaluated.
        higher_is_better: Direction of the task metric.
        guard_skipped: Why the guard was deliberately not evaluated (:data:`REJECTED_ON_TASK_EVIDENCE`), else None;
            the gate accepts it only on a candidate it rejects on its task evidence.
        scores: Continuous per-document scores aligned with ``task`` (the gold answer's log-likelihood margin), or
            None where the benchmark has none.
    """

    name: str
    policy: str
    is_control: bool
    task: list[float]
    guard: list[float] | None = None
    higher_is_better: bool = True
    guard_skipped: str | None = None
    scores: list[float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"arm name must be a non-empty string, got {self.name!r}")
        as_outcomes(self.task, f"arm {self.name!r} task")
        if self.scores is not None and len(as_outcomes(self.scores, f"arm {self.name!r} scores")) != len(self.task):
            raise ValueError(f"arm {self.name!r}: {len(self.scores)} scores for {len(self.task)} task outcomes; "
                             "scores must be aligned with the outcomes")
        if self.guard is not None:
            as_outcomes(self.guard, f"arm {self.name!r} guard")
            if self.guard_skipped:
                raise ValueError(f"arm {self.name!r} has guard outcomes and guard_skipped={self.guard_skipped!r}; "
                                 "give one or the other")


@dataclass(frozen=True)
class CandidateVerdict:
    """Why one candidate passed or failed, with all its statistics.

    Attributes:
        name: Candidate arm name.
        policy: Its policy.
        task_mean: m(c).
        vs_baseline: Paired test of c against the baseline (one-sided in the "better" direction).
        vs_control: Paired test against the best random control (None if no control).
        control_name: Name of that control.
        guard_delta: IFEval(c) − IFEval(b), fraction (None if the guard was not evaluated/missing).
        guard_test: Paired test of an IFEval drop, ``alternative="less"`` (None as ``guard_delta``).
        beats_baseline: Gain over the baseline above ``min_delta`` and ``p_adjusted_vs_baseline < alpha``.
        beats_control: The same against the best random control (False when there was no control).
        guard_ok: The guard holds (True when the baseline has no guard outcomes: nothing to compare; None when
            the candidate's guard was skipped, see ``guard_skipped``).
        passed: Eligible for promotion (verdict "promote"); only the best passing candidate is promoted.
        reason: One readable line with the numbers behind the verdict.
        verdict: "promote", "hold" or "reject" (see the module docstring).
        n: Documents compared.
        n_a_only: Documents only the candidate solves vs the baseline (McNemar; None otherwise).
        n_b_only: Documents only the baseline solves.
        gain_upper: Upper end of the gain's interval over the baseline (signed: positive is better).
        vs_scalar: Paired test against the calibrated global scalar (None if none or c is the scalar).
        scalar_name: Name of that scalar arm.
        beats_scalar: The same as ``beats_control`` against the scalar (None without a scalar).
        explained_by: Control whose comparison rejected the candidate (rule 3), else None.
        p_adjusted: Corrected intersection-union p-value of "better than every reference" (None: control).
        p_adjusted_vs_baseline: The baseline family's corrected p-value.
        p_adjusted_vs_control: The random-control family's (None without a control).
        p_adjusted_vs_scalar: The scalar family's (None without a scalar).
        mde: Minimum detectable gain at n (largest over references; see the module docstring).
        n_needed: Documents at which a gain of ``min_effect`` would be detected with ``power``.
        guard_skipped: Why the candidate's guard was not evaluated (its task evidence rejects it), else None.
        pairing: Correlation and effective sample size vs each reference (baseline, best random control, scalar).
    """

    name: str
    policy: str
    task_mean: float
    vs_baseline: PairedTest
    vs_control: PairedTest | None
    control_name: str | None
    guard_delta: float | None
    guard_test: PairedTest | None
    beats_baseline: bool
    beats_control: bool
    guard_ok: bool | None
    passed: bool
    reason: str
    verdict: Verdict = "reject"
    n: int = 0
    n_a_only: int | None = None
    n_b_only: int | None = None
    gain_upper: float = 0.0
    vs_scalar: PairedTest | None = None
    scalar_name: str | None = None
    beats_scalar: bool | None = None
    explained_by: str | None = None
    p_adjusted: float | None = None
    p_adjusted_vs_baseline: float | None = None
    p_adjusted_vs_control: float | None = None
    p_adjusted_vs_scalar: float | None = None
    mde: float | None = None
    n_needed: int | None = None
    guard_skipped: str | None = None
    pairing: tuple[ReferencePairing, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The gate's outcome for one adapter version.

    Attributes:
        promoted: Name of the promoted candidate, or None.
        verdicts: One verdict per candidate, in input order.
        sentence: One readable summary.
        config: The thresholds used.
        baseline: Baseline arm name.
        baseline_task_mean: m(b).
        higher_is_better: Direction of the task metric.
        verdict: "promote", "hold" or "reject" for the decision as a whole.
        flags: Canary failures, one readable line each (any flag → nothing promoted).
        canaries: Per canary (``zero_rebuild``, ``bare_base``) its arm, documents differing, fraction and ok.
        n_needed: For a HOLD, the fewest documents that would resolve one held candidate; else None.
        decision: Which values decided (``metric``: task or continuous) and, for continuous, its thresholds.
    """

    promoted: str | None
    verdicts: tuple[CandidateVerdict, ...]
    sentence: str
    config: GateConfig
    baseline: str
    baseline_task_mean: float
    higher_is_better: bool
    verdict: Verdict = "reject"
    flags: tuple[str, ...] = ()
    canaries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    n_needed: int | None = None
    decision: DecisionConfig = DecisionConfig()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (plain dicts, lists, str, float, int, bool, None) for the registry."""
        return {
            "promoted": self.promoted,
            "verdict": self.verdict,
            "sentence": self.sentence,
            "baseline": self.baseline,
            "baseline_task_mean": self.baseline_task_mean,
            "higher_is_better": self.higher_is_better,
            "flags": list(self.flags),
            "canaries": {k: dict(v) for k, v in self.canaries.items()},
            "correction": self.config.correction,
            "n_needed": self.n_needed,
            "config": self.config.model_dump(mode="json"),
            "decision": self.decision.model_dump(mode="json"),
            "verdicts": [dataclasses.asdict(v) for v in self.verdicts],
        }


@dataclass(frozen=True)
class MetricChoice:
    """The decision metric a decision uses (:func:`decision_metric`).

    Attributes:
        used: The ``DecisionConfig`` to decide with.
        fallback: Why a requested continuous metric fell back to the task metric (None: as requested).
    """

    used: DecisionConfig
    fallback: str | None = None


def decision_metric(requested: DecisionConfig, arms: Sequence[ArmOutcomes | None], benchmark: str) -> MetricChoice:
    """The configured metric, or the task metric when a continuous one is asked of arms without scores.

    A generative benchmark has no continuous score yet (only log-likelihood ones do), so one run config can serve
    every task family: those without scores are decided on the task metric, and the decision records why.
    """
    if requested.metric == "task":
        return MetricChoice(requested)
    lacking = [a.name for a in arms if a is not None and a.scores is None]
    if not lacking:
        return MetricChoice(requested)
    return MetricChoice(DecisionConfig(), f"{benchmark} has no continuous per-document scores for "
                                          f"{', '.join(lacking)}; decided on the task metric")


# ----------------------------------------------------------------------------------------------- format
def pts(x: float, unit: str = "") -> str:
    """A fraction as signed points with one decimal: 0.031 → "+3.1", −0.005 → "−0.5"."""
    v = round(x * 100, 1)
    return f"{'−' if v < 0 else '+'}{abs(v):.1f}{unit}"


def verdict_of(statistics: dict | None, promoted: bool) -> Verdict:
    """The decision's verdict from its recorded statistics (decisions recorded before verdicts existed: promote
    when something was promoted, else reject)."""
    v = (statistics or {}).get("verdict")
    return v if v in ("promote", "hold", "reject") else ("promote" if promoted else "reject")


def verdict_label(verdict: str, n_needed: int | None = None, promoted: str | None = None) -> str:
    """The few words every surface (CLI, ``--json``, artifacts, dashboard) shows for a verdict, so a HOLD ("could
    not tell yet") never reads like a REJECT ("measured, not worth it")."""
    if verdict == "promote":
        return f"promote {promoted}" if promoted else "promote"
    if verdict == "hold":
        return f"held for evidence: needs ~{n_needed} documents" if n_needed else "held for evidence"
    return "rejected"


def fmt_gain(x: float, metric: str = "task") -> str:
    """A gain with its unit: "+3.1 pts" for the task metric (a fraction ×100), "+0.123 nats" for the continuous one."""
    if metric == "continuous":
        return f"{'−' if x < 0 else '+'}{abs(x):.3f} nats"
    return pts(x, " pts")


def _threshold(x: float, metric: str) -> str:
    return f"{x:.3f} nats" if metric == "continuous" else f"{x * 100:.1f}"


def fmt_p(p: float) -> str:
    """A p-value with three significant digits, floored at "p<0.001"."""
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


# ------------------------------------------------------------------------------------------------ rules
def guard_check(
    candidate: Sequence[float], baseline: Sequence[float], cfg: GateConfig
) -> tuple[bool, float, PairedTest]:
    """IFEval guard on prompt-level strict accuracy.

    Fails when the candidate drops by more than ``cfg.guard_tolerance`` OR a one-sided paired test of a
    drop (``alternative="less"``) has ``p < cfg.guard_alpha``.

    Args:
        candidate: Candidate's per-prompt strict outcomes, shape (n_prompts,).
        baseline: Baseline's, aligned, shape (n_prompts,).
        cfg: Gate thresholds.

    Returns:
        ``(ok, delta, test)`` with ``delta = IFEval(c) − IFEval(b)`` as a fraction.

    Raises:
        ValueError: misaligned or invalid outcomes.
    """
    test = _test(candidate, baseline, "less", cfg)
    ok = test.delta >= -cfg.guard_tolerance - _EPS and not test.p_value < cfg.guard_alpha
    return ok, test.delta, test


def _test(a: Sequence[float], b: Sequence[float], alternative: str, cfg: GateConfig,
          metric: str = "task") -> PairedTest:  # fmt: skip
    if metric == "continuous":
        return paired_t(a, b, alternative=alternative, confidence=cfg.confidence)  # type: ignore[arg-type]
    return paired_test(a, b, alternative=alternative, n_boot=cfg.n_boot, seed=cfg.seed,  # type: ignore[arg-type]
                       confidence=cfg.confidence)  # fmt: skip


def _gain(test: PairedTest, hib: bool) -> tuple[float, float]:
    """(gain, upper end of its interval), signed so that positive is better."""
    return (test.delta, test.ci_high) if hib else (-test.delta, -test.ci_low)


def _beats(test: PairedTest, p_adj: float, hib: bool, cfg: GateConfig, metric: str = "task") -> tuple[bool, str]:
    """Condition "better by more than min_delta and significant after correction"; (ok, failure note or "")."""
    if not _gain(test, hib)[0] > cfg.min_delta + _EPS:
        return False, "no gain" if cfg.min_delta == 0 else f"not above min_delta {_threshold(cfg.min_delta, metric)}"
    if not p_adj < cfg.alpha:
        after = f" after {cfg.correction}" if test.p_value < cfg.alpha else ""
        return False, f"not significant{after}"
    return True, ""


def _part(test: PairedTest, p_adj: float, what: str, note: str, unit: str, cfg: GateConfig,
          metric: str = "task") -> str:  # fmt: skip
    """"+3.1 pts vs baseline (p=0.01)" with the corrected p (when it differs) and a failure note."""
    adj = f", {cfg.correction} {fmt_p(p_adj)}" if p_adj != test.p_value else ""
    inner = fmt_p(test.p_value) + adj + (f", {note}" if note else "")
    delta = pts(test.delta, unit) if metric == "task" else fmt_gain(test.delta, metric)
    return f"{delta} vs {what} ({inner})"


def _power(c: ArmOutcomes, x: ArmOutcomes, test: PairedTest, cfg: GateConfig,
           level: float) -> tuple[float, float] | None:  # fmt: skip
    """(mde at n, documents needed for min_effect) of c vs x, from the observed spread (module docstring); None for
    continuous outcomes whose paired differences show no spread (the same difference on every document, up to float
    rounding: the test's method ``"none"``): the normal formulas would give an MDE of 0 and 0 documents needed, a
    power the data cannot back."""
    n = test.n
    if test.n_a_only is not None:
        psi = (test.n_a_only + (test.n_b_only or 0)) / n
        return (mcnemar_mde(n, max(psi, 1.0 / n), level, cfg.power),
                mcnemar_sample_size(cfg.min_effect, max(psi, cfg.min_effect), level, cfg.power))  # fmt: skip
    if test.method == "none":  # every difference equal up to float rounding (the test's own criterion)
        return None
    sd = float(np.std(np.asarray(c.task, float) - np.asarray(x.task, float), ddof=1)) if n > 1 else 0.0
    if not sd > 0.0:
        return None
    return paired_mde(n, sd, level, cfg.power), paired_sample_size(cfg.min_effect, sd, level, cfg.power)


def _check_inputs(baseline: ArmOutcomes, candidates: Sequence[ArmOutcomes], controls: Sequence[ArmOutcomes],
                  extras: dict[str, ArmOutcomes | None]) -> None:  # fmt: skip
    arms = [("baseline", baseline), *(("candidate", c) for c in candidates), *(("control", r) for r in controls)]
    by_name = {c.name: c for c in candidates}
    scalar = extras.get("scalar_control")
    if scalar is not None and scalar.name in by_name and by_name[scalar.name].task != scalar.task:
        raise ValueError(f"scalar_control {scalar.name!r} has the name of a candidate with other outcomes; pass the "
                         "same arm, or give the scalar its own name")  # fmt: skip
    arms += [(role, a) for role, a in extras.items() if a is not None and not (role == "scalar_control" and
                                                                              a.name in by_name)]  # fmt: skip
    seen: set[str] = set()
    n_task = len(baseline.task)
    n_guard = None if baseline.guard is None else len(baseline.guard)
    for role, arm in arms:
        if arm.name in seen:
            raise ValueError(f"arm name {arm.name!r} appears twice; arm names must be unique")
        seen.add(arm.name)
        if arm.higher_is_better != baseline.higher_is_better:
            raise ValueError(f"{role} {arm.name!r}: higher_is_better={arm.higher_is_better} but baseline "
                             f"{baseline.name!r} has {baseline.higher_is_better}; arms share one metric")  # fmt: skip
        if role in ("zero_rebuild", "bare_base") and 0 < len(arm.task) <= n_task:
            pass  # a canary may be scored on the first documents only (a sequential run's first look)
        elif len(arm.task) != n_task:
            raise ValueError(f"{role} {arm.name!r}: task has {len(arm.task)} outcomes, baseline {baseline.name!r} "
                             f"has {n_task}; outcomes must be aligned by document")  # fmt: skip
        if arm.guard is not None and n_guard is not None and len(arm.guard) != n_guard:
            raise ValueError(f"{role} {arm.name!r}: guard has {len(arm.guard)} outcomes, baseline {baseline.name!r} "
                             f"has {n_guard}; IFEval outcomes must be aligned by prompt")  # fmt: skip
    if baseline.is_control:
        raise ValueError(f"baseline {baseline.name!r} has is_control=True; the baseline is the unedited adapter")
    for r in controls:
        if not r.is_control:
            raise ValueError(f"control {r.name!r} has is_control=False; pass it as a candidate or mark it a control")


def _mean(x: Sequence[float]) -> float:
    return math.fsum(float(v) for v in x) / len(x)


@dataclass(frozen=True)
class _Tests:
    """One candidate's comparisons and their corrected p-values (None where not applicable)."""

    vs_b: PairedTest
    vs_r: PairedTest | None
    vs_s: PairedTest | None
    adj_b: float
    adj_r: float | None
    adj_s: float | None
    adj: float | None


def _compare(c: ArmOutcomes, b: ArmOutcomes, r: ArmOutcomes | None, s: ArmOutcomes | None,
             cfg: GateConfig, metric: str = "task"
             ) -> tuple[PairedTest, PairedTest | None, PairedTest | None]:  # fmt: skip
    alt = "greater" if b.higher_is_better else "less"
    vs_s = None if s is None or s.name == c.name else _test(c.task, s.task, alt, cfg, metric)
    return (_test(c.task, b.task, alt, cfg, metric), None if r is None else _test(c.task, r.task, alt, cfg, metric),
            vs_s)


def _pairings(c: ArmOutcomes, refs: Sequence[ArmOutcomes | None]) -> tuple[ReferencePairing, ...]:
    """Correlation and n_eff of c vs each reference on the outcomes, and on the scores where both have them."""
    out = []
    for x in refs:
        if x is None or x.name == c.name or len(x.task) != len(c.task):
            continue
        scores = None if c.scores is None or x.scores is None else pairing(c.scores, x.scores, "scores")
        out.append(ReferencePairing(x.name, pairing(c.task, x.task, "outcomes"), scores))
    return tuple(out)


def _corrected(raw: list[tuple[PairedTest, PairedTest | None, PairedTest | None]], family: list[bool],
               cfg: GateConfig) -> list[_Tests]:  # fmt: skip
    """Apply ``cfg.correction`` per reference family and to the intersection-union p-values (module docstring)."""
    def adjust(col: int) -> dict[int, float]:
        idx = [i for i, t in enumerate(raw) if family[i] and t[col] is not None]
        return dict(zip(idx,
                        adjust_pvalues([raw[i][col].p_value for i in idx], cfg.correction)))  # type: ignore[union-attr]

    per = [adjust(0), adjust(1), adjust(2)]
    idx = [i for i in range(len(raw)) if family[i]]
    iut = dict(zip(idx, adjust_pvalues([max(t.p_value for t in raw[i] if t is not None) for i in idx],
                                       cfg.correction)))  # fmt: skip
    out = []
    for i, (vb, vr, vs) in enumerate(raw):
        out.append(_Tests(vb, vr, vs, per[0].get(i, vb.p_value), None if vr is None else per[1].get(i, vr.p_value),
                          None if vs is None else per[2].get(i, vs.p_value), iut.get(i)))  # fmt: skip
    return out


def _verdict(c: ArmOutcomes, b: ArmOutcomes, r: ArmOutcomes | None, s: ArmOutcomes | None, t: _Tests,
             cfg: GateConfig, level: float, flags: tuple[str, ...], metric: str = "task",
             task_mean: float | None = None, pairings: tuple[ReferencePairing, ...] = ()
             ) -> CandidateVerdict:  # fmt: skip
    """One candidate's verdict. With ``metric="continuous"`` the arms' ``task`` are their scores and ``cfg`` carries
    the score-unit thresholds; ``task_mean`` is then the task metric's mean, given by the caller."""
    hib = b.higher_is_better
    beats_b, note_b = _beats(t.vs_b, t.adj_b, hib, cfg, metric)
    parts = [_part(t.vs_b, t.adj_b, "baseline", note_b, " pts", cfg, metric)]
    beats_r, control_ok, missing_control = False, True, False
    if t.vs_r is not None and r is not None:
        beats_r, note_r = _beats(t.vs_r, t.adj_r, hib, cfg, metric)  # type: ignore[arg-type]
        parts[0] += " and " + _part(t.vs_r, t.adj_r, r.name, note_r, "", cfg, metric)  # type: ignore[arg-type]
        control_ok = beats_r
    elif cfg.require_control:
        parts.append("no random control evaluated")
        control_ok, missing_control = False, True
    else:
        parts.append("no random control evaluated (not required)")
    beats_s: bool | None = None
    if t.vs_s is not None and s is not None:
        beats_s, note_s = _beats(t.vs_s, t.adj_s, hib, cfg, metric)  # type: ignore[arg-type]
        parts[0] += " and " + _part(t.vs_s, t.adj_s, s.name, note_s, "", cfg, metric)  # type: ignore[arg-type]
    g_delta, g_test, g_ok = None, None, True
    tol = f"{cfg.guard_tolerance * 100:.1f}"
    if c.guard_skipped:
        g_ok = None
        parts.append(f"IFEval guard not evaluated: {c.guard_skipped}")
    elif b.guard is None:
        parts.append("IFEval guard not evaluated")
    elif c.guard is None:
        g_ok = False
        parts.append("IFEval guard missing for this candidate")
    else:
        g_ok, g_delta, g_test = guard_check(c.guard, b.guard, cfg)
        if g_delta < -cfg.guard_tolerance - _EPS:
            parts.append(f"IFEval {pts(g_delta)} exceeds {tol}")
        elif g_test.p_value < cfg.guard_alpha:
            parts.append(f"IFEval {pts(g_delta)} significant drop ({fmt_p(g_test.p_value)})")
        else:
            parts.append(f"IFEval {pts(g_delta)} within {tol}")
    joint_ok = t.adj is None or t.adj < cfg.alpha
    if beats_b and control_ok and beats_s is not False and not joint_ok:
        parts.append(f"{cfg.correction}-adjusted p over candidates "
                     f"{fmt_p(t.adj)} not below alpha")  # type: ignore[arg-type]
    passed = bool(beats_b and control_ok and beats_s is not False and g_ok and joint_ok and not flags
                  and not c.is_control)
    # Power: what this n can detect and what n would detect min_effect, against every reference.
    refs = [(x, tt) for x, tt in ((b, t.vs_b), (r, t.vs_r), (s, t.vs_s)) if x is not None and tt is not None]
    powers = [_power(c, x, tt, cfg, level) for x, tt in refs]
    mde: float | None = None
    n_needed: int | None = None
    if all(pw is not None for pw in powers):  # else unknown: some reference's differences show no spread
        mde, needed = (max(v) for v in zip(*powers))  # type: ignore[misc]
        # capped (an alpha so small that no n reaches the power gives inf): 10**9 documents reads as "unreachable"
        n_needed = 10**9 if not math.isfinite(needed) else int(min(math.ceil(needed - 1e-9), 10**9))
    upper = _gain(t.vs_b, hib)[1]
    explained_by, why = None, ""
    if flags:
        verdict, why = "reject", "canary failed: " + "; ".join(flags)
    elif c.is_control:
        verdict = "reject"
    elif g_ok is False:
        verdict, why = "reject", "the IFEval guard fails"
    elif missing_control:
        verdict, why = "reject", "a random control is required"
    elif upper < cfg.min_effect - _EPS:
        verdict, why = "reject", (f"the gain's upper bound {fmt_gain(upper, metric)} is below min_effect "
                                  f"{_threshold(cfg.min_effect, metric)}")
    else:
        verdict = "promote" if passed else "hold"
        for x, tt, ok in ((r, t.vs_r, beats_r), (s, t.vs_s, beats_s)):
            if x is not None and tt is not None and not ok and _gain(tt, hib)[1] < cfg.min_effect - _EPS:
                explained_by = x.name
                what = "a global rescale" if x is s else f"the random control {x.name}"
                bound = fmt_gain(_gain(tt, hib)[1], metric)
                verdict, why = "reject", f"{what} explains this gain (upper bound {bound} vs it)"
                break
        if verdict == "hold":
            why = (f"held for evidence: needs ~{n_needed} documents (MDE at {t.vs_b.n}: {fmt_gain(mde, metric)})"
                   if mde is not None else f"held for evidence: {NO_SPREAD}")
    # first match wins: a candidate rejected by rule 2 (a significant gain too small to be worth having) is not
    # eligible either, so "passed" and the verdict never disagree and only a "promote" verdict can be promoted
    passed = passed and verdict == "promote"
    if c.guard_skipped and verdict != "reject":
        raise ValueError(f"candidate {c.name!r}: its guard was skipped ({c.guard_skipped}) but its task evidence "
                         f"does not reject it (verdict {verdict} with a passing guard); evaluate its guard")
    body = "; ".join(parts)
    reason = f"{c.name} {body}" + (f"; {verdict}: {why}" if why else "")
    if c.is_control:  # a control can be listed for its numbers but is never eligible
        reason = f"{c.name} is a random control, never promoted ({body})"
    return CandidateVerdict(c.name, c.policy, _mean(c.task) if task_mean is None else task_mean, t.vs_b, t.vs_r,
                            None if r is None else r.name, g_delta,
                            g_test, beats_b, beats_r, g_ok, passed, reason, verdict, t.vs_b.n, t.vs_b.n_a_only,
                            t.vs_b.n_b_only, upper, t.vs_s, None if t.vs_s is None else s.name, beats_s, explained_by,
                            t.adj, t.adj_b, t.adj_r, t.adj_s, mde, n_needed,
                            c.guard_skipped or None, pairings)  # type: ignore[arg-type,union-attr]  # fmt: skip


def decide(
    baseline: ArmOutcomes,
    candidates: Sequence[ArmOutcomes],
    controls: Sequence[ArmOutcomes],
    cfg: GateConfig,
    *,
    scalar_control: ArmOutcomes | None = None,
    zero_rebuild: ArmOutcomes | None = None,
    bare_base: ArmOutcomes | None = None,
    decision: DecisionConfig | None = None,
) -> Decision:
    """Apply the gate to every candidate, give each a verdict and promote at most one (module docstring).

    Args:
        baseline: The unedited adapter.
        candidates: Edited adapters; any with ``is_control=True`` get a verdict but are never promoted.
        controls: Random controls (``is_control=True``); the best by task mean is the reference.
        cfg: Thresholds.
        scalar_control: Calibrated global scalar (EXTENSIONS.md §8.3); every other candidate must beat it. It
            may also be among ``candidates`` (same arm), and is then promoted when it wins.
        zero_rebuild: Zero-rebuild canary (σ unchanged through the write path); must match the baseline.
        bare_base: The base model without the adapter; the baseline must differ from it.
        decision: Which values decide (default: the task metric); ``metric="continuous"`` needs ``scores`` on the
            baseline, every candidate, control and the scalar.

    Returns:
        A :class:`Decision` with one verdict per candidate, in input order.

    Raises:
        ValueError: misaligned outcome lengths, duplicate names, mixed metric directions, a wrong
            ``is_control`` flag on the baseline or a control, or ``metric="continuous"`` with an arm without scores.
    """
    extras = {"scalar_control": scalar_control, "zero_rebuild": zero_rebuild, "bare_base": bare_base}
    _check_inputs(baseline, candidates, controls, extras)
    decision = decision or DecisionConfig()
    metric = decision.metric
    hib = baseline.higher_is_better
    sign = 1.0 if hib else -1.0
    # the best random control by the task metric in either mode: "the control" is the same arm whatever decides
    best_r = min(controls, key=lambda r: (-sign * _mean(r.task), r.name)) if controls else None
    record, flags = canaries(baseline, zero_rebuild, bare_base, cfg.canary_tolerance)  # on the 0/1 outcomes always
    family = [not c.is_control for c in candidates]
    m = max(1, sum(family))
    level = cfg.alpha if cfg.correction == "none" else cfg.alpha / m
    pairings = [_pairings(c, [baseline, best_r, scalar_control]) for c in candidates]
    means, base_mean = [_mean(c.task) for c in candidates], _mean(baseline.task)  # the task metric's, in both modes
    tcfg = cfg
    if metric == "continuous":
        arms = [a for a in (baseline, *candidates, *controls, scalar_control) if a is not None]
        lacking = [a.name for a in arms if a.scores is None]
        if lacking:
            raise ValueError(f"decision.metric is continuous but arm(s) {', '.join(lacking)} have no continuous "
                             "scores (the benchmark has none); decide on metric: task")
        swap = {a.name: dataclasses.replace(a, task=list(a.scores)) for a in arms}  # type: ignore[arg-type]
        baseline, candidates = swap[baseline.name], [swap[c.name] for c in candidates]
        best_r = None if best_r is None else swap[best_r.name]
        scalar_control = None if scalar_control is None else swap[scalar_control.name]
        # the score-unit thresholds stand in for the task's (not validated against GateConfig's 0..1 bounds)
        tcfg = cfg.model_copy(update={"min_effect": decision.min_effect, "min_delta": decision.min_delta})
    tests = _corrected([_compare(c, baseline, best_r, scalar_control, tcfg, metric) for c in candidates], family, tcfg)
    verdicts = tuple(_verdict(c, baseline, best_r, scalar_control, t, tcfg, level, flags, metric, mean, pair)
                     for c, t, mean, pair in zip(candidates, tests, means, pairings))  # fmt: skip
    promoted, verdict, sentence, n_needed = summarize(verdicts, flags, hib)
    return Decision(promoted, verdicts, sentence, cfg, baseline.name, base_mean, hib, verdict, flags,
                    record, n_needed, decision)  # fmt: skip


def summarize(verdicts: Sequence[CandidateVerdict], flags: Sequence[str] = (), higher_is_better: bool = True
              ) -> tuple[str | None, Verdict, str, int | None]:  # fmt: skip
    """The decision's winner, verdict, sentence and documents needed from its candidates' verdicts.

    The one place a decision's sentence is composed (:func:`decide`, and a sequential run's decision with the
    candidates stopped for futility added). The sentence is the winner's reason ending "→ promoted", or "no candidate
    promoted: " and every candidate's reason; only a HOLD ends with the adapter's tail "— adapter held for evidence
    (the held candidates): needs ~N documents", said of the adapter and naming the held candidates, so it never
    reads as the verdict of whichever candidate happens to be listed last (a guard-rejected one, say).

    Args:
        verdicts: Every candidate's verdict, in the order the sentence lists them.
        flags: Canary failures (any flag: nothing is promoted or held).
        higher_is_better: Direction of the task metric (the winner has the best mean).

    Returns:
        ``(promoted name or None, verdict, sentence, n_needed)``; ``n_needed`` only for a HOLD: the fewest
        documents that would resolve one held candidate.
    """
    sign = 1.0 if higher_is_better else -1.0
    passing = [v for v in verdicts if v.passed and not flags]
    # Round the mean so equal scores computed in different float orders still tie.
    winner = min(passing, key=lambda v: (-sign * round(v.task_mean, 12), v.vs_baseline.p_value, v.name),
                 default=None)  # fmt: skip
    held = [v for v in verdicts if v.verdict == "hold"]
    direction = "" if higher_is_better else " (task metric: lower is better)"
    if winner is not None:
        others = [v.name for v in passing if v is not winner]
        also = f" (also passed: {', '.join(others)})" if others else ""
        return winner.name, "promote", f"{winner.reason} → promoted{also}{direction}", None
    if not verdicts:
        return (
            None,
            "reject",
            "no candidate promoted: " + ("; ".join(flags) if flags else "no candidates evaluated"),
            None,
        )
    sentence = "no candidate promoted: " + " | ".join(v.reason for v in verdicts) + direction
    if not held or flags:
        return None, "reject", sentence, None
    known = [v.n_needed for v in held if v.n_needed is not None]
    if not known:
        names = ", ".join(v.name for v in held)
        return None, "hold", f"{sentence} — adapter held for evidence ({names}): {NO_SPREAD}", None
    n_needed = min(known)
    names = ", ".join(v.name for v in held if v.n_needed == n_needed)
    return None, "hold", f"{sentence} — adapter held for evidence ({names}): needs ~{n_needed} documents", n_needed


def guard_skips(task_only: Decision) -> dict[str, str]:
    """The candidates whose guard cannot change their verdict, from a decision on task evidence alone.

    A candidate that ``task_only`` rejects is rejected whatever its guard outcome (module docstring, "Guarding only
    what can matter"), so deciding with its guard skipped gives the same verdicts and the same promoted candidate
    as deciding with it evaluated. Every other candidate (promoted or held with a passing guard) needs its guard.

    Args:
        task_only: :func:`decide` (or a sequential run's decision) on the task outcomes with no guard outcomes at
            all: the baseline's and every candidate's ``guard`` None.

    Returns:
        Candidate name -> :data:`REJECTED_ON_TASK_EVIDENCE` for each candidate whose guard may be skipped.

    Raises:
        ValueError: ``task_only`` weighed guard outcomes (it must not: a failing guard would hide a task verdict).
    """
    if any(v.guard_test is not None or v.guard_ok is False for v in task_only.verdicts):
        raise ValueError("guard_skips needs a decision made on task evidence alone: pass every arm with guard=None")
    return {v.name: REJECTED_ON_TASK_EVIDENCE for v in task_only.verdicts if v.verdict == "reject"}
