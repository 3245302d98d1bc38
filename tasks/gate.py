"""The promotion gate (ARCHITECTURE.md, "The gate, precisely"): pure, no I/O, every number recorded.

For the task metric m with per-document outcomes, a candidate c (any non-control policy), the baseline b
(the unedited adapter) and the best random control r (best task mean among the evaluated seeds):

1. ``m(c) − m(b) > min_delta`` and a one-sided paired test of c > b has ``p < alpha``;
2. ``m(c) − m(r) > min_delta`` and the same test of c > r (skipped, and said so, only when no control was
   evaluated and ``require_control`` is False);
3. guard: IFEval prompt-level strict accuracy ``IFEval(c) ≥ IFEval(b) − guard_tolerance`` and no drop that
   a one-sided paired test finds significant at ``guard_alpha``;
4. among candidates passing all three, the best m(c) is promoted (ties: lower p vs baseline, then name).

Differences are fractions of the metric's 0..1 scale (``min_delta = 0.01`` is one point); sentences print
them ×100 as "pts". For lower-is-better metrics "better" means lower, and the paired tests use
``alternative="less"``. Each candidate is tested at ``alpha`` on its own (no multiplicity correction).
Tests come from :mod:`tasks.stats` (exact McNemar for 0/1 outcomes, paired bootstrap otherwise).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.stats import PairedTest, as_outcomes, paired_test

_EPS = 1e-12  # float slack on threshold comparisons, so a drop of exactly the tolerance is "within"


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
    """

    name: str
    policy: str
    is_control: bool
    task: list[float]
    guard: list[float] | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"arm name must be a non-empty string, got {self.name!r}")
        as_outcomes(self.task, f"arm {self.name!r} task")
        if self.guard is not None:
            as_outcomes(self.guard, f"arm {self.name!r} guard")


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
        beats_baseline: Condition 1 holds.
        beats_control: Condition 2 holds (False when there was no control).
        guard_ok: Condition 3 holds (True when the baseline has no guard outcomes: nothing to compare).
        passed: Eligible for promotion.
        reason: One readable line with the numbers behind the verdict.
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
    guard_ok: bool
    passed: bool
    reason: str


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
    """

    promoted: str | None
    verdicts: tuple[CandidateVerdict, ...]
    sentence: str
    config: GateConfig
    baseline: str
    baseline_task_mean: float
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (plain dicts, lists, str, float, int, bool, None) for the registry."""
        return {
            "promoted": self.promoted,
            "sentence": self.sentence,
            "baseline": self.baseline,
            "baseline_task_mean": self.baseline_task_mean,
            "higher_is_better": self.higher_is_better,
            "config": self.config.model_dump(mode="json"),
            "verdicts": [dataclasses.asdict(v) for v in self.verdicts],
        }


# ----------------------------------------------------------------------------------------------- format
def pts(x: float, unit: str = "") -> str:
    """A fraction as signed points with one decimal: 0.031 → "+3.1", −0.005 → "−0.5"."""
    v = round(x * 100, 1)
    return f"{'−' if v < 0 else '+'}{abs(v):.1f}{unit}"


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


def _test(a: Sequence[float], b: Sequence[float], alternative: str, cfg: GateConfig) -> PairedTest:
    return paired_test(a, b, alternative=alternative, n_boot=cfg.n_boot, seed=cfg.seed,  # type: ignore[arg-type]
                       confidence=cfg.confidence)  # fmt: skip


def _beats(test: PairedTest, hib: bool, cfg: GateConfig) -> tuple[bool, str]:
    """Condition "better by more than min_delta and significant"; returns (ok, failure note or "")."""
    gain = test.delta if hib else -test.delta
    if not gain > cfg.min_delta + _EPS:
        return False, "no gain" if cfg.min_delta == 0 else f"not above min_delta {cfg.min_delta * 100:.1f}"
    if not test.p_value < cfg.alpha:
        return False, "not significant"
    return True, ""


def _part(test: PairedTest, what: str, note: str, unit: str) -> str:
    """"+3.1 pts vs baseline (p=0.01)" with an optional failure note inside the parentheses."""
    inner = fmt_p(test.p_value) + (f", {note}" if note else "")
    return f"{pts(test.delta, unit)} vs {what} ({inner})"


def _check_inputs(baseline: ArmOutcomes, candidates: Sequence[ArmOutcomes], controls: Sequence[ArmOutcomes]) -> None:
    arms = [("baseline", baseline), *(("candidate", c) for c in candidates), *(("control", r) for r in controls)]
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
        if len(arm.task) != n_task:
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


def _verdict(c: ArmOutcomes, b: ArmOutcomes, r: ArmOutcomes | None, cfg: GateConfig) -> CandidateVerdict:
    hib = b.higher_is_better
    alt = "greater" if hib else "less"
    vs_b = _test(c.task, b.task, alt, cfg)
    beats_b, note_b = _beats(vs_b, hib, cfg)
    parts = [_part(vs_b, "baseline", note_b, " pts")]
    vs_r, beats_r = None, False
    if r is not None:
        vs_r = _test(c.task, r.task, alt, cfg)
        beats_r, note_r = _beats(vs_r, hib, cfg)
        parts[0] += " and " + _part(vs_r, r.name, note_r, "")
        control_ok = beats_r
    elif cfg.require_control:
        parts.append("no random control evaluated")
        control_ok = False
    else:
        parts.append("no random control evaluated (not required)")
        control_ok = True
    g_delta, g_test, g_ok = None, None, True
    tol = f"{cfg.guard_tolerance * 100:.1f}"
    if b.guard is None:
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
    passed = beats_b and control_ok and g_ok
    body = "; ".join(parts)
    reason = f"{c.name} {body}"
    if c.is_control:  # a control can be listed for its numbers but is never eligible
        passed, reason = False, f"{c.name} is a random control, never promoted ({body})"
    return CandidateVerdict(c.name, c.policy, _mean(c.task), vs_b, vs_r, None if r is None else r.name, g_delta,
                            g_test, beats_b, beats_r, g_ok, passed, reason)  # fmt: skip


def decide(
    baseline: ArmOutcomes,
    candidates: Sequence[ArmOutcomes],
    controls: Sequence[ArmOutcomes],
    cfg: GateConfig,
) -> Decision:
    """Apply the gate to every candidate and promote at most one (see the module docstring).

    Args:
        baseline: The unedited adapter.
        candidates: Edited adapters; any with ``is_control=True`` get a verdict but are never promoted.
        controls: Random controls (``is_control=True``); the best by task mean is the reference.
        cfg: Thresholds.

    Returns:
        A :class:`Decision` with one verdict per candidate, in input order.

    Raises:
        ValueError: misaligned outcome lengths, duplicate names, mixed metric directions, or a wrong
            ``is_control`` flag on the baseline or a control.
    """
    _check_inputs(baseline, candidates, controls)
    hib = baseline.higher_is_better
    sign = 1.0 if hib else -1.0
    best_r = min(controls, key=lambda r: (-sign * _mean(r.task), r.name)) if controls else None
    verdicts = tuple(_verdict(c, baseline, best_r, cfg) for c in candidates)
    passing = [v for v in verdicts if v.passed]
    # Round the mean so equal scores computed in different float orders still tie.
    winner = min(passing, key=lambda v: (-sign * round(v.task_mean, 12), v.vs_baseline.p_value, v.name),
                 default=None)  # fmt: skip
    direction = "" if hib else " (task metric: lower is better)"
    if winner is not None:
        others = [v.name for v in passing if v is not winner]
        also = f" (also passed: {', '.join(others)})" if others else ""
        sentence = f"{winner.reason} → promoted{also}{direction}"
    elif not verdicts:
        sentence = "no candidate promoted: no candidates evaluated"
    else:
        sentence = "no candidate promoted: " + " | ".join(v.reason for v in verdicts) + direction
    return Decision(None if winner is None else winner.name, verdicts, sentence, cfg, baseline.name,
                    _mean(baseline.task), hib)  # fmt: skip
