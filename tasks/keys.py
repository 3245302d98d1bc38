"""Every result key of a nightly run, computed in one place from resolved values (issue 26 §1).

Results are keyed by stage, each by exactly what determines it, so that a change re-does only what it changes:

* :func:`prepared_key`: the decomposition and calibration sensitivities (adapter content, base model and revision,
  targets, calibration settings and the calibration examples' hash, engine version);
* :func:`candidate_key`: ONE edited adapter: the prepared key, its policy and seed, and the resolved values of the
  settings its policy reads (:meth:`tasks.surgery.policy_registry.PolicySpec.settings`, declared beside the policy
  in its registration); the global scalar also its γ search (grid, rule, the held-out examples' hash). Changing
  ``edit.z_tau`` rewrites the ``z_score`` candidate only: every other candidate, and its evaluations, is reused;
* :func:`candidates_key`: the set of candidates one decision weighs (arm name -> candidate key);
* :func:`evaluation_key`: one benchmark run (evaluator identity, benchmark, documents, sandbox);
* :func:`decision_key`: the gate settings, the decision metric, the candidates and the evaluations weighed;
* :func:`result_key` (:meth:`tasks.run_config.RunConfig.result_hash`) and :func:`adapter_key` are coarser on
  purpose: whether an adapter version needs a visit under a run config at all (anything that changes any stage
  changes them); the visit then reuses every stage whose key is done. Where things live and how much runs in
  parallel enter no key.

This module imports neither Prefect nor the registry.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import BaseModel

from spectral_surgery.tasks.config import EditConfig, SurgeryConfig
from spectral_surgery.tasks.decision.gate import DecisionConfig, GateConfig

if TYPE_CHECKING:  # annotations only: tasks.run_config imports this module
    from spectral_surgery.tasks.evaluation.benchmarks import BenchmarkSpec
    from spectral_surgery.tasks.run_config import RunConfig


BARE_BASE = "bare_base"  # the arm (and candidate policy) of the base model without the adapter


# Part of every candidate's key: bump it when the edit math or the write path changes what a candidate is, so that
# stored candidates (and the evaluations keyed by them) are recomputed rather than reused.
ENGINE_VERSION = "1"


def sha(obj: Any) -> str:
    """sha256 hex of ``obj`` as canonical JSON (sorted keys; anything else by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else json.loads(json.dumps(value))


def policy_settings(policy: str, edit: EditConfig) -> dict[str, Any]:
    """The resolved values of the EditConfig settings ``policy`` reads under ``edit`` (field -> JSON value).

    Raises:
        UnknownNameError: unknown policy.
    """
    import spectral_surgery.tasks.surgery.policies  # noqa: F401  (registers every policy)
    from spectral_surgery.tasks.surgery.policy_registry import get_policy

    return {f: _json(getattr(edit, f)) for f in get_policy(policy).settings(edit)}


def prepared_key(adapter_sha256: str, base_model_id: str, base_model_revision: str | None, surgery: SurgeryConfig,
                 calib_sha256: str) -> str:
    """Key of one adapter version's decomposition and calibration sensitivities (what one model pass produces)."""
    return sha({"stage": "prepared", "engine": ENGINE_VERSION, "adapter": adapter_sha256, "base": base_model_id,
                "base_revision": base_model_revision, "targets": surgery.targets.model_dump(mode="json"),
                "calib": surgery.calib.model_dump(mode="json"), "calib_sha256": calib_sha256})


def candidate_key(prepared: str, surgery: SurgeryConfig, policy: str, seed: int, *,
                  holdout_sha256: str | None = None) -> str:
    """Key of one candidate: edited from ``prepared`` by ``policy`` at ``seed`` under the settings it reads.

    Args:
        prepared: :func:`prepared_key`.
        surgery: The surgery settings; only those ``policy`` reads enter the key (:func:`policy_settings`), and,
            for an edit that needs γ (``global_scalar``), ``surgery.global_scalar``.
        policy: Registered policy name or alias (keyed by its canonical name), or ``bare_base`` (the base model
            without the adapter: no edit, so keyed by the prepared state and seed alone).
        seed: The candidate's seed (``random_index`` draws from it; the others carry the calibration seed).
        holdout_sha256: Hash of the held-out calibration examples γ is chosen on; keyed for an edit that needs γ
            only.
    """
    from spectral_surgery.tasks.surgery.policy_registry import get_policy

    if policy == BARE_BASE:
        return sha({"stage": "candidate", "prepared": prepared, "policy": BARE_BASE, "seed": seed, "settings": {}})
    settings = policy_settings(policy, surgery.edit)
    spec = get_policy(policy)
    keyed: dict[str, Any] = {"stage": "candidate", "prepared": prepared, "policy": spec.name, "seed": seed,
                             "settings": settings}
    if spec.needs_gamma:  # the γ search: what it searches and the data it searches on
        keyed["gamma"] = {"search": surgery.global_scalar.model_dump(mode="json"), "holdout": holdout_sha256}
    return sha(keyed)


def candidates_key(keys: Mapping[str, str]) -> str:
    """Key of the set of candidates one decision weighs: arm name -> :func:`candidate_key` (the bare base, which
    has no files, by any stable key of its own)."""
    return sha({"stage": "candidates", "arms": sorted(keys.items())})


def evaluation_key(identity: str, benchmark: str, limit: int | None, docs: tuple[int, int] | None = None,
                   sandbox: str | None = None) -> str:
    """Key of one benchmark run of a subject: the evaluator identity, the benchmark, which documents (the first
    ``limit``, or one sequential look's ``docs`` chunk) and, for code benchmarks, the sandbox the programs ran in."""
    scope = limit if docs is None else f"docs={docs[0]}:{docs[1]}"
    ran = "" if sandbox is None else f"|sandbox={sandbox}"
    return hashlib.sha256(f"{identity}|{benchmark}|{scope}{ran}".encode()).hexdigest()[:64]


def decision_key(gate: GateConfig, candidates: str, evidence: dict[str, Any],
                 decision: DecisionConfig | None = None) -> str:  # fmt: skip
    """Key of one decision: the gate settings, the decision metric, the candidates' key and the evaluations weighed.

    Args:
        gate: The gate settings in force for the adapter.
        candidates: The candidates' key (:func:`candidates_key`).
        evidence: JSON-serialisable description of the evaluations weighed, e.g. per benchmark its evaluator key
            and the evaluated subjects' candidate ids.
        decision: Which values decide; the default (task metric) leaves the key as it was before it existed.
    """
    keyed = {"stage": "decision", "gate": gate.model_dump(mode="json"), "candidates": candidates, "evidence": evidence}
    if decision is not None and decision != DecisionConfig():
        keyed["decision"] = decision.model_dump(mode="json")
    return sha(keyed)


def result_key(config: "RunConfig", adapter_overrides: dict | None = None) -> str:
    """Hash of everything that determines candidates, evaluations and decisions for one adapter under ``config``.

    It is :meth:`tasks.run_config.RunConfig.result_hash`, which hashes the fields ``SETTING_KEYS`` classifies as keyed
    beside their classification (resolved values: ``benchmark_profile: null`` is keyed as the profile it resolves
    to here).
    """
    return config.result_hash(adapter_overrides)


def sandbox_used(config: "RunConfig", spec: "BenchmarkSpec") -> str | None:
    """The sandbox backend that runs ``spec``'s generated code under ``config`` (None: it runs none)."""
    from spectral_surgery.tasks.evaluation.evaluate import runs_generated_code
    from spectral_surgery.tasks.evaluation.sandbox import chosen_backend

    if not (spec.executes_code and runs_generated_code(config.evaluator)):
        return None
    return chosen_backend(config.sandbox)


def adapter_key(config: "RunConfig", adapter) -> str:
    """The result key of one adapter under one run config: :func:`result_key` with the adapter's declaration,
    and, when its benchmark runs generated code, the sandbox backend that runs it."""
    from spectral_surgery.tasks.evaluation.benchmarks import resolve_benchmark

    declared = {
        "overrides": adapter.config_json or {},
        "base_model_id": adapter.base_model_id,
        "base_model_revision": adapter.base_model_revision,
        "task_family": adapter.task_family,
        "benchmark_override": adapter.benchmark_override,
    }
    try:
        spec = resolve_benchmark(adapter.task_family, profile=config.profile, override=adapter.benchmark_override)
    except KeyError:  # an unknown family or benchmark fails the adapter's visit, saying so
        spec = None
    if spec is not None and (sandbox := sandbox_used(config, spec)):
        declared["sandbox"] = sandbox
    return config.result_hash(declared)
