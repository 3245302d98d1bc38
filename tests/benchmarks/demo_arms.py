"""The arms of a real decision on a demo adapter, built as the nightly builds them (for the evaluation benchmarks).

:func:`demo_decision_arms` trains one adapter of the demo fleet with the demo's own trainer
(:func:`tasks.demo.demo_fleet.build_demo_fleet`, cached under ``<work>/fleet/``), reads the demo's calibration file of
that adapter (held-out rows of its family's generator) and writes the candidates of a first night's decision with the
product's functions, in the order :func:`flows.refine.candidates.make_candidates` calls them: the arms from
:func:`tasks.decision.arms.plan_arms` (the configured policies, the random controls at their seeds, the global
scalar, the zero rebuild, the bare base) cut by the edit budget with no history (a first night keeps every edit),
what is left to write from :func:`tasks.surgery.write_plan.plan_writes`, ONE decomposition and calibration pass
(:func:`tasks.surgery.edit.prepare`), γ on the held-out rows
(:func:`tasks.surgery.global_scalar.select_gamma_calib_loss`) and every candidate through
:func:`tasks.surgery.edit.write_candidate`. No registry: the candidates and the prepared stage are cached on disk
under their keys (:func:`tasks.keys.candidate_key`, :func:`tasks.keys.prepared_key`), so a re-run with the same
adapter, calibration and settings writes nothing and runs no model for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spectral_surgery.tasks.adapter_io import MANIFEST_NAME
from spectral_surgery.tasks.decision.arms import BASELINE, plan_arms
from spectral_surgery.tasks.demo.demo_fleet import DEMO_FLEET, DemoAdapterSpec
from spectral_surgery.tasks.run_config import RunConfig


@dataclass(frozen=True)
class StoredCandidate:
    """A candidate already on disk under its key (what :func:`tasks.surgery.write_plan.plan_writes` asks of one)."""

    artifact_uri: str


@dataclass(frozen=True)
class DemoDecisionArms:
    """The subjects of one decision on a demo adapter.

    Attributes:
        adapter: The demo adapter's name (:data:`tasks.demo.demo_fleet.DEMO_FLEET`).
        task_family: Its task family.
        subjects: Subject name -> PEFT adapter dir (None: the bare base), :data:`tasks.decision.arms.BASELINE` first,
            then the planned arms in plan order; what :meth:`tasks.evaluation.evaluate.LmEvalEvaluator.evaluate` takes.
        roles: Subject name -> role (``baseline`` or the :class:`tasks.decision.arms.Arm` role).
        steps: Training steps of the adapter (0: saved untrained).
        losses: Its per-step training losses (from the fleet's cache marker).
        n_calib: Calibration examples of the sensitivities; ``n_holdout`` the held-out ones γ was chosen on.
        n_holdout: Held-out calibration examples (0: no global scalar, see ``skipped``).
        gamma: The global scalar's γ, from its edit manifest (None: no global scalar arm).
        written: Candidates written this call (0 on a cached re-run).
        skipped: Arm name -> why it is not among the subjects.
    """

    adapter: str
    task_family: str
    subjects: dict[str, Path | None]
    roles: dict[str, str]
    steps: int
    losses: tuple[float, ...]
    n_calib: int
    n_holdout: int
    gamma: float | None
    written: int
    skipped: dict[str, str]


def demo_adapter_for(benchmark: str, profile: str = "offline", fleet: Sequence[DemoAdapterSpec] = DEMO_FLEET) -> str:
    """The first trained demo adapter (fleet order) whose family the nightly scores on ``benchmark``.

    Raises:
        ValueError: No trained demo adapter's family is scored on ``benchmark`` under ``profile``.
    """
    from spectral_surgery.tasks.evaluation.benchmarks import resolve_benchmark

    for spec in fleet:
        if spec.scaled_from is None and not spec.untrained and \
                resolve_benchmark(spec.task_family, profile=profile).name == benchmark:
            return spec.name
    raise ValueError(f"no trained demo adapter is scored on {benchmark!r} under the {profile} profile; "
                     f"the fleet's families are {sorted({s.task_family for s in fleet})}")


def demo_decision_arms(base_dir: Path, base_model_id: str, work: Path, name: str, config: RunConfig, *, model,
                       tokenizer, steps: int | None = None, n_train: int | None = None,
                       fleet: Sequence[DemoAdapterSpec] = DEMO_FLEET,
                       on_progress: Callable[[str], None] | None = None) -> DemoDecisionArms:  # fmt: skip
    """Train (or reuse) the demo adapter ``name`` and write (or reuse) the candidates of its decision under ``config``.

    Args:
        base_dir: The base model directory the adapter is trained on.
        base_model_id: The base's registry id (keys the prepared stage, as the nightly's).
        work: The cache: ``fleet/`` (the trained adapter and its calibration file), ``prepared/``, ``candidates/``.
        name: A demo adapter of ``fleet``.
        config: The run configuration (policies, seeds, ladder, calibration settings), e.g.
            :func:`flows.demo.demo_config`; the adapter's own overrides are merged as the nightly merges them.
        model: The loaded base (eval mode): calibrated through and γ chosen with, only when a candidate is written.
        tokenizer: Its tokenizer.
        steps: Training steps (None: the spec's).
        n_train: Training rows (None: the spec's).
        fleet: The demo fleet's specs.
        on_progress: Called with one line of training progress.

    Returns:
        A :class:`DemoDecisionArms`.
    """
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from spectral_surgery.tasks.decision.edit_budget import choose_edits
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet, fleet_specs
    from spectral_surgery.tasks.keys import candidate_key, prepared_key
    from spectral_surgery.tasks.surgery.calibration import calibration_sha256, load_calibration
    from spectral_surgery.tasks.surgery.edit import prepare, write_candidate
    from spectral_surgery.tasks.surgery.global_scalar import holdout_calib_config, select_gamma_calib_loss
    from spectral_surgery.tasks.surgery.prep_store import load_prepared, save_prepared
    from spectral_surgery.tasks.surgery.write_plan import fresh_holdout, no_holdout_reason, plan_writes

    work = Path(work).absolute()
    built = build_demo_fleet(base_dir, work, steps=steps, n_train=n_train, fleet=fleet_specs([name], fleet),
                             on_progress=on_progress)
    entry = next(b for b in built if b["name"] == name)
    surgery = config.surgery_for(entry["overrides"])
    arms = plan_arms(config, surgery)
    kept, skipped = choose_edits([a.policy for a in arms if a.role == "policy"], [], entry["task_family"],
                                 config.edit_budget)  # a first night: no past decisions of the family
    arms = [a for a in arms if a.role != "policy" or a.policy in kept]
    source = entry["calib_path"]
    examples = load_calibration(source, surgery.calib)
    holdout: list = []
    if any(a.role == "scalar_control" for a in arms):
        try:
            holdout = fresh_holdout(examples, load_calibration(source, holdout_calib_config(surgery)))
        except ValueError:  # the file has no rows left after the sensitivity slice
            holdout = []
        if not holdout:
            skipped["global_scalar"] = no_holdout_reason(str(source), surgery.calib.start, surgery.calib.n_samples,
                                                         surgery.global_scalar.holdout)
            arms = [a for a in arms if a.role != "scalar_control"]
    pkey = prepared_key(adapter_content_sha256(entry["path"]), base_model_id, None, surgery,
                        calibration_sha256(examples))
    holdout_sha = calibration_sha256(holdout) if holdout else None
    keys = {a.name: candidate_key(pkey, surgery, a.policy, a.seed, holdout_sha256=holdout_sha) for a in arms}
    out = {a.name: work / "candidates" / f"{a.name}-{keys[a.name][:16]}" for a in arms}
    plan = plan_writes(arms, {(a.policy, a.seed): StoredCandidate(str(out[a.name])) for a in arms
                              if a.role != "bare_base" and out[a.name].is_dir()})
    if plan.writes:
        prep_file = work / "prepared" / f"{pkey[:16]}.safetensors"
        prepared = load_prepared(prep_file, entry["path"], surgery.targets)
        if prepared is None:
            prepared = prepare(model, tokenizer, entry["path"], examples, surgery)
            save_prepared(prepared, prep_file)
        selection = None
        if plan.needs_gamma:
            selection = select_gamma_calib_loss(model, tokenizer, prepared, holdout, surgery,
                                                sensitivity_examples=examples)
        for arm in plan.writes:
            write_candidate(prepared, arm.policy, surgery, out[arm.name], seed=arm.seed,
                            selection=selection if arm.role == "scalar_control" else None)
    scalar = [out[a.name] for a in arms if a.role == "scalar_control"]
    gamma = json.loads((scalar[0] / MANIFEST_NAME).read_text(encoding="utf-8"))["gamma"] if scalar else None
    subjects: dict[str, Path | None] = {BASELINE: Path(entry["path"])}
    roles = {BASELINE: "baseline"}
    for a in arms:
        subjects[a.name] = None if a.role == "bare_base" else out[a.name]
        roles[a.name] = a.role
    return DemoDecisionArms(name, entry["task_family"], subjects, roles, len(entry["losses"]), tuple(entry["losses"]),
                            len(examples), len(holdout), gamma, len(plan.writes), skipped)

