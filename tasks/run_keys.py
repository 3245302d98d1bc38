"""The result key of one adapter under one run configuration (light: no torch, no Prefect, no model stack).

The nightly flow keys every adapter run, candidate and decision by it; the scan before the flow
(:mod:`flows.prescan`) computes it for every enabled adapter to tell a no-op night without starting anything.
"""

from __future__ import annotations

from tasks.evaluation.benchmarks import BenchmarkSpec, resolve_benchmark
from tasks.evaluation.evaluate import runs_generated_code
from tasks.evaluation.sandbox import chosen_backend
from tasks.run_config import RunConfig


def adapter_config_hash(config: RunConfig, adapter) -> str:
    """The result key of one adapter under one run config: the run's result hash plus the adapter's declaration,
    and, when its benchmark runs generated code, the sandbox backend that runs it."""
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


def sandbox_used(config: RunConfig, spec: BenchmarkSpec) -> str | None:
    """The sandbox backend that runs ``spec``'s generated code under ``config`` (None: it runs none)."""
    if not (spec.executes_code and runs_generated_code(config.evaluator)):
        return None
    return chosen_backend(config.sandbox)
