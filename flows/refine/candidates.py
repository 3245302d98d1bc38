"""The candidates of one visit: every planned arm not stored yet is written, the model pass runs only if its result
is not stored (:func:`make_candidates`); and the per-family edit budget's cut of the arms (:func:`apply_edit_budget`).

What to write comes from :mod:`tasks.surgery.write_plan`, every key from :mod:`tasks.keys`; here is the registry
and model I/O around them.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from spectral_surgery.flows import interrupt, stage_hook, worker
from spectral_surgery.flows.refine import logger
from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.decision.arms import Arm
from spectral_surgery.tasks.keys import candidate_key, candidates_key, prepared_key
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.surgery.policies import get_policy
from spectral_surgery.tasks.surgery.write_plan import (arm_ids, candidate_record, fresh_holdout, is_data_free,
                                                       no_holdout_reason,
                                      plan_writes, write_seconds)


@dataclass(frozen=True)
class Candidates:
    """The candidates of one visit: the key of the set, the arm name -> candidate row id of every planned arm,
    arm name -> its own candidate key (:func:`tasks.keys.candidate_key`) and candidate row id -> where its written
    adapter lies (what the evaluation scores, known here without reading the rows again)."""

    key: str
    ids: dict[str, int]
    written: int
    calibrated: bool
    skipped: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    uris: dict[int, str | None] = field(default_factory=dict)


def make_candidates(config: RunConfig, version, adapter, local: Path, arms: list[Arm]) -> Candidates:
    """Write every planned candidate that is not stored yet; the model pass runs only if its result is not stored.

    Each candidate is keyed by what determines it (:func:`tasks.keys.candidate_key`: its policy, seed and the
    settings that policy reads), so a setting only one policy reads rewrites that policy's candidate alone; the
    decomposition and sensitivities by :func:`tasks.keys.prepared_key`, stored once per key in the artifact store, so
    a new policy or another edit setting is written from the stored sensitivities with no forward or backward pass.
    """
    from spectral_surgery.tasks.surgery.calibration import calibration_sha256, load_calibration
    from spectral_surgery.tasks.surgery.edit import prepare, prepare_data_free, write_candidate
    from spectral_surgery.tasks.surgery.global_scalar import holdout_calib_config, select_gamma_calib_loss
    from spectral_surgery.tasks.surgery.prep_store import load_prepared, save_prepared

    reg = worker.registry(config)
    overrides = adapter.config_json or {}
    surgery = config.surgery_for(overrides)
    # Data-free edits (post-hoc reshapes, the zero-rebuild canary) depend on the adapter alone: when every arm
    # to write is one, no calibration source is read and no model runs (the key holds no calibration either).
    data_free = is_data_free(arms)
    source = overrides.get("calib") or config.calib_source
    if not source and not data_free:
        raise ValueError(f"adapter {adapter.name!r} has no calibration source: register it with a calib file "
                         "(config {'calib': 'path.jsonl'}) or set RunConfig.calib_source")
    examples = [] if data_free else load_calibration(source, surgery.calib)
    skipped: dict[str, str] = {}
    holdout = []
    if any(a.role == "scalar_control" for a in arms):
        try:
            holdout = load_calibration(source, holdout_calib_config(surgery))
        except ValueError:  # the same file read above for the sensitivities: here it only has no rows left
            holdout = []
        fresh = fresh_holdout(examples, holdout)
        if len(fresh) < len(holdout):
            logger().info(f"{adapter.name}: {len(holdout) - len(fresh)} held-out calibration row(s) repeat a "
                          f"sensitivity row; γ is chosen on the other {len(fresh)}")
        holdout = fresh
        if not holdout:
            skipped["global_scalar"] = no_holdout_reason(source, surgery.calib.start, surgery.calib.n_samples,
                                                         surgery.global_scalar.holdout)
            arms = [a for a in arms if a.role != "scalar_control"]
    pkey = prepared_key(version.content_sha256, adapter.base_model_id, adapter.base_model_revision, surgery,
                        calibration_sha256(examples))
    holdout_sha = calibration_sha256(holdout) if holdout else None
    keys = {a.name: candidate_key(pkey, surgery, a.policy, a.seed, holdout_sha256=holdout_sha) for a in arms}
    mine = {(a.policy, a.seed, keys[a.name]) for a in arms}  # a stored row counts only under its arm's own key
    rows = reg.list_candidates(version.id)  # read once: the rows written below are added as they are recorded
    plan = plan_writes(arms, {(c.policy, c.seed): c for c in rows if (c.policy, c.seed, c.config_hash) in mine})
    calibrated = False
    log = logger()
    for arm in plan.bare:  # scored with the adapter off: nothing to write
        rows.append(reg.add_candidate(version.id, keys[arm.name], arm.policy, arm.seed, params={}, is_control=True))
    writes = plan.writes
    if writes:
        prep_file = worker.store_dir(config, adapter.name, version.content_sha256, pkey) / "prepared.safetensors"
        prepared = load_prepared(prep_file, local, surgery.targets)
        if prepared is None and data_free:
            prepared = prepare_data_free(local, surgery)
            save_prepared(prepared, prep_file)
            log.info("%s: decomposed %d modules for %d data-free candidate(s): no model, no calibration",
                     adapter.name, len(prepared.modules), len(writes))
        needs_model = plan.needs_model(prepared is not None)
        if prepared is not None:
            log.info("%s: %d new candidate(s) from the stored decomposition and sensitivities", adapter.name,
                     len(writes))
        selection, gamma_seconds = None, None
        if needs_model:
            with worker.model_lock(adapter.base_model_id):
                model, tok = worker.base_model(config, adapter.base_model_id, adapter.base_model_revision)
                if prepared is None:
                    log.info("%s: decomposing and calibrating on %d examples for %d candidates", adapter.name,
                             len(examples), len(writes))

                    def on_batch(done_: int, total: int) -> None:
                        log.info("%s: calibration batch %d/%d", adapter.name, done_, total)
                        stage_hook.reached("calibration")
                        interrupt.check()

                    prepared = prepare(model, tok, local, examples, surgery, on_batch=on_batch)
                    calibrated = True
                    save_prepared(prepared, prep_file)
                    log.info("%s: decomposed %d modules, calibrated on %d examples in %.1fs", adapter.name,
                             len(prepared.modules), prepared.n_examples, prepared.timings.get("calibrate", 0.0))
                if plan.needs_gamma:
                    t_gamma = time.perf_counter()
                    selection = select_gamma_calib_loss(model, tok, prepared, holdout, surgery,
                                                        sensitivity_examples=examples)
                    gamma_seconds = time.perf_counter() - t_gamma
                    log.info("%s: global scalar γ = %g (lowest held-out calibration loss of %s on %d examples)",
                             adapter.name, selection.gamma, list(selection.grid), len(holdout))
        for arm in writes:
            interrupt.check()
            store = worker.store_dir(config, adapter.name, version.content_sha256, keys[arm.name])
            sel = selection if arm.role == "scalar_control" else None
            t_write = time.perf_counter()
            path, manifest = write_candidate(prepared, arm.policy, surgery, store / arm.name, seed=arm.seed,
                                             selection=sel)
            seconds = write_seconds(time.perf_counter() - t_write, prepared, get_policy(arm.policy).needs_data,
                                    gamma_seconds if sel is not None else None)
            rec = candidate_record(manifest, scalar=sel is not None)
            # one transaction per candidate: each is a checkpoint (a run stopped after it reuses it)
            rows.append(reg.add_candidate(version.id, keys[arm.name], arm.policy, arm.seed, params=rec.params,
                                          is_control=arm.is_control, artifact_uri=str(path),
                                          artifact_sha256=adapter_content_sha256(path),
                                          spectrum=rec.spectrum, sensitivity=rec.sensitivity, seconds=seconds))
            stage_hook.reached("editing")
    ids = arm_ids(arms, keys, rows)  # a row recorded this visit comes after the stored one of its key: it wins
    uris = {c.id: c.artifact_uri for c in rows}
    return Candidates(candidates_key(keys), ids, len(plan.missing), calibrated, skipped, keys,
                      {i: uris[i] for i in ids.values()})


def apply_edit_budget(config: RunConfig, reg, adapter, run_id: int, arms: list[Arm]) -> tuple[list[Arm], dict]:
    """The arms left by the per-family edit budget (:mod:`tasks.decision.edit_budget`), and what it chose and why.

    Only configured edits (role ``policy``) are cut; the ladder's controls and canaries always stay. The history
    is past nights' decisions of the adapter's family (:func:`registry.read.edit_history`), never this run's.
    """
    from spectral_surgery.registry.read import edit_history
    from spectral_surgery.tasks.decision.edit_budget import choose_edits

    history = edit_history(reg, adapter.task_family, run_id)
    edits = [a.policy for a in arms if a.role == "policy"]
    kept, skipped = choose_edits(edits, history, adapter.task_family, config.edit_budget)
    if skipped:
        logger().info("%s: edit budget keeps %s for family %s (%d past adapter(s)); not evaluated: %s", adapter.name,
                      ", ".join(kept), adapter.task_family, len(history), ", ".join(skipped))
    return ([a for a in arms if a.role != "policy" or a.policy in kept],
            {"family": adapter.task_family, "history_adapters": len(history), "kept": kept, "skipped": skipped})

