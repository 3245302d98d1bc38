"""Per-adapter refinement: download → decompose + calibrate once → edit under every policy and random control →
evaluate → guard → decide → promote.

Every step first asks the registry whether its result already exists (content-addressed keys), so a re-run does
no new work and a run killed mid-way resumes where it stopped. This module holds only orchestration:
:func:`refine_version` (the steps, in order, as plain calls; the nightly flow runs it inside one task run per
adapter), the ``refine_adapter`` flow around it (one adapter on its own), and the one step that retries, the
:func:`fetch_adapter` task (I/O). The steps' bodies,
the registry and model I/O, live in :mod:`flows.refine` (``source``, ``candidates``, ``evaluation``, ``decision``,
``artifacts``); the pure work in ``tasks/``: the arms, the gate's inputs and the guard plan in
:mod:`tasks.decision.arms`, what to write in :mod:`tasks.surgery.write_plan`, what to score in
:mod:`tasks.evaluation.subjects`, the sequential looks in :func:`tasks.decision.sequential.run_looks`, the decision's
evidence and record in :mod:`tasks.decision.decision_evidence` and :class:`tasks.decision.record.DecisionRecord`, and
every key in :mod:`tasks.keys`.
"""

import contextlib
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from spectral_surgery.flows import stage_hook, worker
from spectral_surgery.flows.interrupt import WindowEnded
from spectral_surgery.flows.refine import candidates as _candidates
from spectral_surgery.flows.refine import decision as _decision
from spectral_surgery.flows.refine import evaluation as _evaluation
from spectral_surgery.flows.refine import logger as _logger
from spectral_surgery.flows.refine import source as _source
from spectral_surgery.flows.refine.artifacts import decision_artifacts, failure_artifact
from spectral_surgery.flows.refine.candidates import Candidates, apply_edit_budget
from spectral_surgery.flows.refine.decision import (
    request_review,
)  # noqa: F401  (importable from here, as before the split)
from spectral_surgery.flows.refine.evaluation import evaluator_key as _evaluator_key  # noqa: F401  (as above)
from spectral_surgery.flows.refine.source import SourceChangedError  # noqa: F401  (as above)
from spectral_surgery.registry.runs import INTERRUPTED
from spectral_surgery.registry.validation import RunStoppedError
from spectral_surgery.tasks.decision.arms import BASELINE, Arm, guard_plan, plan_arms
from spectral_surgery.tasks.download import ResolvedAdapter, can_heal, resolve_source
from spectral_surgery.tasks.evaluation.benchmarks import BenchmarkSpec, guard_benchmark, resolve_benchmark
from spectral_surgery.tasks.evaluation.evaluate import runs_generated_code
from spectral_surgery.tasks.evaluation.sandbox import resolve_backend
from spectral_surgery.tasks.keys import (
    adapter_key as adapter_config_hash,
)  # noqa: F401  (this module's API since issue 9)
from spectral_surgery.tasks.run_config import RunConfig


def _io_retry(task_, task_run, state) -> bool:
    """Retry only failures that can heal (:func:`tasks.download.can_heal`); a bad adapter, a missing path or an
    unknown Hub repository stays so however often it is fetched."""
    try:
        state.result()
    except Exception as e:
        return can_heal(e)
    return False


@task(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_io_retry, cache_policy=NO_CACHE)
def fetch_adapter(uri: str) -> ResolvedAdapter:
    """Download (hub, revision pinned) or locate (local path) an adapter and hash its content."""
    return resolve_source(uri)


def version_files(version, source_uri: str, fetch=None) -> Path:
    """A local directory holding exactly ``version`` (:func:`flows.refine.source.version_files`); ``fetch``:
    ``uri -> ResolvedAdapter``, default the retried :func:`fetch_adapter` task."""
    return _source.version_files(version, source_uri, fetch or fetch_adapter)


def evaluate_sequential(config: RunConfig, version, adapter, local: Path, cands: Candidates, spec: BenchmarkSpec,
                        arms: list[Arm]) -> tuple[tuple[str, dict[str, list], dict[str, list]], dict]:
    """The task benchmark in looks (:func:`flows.refine.evaluation.evaluate_sequential`)."""
    return _evaluation.evaluate_sequential(config, version, adapter, local, cands, spec, arms)


@flow(name="refine-adapter", flow_run_name="refine-{adapter_name}")  # no log_prints: see refine_fleet
def refine_adapter(version_id: int, adapter_name: str, run_id: int, config: RunConfig) -> dict:
    """Refine one adapter version end to end as a flow run of its own (:func:`refine_version`); failures are
    recorded in the registry and re-raised."""
    return refine_version(version_id, adapter_name, run_id, config)


def refine_version(version_id: int, adapter_name: str, run_id: int, config: RunConfig) -> dict:
    """Refine one adapter version end to end; failures are recorded in the registry and re-raised.

    Plain calls, no Prefect runs of its own: the nightly flow runs it inside the adapter's one task run
    (``refine-<adapter>``, :func:`flows.refine_fleet.refine_one`), :func:`refine_adapter` inside a flow run. Each
    step's cost is in the registry (the stage seconds of candidates and evaluations) and in the log, not in a
    Prefect run per step: a task or subflow run per step cost more orchestration than the tiny adapters' model
    work (docs/fleet.md, "Measured").
    """
    reg = worker.registry(config)
    version = reg.get_version(version_id)
    adapter = version.adapter  # loaded with the version: one read, not two
    chash = adapter_config_hash(config, adapter)
    arun, holder = reg.claim_adapter_run(run_id, version_id, chash)
    if arun is None:  # another live run is refining this very version: never refine it twice
        return {"adapter": adapter_name, "status": "skipped",
                "reason": f"being refined by run {holder.id} ({holder.owner}) since "
                          f"{holder.started_at.isoformat(timespec='seconds')}"}
    if arun.status == "completed":
        return {"adapter": adapter_name, "status": "completed", "reused": True}
    try:
        local = version_files(version, adapter.source_uri)
        surgery = config.surgery_for(adapter.config_json)
        arms = plan_arms(config, surgery)
        budget = None
        if config.edit_budget.enabled:
            arms, budget = apply_edit_budget(config, reg, adapter, run_id, arms)
        spec = resolve_benchmark(adapter.task_family, profile=config.profile, override=adapter.benchmark_override)
        if spec.executes_code and runs_generated_code(config.evaluator):
            resolve_backend(config.sandbox)  # before any model work: no usable sandbox refuses it, saying how to fix
        cands = _candidates.make_candidates(config, version, adapter, local, arms)
        sequential = None
        if config.sequential.enabled:
            task_eval, sequential = evaluate_sequential(config, version, adapter, local, cands, spec, arms)
        else:
            task_eval = _evaluation.evaluate_subjects(config, version, adapter, local, cands, spec,
                                                      config.limit_for(spec.name), "task")
        guard_eval, guard_name, guard_skipped = None, None, {}
        if config.guard:
            gspec = guard_benchmark(config.profile)
            guard_name = gspec.name
            if gspec.name == spec.name:  # the task benchmark is the guard: its scores serve as the guard, free
                guard_eval = task_eval
            else:  # the canaries and the bare base are checked on the task benchmark only
                guarded, guard_skipped = guard_plan(config, arms, cands.ids, task_eval[1], spec.higher_is_better,
                                                    sequential)
                if guarded or BASELINE not in guard_skipped:
                    guard_eval = _evaluation.evaluate_subjects(config, version, adapter, local, cands, gspec,
                                                               config.guard_limit, "guard", guarded)
                if guard_skipped:
                    _logger().info("%s: IFEval guard for %d arm(s), %d skipped (%s)", adapter.name, len(guarded),
                                   len(guard_skipped), ", ".join(sorted(guard_skipped)))
        result = _decision.decide_and_promote(config, version, adapter, run_id, cands, arms, task_eval, guard_eval,
                                              spec.higher_is_better, spec.name, guard_name, sequential, guard_skipped,
                                              budget)
        stage_hook.reached("promotion")
        reg.finish_adapter_run(arun.id, "completed", decision_id=result["decision_id"])
    except WindowEnded as e:  # the window ended in flight: released between stages, first in line next night
        reg.release_adapter_run(arun.id, str(e))
        _logger().info("%s: %s; released, deferred to the next night (nothing promoted)", adapter_name, e)
        return {"adapter": adapter_name, "status": "deferred", "reason": str(e), "released": True}
    except (KeyboardInterrupt, RunStoppedError) as e:  # a stop request: the row is released, not a failure of the work
        with contextlib.suppress(Exception):
            reg.finish_adapter_run(arun.id, "failed", error_type=INTERRUPTED,
                                   error_message=f"run {run_id} was interrupted before finishing this version ({e}): "
                                                 "the next run refines it again")
        raise
    except BaseException as e:
        reg.record_failure(run_id, version_id, e, config_hash=chash)
        try:
            failure_artifact(adapter_name, e)
        except Exception:  # never mask the adapter's own error
            pass
        raise
    result.update(adapter=adapter_name, status="completed", candidates_written=cands.written,
                  calibrated=cands.calibrated, benchmark=spec.name)
    try:
        decision_artifacts(adapter_name, result)
    except Exception as e:  # artifacts are a convenience; never fail a refinement over them
        _logger().warning("could not write artifacts for %s: %s", adapter_name, e)
    if config.mlflow is not None:  # a copy of the decision in MLflow; a failure there is only a warning
        from spectral_surgery.flows.integrations.mlflow_client import mirror_or_warn

        result["mlflow"] = mirror_or_warn(config, reg, version, adapter, result, guard_name, _logger())
    return result
