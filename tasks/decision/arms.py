"""The arms of one decision: which subjects a visit plans, the gate's inputs from their outcomes, the guard plan.

Pure (no Prefect, no registry): the per-adapter flow (:mod:`flows.refine_adapter`) plans its arms here, scores them
and hands their per-document outcomes back here to be weighed; the dashboard names stored candidates by the same
rule (:func:`arm_name`).

An arm is a policy under a seed in a role (:class:`Arm`); its name is the policy, or ``policy-s<seed>`` for a random
control (one arm per control seed). Besides the arms every decision has the :data:`BASELINE` (the unedited adapter).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from spectral_surgery.tasks.decision.gate import (
    REJECTED_ON_TASK_EVIDENCE,
    ArmOutcomes,
    Decision,
    DecisionConfig,
    decide,
    guard_skips,
)
from spectral_surgery.tasks.decision.sequential import sequential_decision
from spectral_surgery.tasks.run_config import RunConfig

BASELINE = "baseline"
BARE_BASE = "bare_base"  # the subject name (and candidate policy) of the base model without the adapter
RANDOM_INDEX = "random_index"  # the random control: the only policy the ladder runs at several seeds


def arm_name(policy: str, seed: int, role: str) -> str:
    """An arm's name: ``policy-s<seed>`` for a random control (one arm per seed), else the policy."""
    return f"{policy}-s{seed}" if role == "random_control" else policy


def stored_arm_name(policy: str, seed: int) -> str:
    """The arm name of a stored candidate, which records its policy and seed but not its role: the random controls
    the ladder plans are ``random_index`` (:func:`plan_arms`), so its candidates are named by seed."""
    return arm_name(policy, seed, "random_control" if policy == RANDOM_INDEX else "policy")


@dataclass(frozen=True)
class Arm:
    """One planned subject besides the baseline: a policy under a seed, a control of the ladder, or the bare base.

    Roles: ``policy`` (a configured edit), ``random_control`` (``random_index``, one per control seed),
    ``scalar_control`` (the calibrated global scalar: a control every policy must beat, promotable itself),
    ``canary`` (the zero rebuild: must match the baseline), ``bare_base`` (the base model without the adapter:
    the baseline must differ from it; no artifact).
    """

    policy: str
    seed: int
    role: str

    @property
    def is_control(self) -> bool:
        """Never promoted."""
        return self.role in ("random_control", "canary", "bare_base")

    @property
    def name(self) -> str:
        return arm_name(self.policy, self.seed, self.role)


def plan_arms(config: RunConfig, surgery) -> list[Arm]:
    """The configured policies at the calibration seed, ``random_index`` at each control seed, and the ladder."""
    from spectral_surgery.tasks.surgery.policies import (
        get_policy,
    )  # the policies (and torch) only where arms are planned

    arms = []
    for p in surgery.policies:
        spec = get_policy(p)
        arms.append(Arm(spec.name, surgery.calib.seed, "random_control" if spec.is_control else "policy"))
    arms += [Arm(RANDOM_INDEX, s, "random_control") for s in surgery.random_control_seeds]
    if config.ladder.global_scalar:
        arms.append(Arm("global_scalar", surgery.calib.seed, "scalar_control"))
    if config.ladder.zero_rebuild:
        arms.append(Arm("zero_rebuild", surgery.calib.seed, "canary"))
    if config.ladder.bare_base:
        arms.append(Arm(BARE_BASE, 0, "bare_base"))
    return arms


def gate_inputs(arms: list[Arm], ids: Collection[str], task_out: dict[str, list], guard_out: dict[str, list] | None,
                higher_is_better: bool, skipped: dict[str, str] | None = None,
                task_scores: dict[str, list] | None = None):  # fmt: skip
    """The gate's arms from the stored outcomes: ``(baseline, candidates, random controls, extras)``.

    Args:
        arms: The planned arms; only those named in ``ids`` (the arms with a candidate) are weighed.
        ids: The names of the arms that have a candidate.
        task_out: Subject name -> per-document task outcomes (the baseline's under :data:`BASELINE`).
        guard_out: Subject name -> per-prompt guard outcomes (None: no guard evaluated).
        higher_is_better: Direction of the task metric.
        skipped: The candidates whose guard was deliberately not evaluated (:func:`tasks.decision.gate.guard_skips`).
        task_scores: The arms' continuous per-document scores on the task benchmark (where they have them).

    Returns:
        ``(baseline, candidates, controls, extras)`` with ``extras`` the keyword arms of
        :func:`tasks.decision.gate.decide` (``scalar_control``, ``zero_rebuild``, ``bare_base``; None if absent).
    """
    g, skipped, sc = guard_out or {}, skipped or {}, task_scores or {}
    by_name = {a.name: a for a in arms if a.name in ids}
    base = ArmOutcomes(BASELINE, "baseline", False, task_out[BASELINE], g.get(BASELINE), higher_is_better,
                       scores=sc.get(BASELINE))
    arm = {n: ArmOutcomes(n, a.policy, a.is_control, task_out[n],
                          None if a.role in ("canary", "bare_base") else g.get(n), higher_is_better,
                          guard_skipped=skipped.get(n) if n not in g and a.role in ("policy", "scalar_control")
                          else None, scores=sc.get(n))
           for n, a in by_name.items()}  # the canaries are checked on the task benchmark only
    role = {n: a.role for n, a in by_name.items()}
    one = {r: next((arm[n] for n in arm if role[n] == r), None) for r in ("scalar_control", "canary", "bare_base")}
    candidates = [arm[n] for n in arm if role[n] in ("policy", "scalar_control")]
    controls = [arm[n] for n in arm if role[n] == "random_control"]
    extras = {"scalar_control": one["scalar_control"], "zero_rebuild": one["canary"], "bare_base": one["bare_base"]}
    return base, candidates, controls, extras


def run_gate(config: RunConfig, sequential: dict | None, base: ArmOutcomes, candidates: list[ArmOutcomes],
             controls: list[ArmOutcomes], extras: dict[str, ArmOutcomes | None],
             decision: DecisionConfig | None = None) -> Decision:  # fmt: skip
    """The decision: the fixed gate (on ``decision``'s metric), or a sequential run's at the look where it stopped
    (task metric only: the run config refuses a continuous metric with sequential looks)."""
    if sequential is None:
        return decide(base, candidates, controls, config.gate, **extras, decision=decision)
    return sequential_decision(config.gate, sequential, base, candidates, controls, extras)


def guard_plan(config: RunConfig, arms: list[Arm], ids: Collection[str], task_out: dict[str, list],
               higher_is_better: bool, sequential: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """Which arms the IFEval guard scores, and why each other one is not (``RunConfig.guard_arms``).

    ``all``: every candidate and random control (not the canaries, nor a candidate stopped for futility).
    ``promotable``: only the candidates whose verdict the guard can still change: the gate decides on the task
    outcomes alone, and a candidate it rejects there is rejected whatever its guard
    (:func:`tasks.decision.gate.guard_skips`); the random controls are never promoted and their guard is weighed in no
    verdict. So the decision is the one every arm guarded would give. Computed under the gate settings in force,
    so a re-decision under others that needs a guard not scored yet scores it then.

    Args:
        ids: The names of the arms that have a candidate.

    Returns:
        ``(arm names to score besides the baseline, arm name -> why its guard is not evaluated)``; with no arm to
        score, the baseline's guard is not evaluated either (``"baseline"`` is then among the skipped).
    """
    futile = (sequential or {}).get("futile", {})
    present = [a for a in arms if a.name in ids and a.name not in futile]
    if config.guard_arms == "all":
        return [a.name for a in present if a.role in ("policy", "scalar_control", "random_control")], {}
    task_only = run_gate(config, sequential, *gate_inputs(arms, ids, task_out, None, higher_is_better))
    skips = guard_skips(task_only)
    skips.update({a.name: "a random control, never promoted" for a in present if a.role == "random_control"})
    guarded = [a.name for a in present if a.role in ("policy", "scalar_control") and a.name not in skips]
    if not guarded:
        skips[BASELINE] = f"every candidate is {REJECTED_ON_TASK_EVIDENCE}"
    return guarded, skips
