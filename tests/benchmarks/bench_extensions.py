"""Every post-hoc edit (EXTENSIONS.md) against the paper's policies on the demo fleet: Δ with its interval and cost.

    python -m tests.benchmarks.bench_extensions [--budget default] [--adapters commonsense,math,...]
                                                [--policies smooth_abs,hns,...] [--task-limit N] [--guard-limit N]
                                                [--data-dir DIR] [--run-dir DIR] [--json out.json] [--markdown out.md]

The demo fleet (LoRA adapters on the bundled SmolLM2-135M-Instruct, trained or reused from ``DIR``) is refined by
the real nightly flow (real lm-eval evaluator, the budget's limits, the default ladder of controls and gate) with
``surgery.policies`` set to the paper's policies and the post-hoc edits together, so every edit is decided under
the same gate, Holm correction included, on the same documents. Run on demand, not a timed test.

Reported: the evidence table (adapter × edit: Δ vs the unedited adapter with its 95% interval and p, Δ vs the best
random control and vs the global scalar, guard Δ, verdict; :func:`flows.dashboard.page.evidence_markdown`), the
fleet report (family × edit: Δ across adapters, cost per edit and adapter from ``candidates.seconds_json`` and
``evaluations.seconds``; :func:`tasks.decision.fleet_report.what_wins`) and the data-free edits' cost against the
calibrated ones (:func:`tasks.decision.fleet_report.cost_by_data`).

The registry lives in ``--run-dir`` (default ``DIR/bench-extensions``) and is kept: a second run with more policies
reuses every stored stage (decomposition, calibration, γ search, the baseline's and the controls' scores) and
evaluates only the new candidates. The untrained demo adapter is left out by default: its update is exactly zero,
so every edit of it is the zero update again and the canary rejects the adapter as a whole.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: The paper's policies (the demo's defaults) and every post-hoc edit that is not an identity on LoRA
#: (``dg_hard`` is: EXTENSIONS §6, checked byte for byte by the unit tests).
DEFAULT_POLICIES = ("abs_select", "smooth_abs", "grad_direction",
                    "hns", "flat_fro", "flat_nuclear", "ablation_scalar_shrink", "ablation_temperature", "para",
                    "rmt_bulk_only", "sensitivity_hns")
DEFAULT_ADAPTERS = ("math", "commonsense", "instruction", "commonsense-x3")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="default", help="Demo budget preset (smallest, small, default, large).")
    ap.add_argument("--adapters", default=",".join(DEFAULT_ADAPTERS), help="Demo adapters (comma-separated).")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES), help="Edits (comma-separated).")
    ap.add_argument("--task-limit", type=int, default=None, help="Documents of the generative suites.")
    ap.add_argument("--guard-limit", type=int, default=None, help="Prompts of the IFEval guard.")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Where the base model cache and the demo fleet live (reused across runs).")
    ap.add_argument("--run-dir", type=Path, default=None, help="The registry and store (default DIR/bench-extensions).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    ap.add_argument("--markdown", type=Path, default=None, help="Also write both tables here.")
    args = ap.parse_args(argv)

    from spectral_surgery.flows.cli.prefect_home import isolate_temporary_server, local_defaults

    local_defaults()  # as `spectral-surgery run` does, before Prefect is imported
    isolate_temporary_server()
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.dashboard.data import collect
    from spectral_surgery.flows.dashboard.page import evidence_markdown
    from spectral_surgery.flows.demo import BUDGETS, demo_config, with_overrides
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.registry.read import latest_decisions
    from spectral_surgery.tasks.decision.fleet_report import cost_by_data, what_wins, what_wins_markdown
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet, fleet_specs
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    wanted = [a.strip() for a in args.adapters.split(",") if a.strip()]
    try:
        specs = fleet_specs(wanted)  # an over-scaled adapter's source is trained too (registered only if asked)
    except ValueError as e:
        ap.error(f"--adapters: {e}")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]

    budget = with_overrides(BUDGETS[args.budget], task_limit=args.task_limit, guard_limit=args.guard_limit)
    cache = (args.data_dir or Path.home() / ".cache" / "spectral-surgery-bench").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    run_dir = (args.run_dir or cache / "bench-extensions").expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "models").exists() and run_dir != cache:
        (cache / "models").mkdir(exist_ok=True)
        (run_dir / "models").symlink_to((cache / "models").absolute(), target_is_directory=True)

    t = time.perf_counter()
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=cache)
    fleet = [a for a in build_demo_fleet(base_dir, cache, steps=budget.steps, n_train=budget.n_train, fleet=specs,
                                         on_progress=print) if a["name"] in wanted]
    fleet_seconds = time.perf_counter() - t

    cfg = demo_config(run_dir, budget)
    cfg = cfg.model_copy(update={"surgery": cfg.surgery.model_copy(update={"policies": tuple(policies)})})
    cfg = type(cfg).model_validate(cfg.model_dump())  # the policy names validated as a nightly config would be
    reg = worker.registry(cfg)
    names = {f"demo-{a['name']}" for a in fleet}
    registered = {a.name for a in reg.list_adapters()}
    for a in fleet:
        if f"demo-{a['name']}" not in registered:
            reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                                 config={"calib": str(a["calib_path"]), **a.get("overrides", {})})
    print(f"nightly over {sorted(names)}: {', '.join(policies)} + the control ladder")
    t = time.perf_counter()
    try:
        summary = run_nightly(cfg)
    finally:
        worker.reset()
    nightly_seconds = time.perf_counter() - t

    reg = worker.registry(cfg)
    decisions = [d for d in latest_decisions(reg) if d.adapter in names]
    rows = what_wins(decisions)
    by_data = cost_by_data(rows)
    evidence = evidence_markdown(collect(reg))
    reg.close()
    worker.reset()
    verdicts = {r["adapter"]: r.get("verdict") or r.get("status") for r in summary["results"]}
    result = {"budget": args.budget, "task_limit": budget.task_limit, "task_limits": dict(budget.task_limits),
              "guard_limit": budget.guard_limit, "policies": policies, "adapters": sorted(names),
              "seconds": {"fleet": fleet_seconds, "nightly": nightly_seconds}, "failed": summary["failed"],
              "verdicts": verdicts, "what_wins": [r.model_dump(mode="json") for r in rows],
              "cost_by_data": {k: c.model_dump(mode="json") for k, c in by_data.items()},
              "evidence_markdown": evidence}
    text = f"{evidence}\n{what_wins_markdown(rows)}\n" + "".join(
        f"- {kind} edits ({c.edits:.0f}): {c.total:.0f} s per edit and adapter (prepare {c.prepare:.0f} + "
        f"write {c.write:.1f} + evaluate {c.evaluate:.0f})\n" for kind, c in by_data.items())
    print(text)
    print(f"fleet {fleet_seconds:.0f} s, nightly {nightly_seconds:.0f} s, verdicts {verdicts}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.markdown:
        args.markdown.write_text(text)
    return result


if __name__ == "__main__":
    main()
