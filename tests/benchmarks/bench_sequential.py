"""Sequential vs fixed-n evaluation on the demo fleet (run on demand, not a timed test), in one run.

    python -m tests.benchmarks.bench_sequential [--budget small] [--task-limit N] [--looks K] [--data-dir DIR]
                                                [--adapters math,commonsense,...] [--json out.json]

The demo fleet (every LoRA adapter, or those ``--adapters`` names, on the bundled SmolLM2-135M-Instruct, trained
or reused from ``DIR``) is refined twice by the real nightly flow (real lm-eval evaluator, the demo budget, the
default ladder), each time in a FRESH registry and artifact store sharing only the model cache:

* fixed: every arm scored on the first ``task_limit`` documents of its task suite;
* sequential: ``RunConfig.sequential`` with K looks up to the same budget (``tasks/decision/sequential.py``).

Reported per mode: wall seconds, subject-documents scored on the task suites (the sum of ``n`` over the task
evaluations), and each adapter's verdict; then the ratios and whether the verdicts are identical. Both runs load,
calibrate and edit the same way (identical candidates), so the difference is the evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _task_documents(reg, names: list[str]) -> int:
    total = 0
    for name in names:
        for version in reg.list_versions(name):
            total += sum(e.n for e in reg.list_evaluations(version.id) if e.kind == "task")
    return total


def prepare_fleet(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple:
    """Prefect as the CLI starts it, the budget (``--budget``, ``--task-limit``), the model cache and the demo fleet
    (``--adapters``, trained or reused). Returns ``(budget, cache, fleet, registered names)``."""
    from spectral_surgery.flows.cli.prefect_home import isolate_temporary_server, local_defaults

    local_defaults()  # as `spectral-surgery run` does, before Prefect is imported
    isolate_temporary_server()
    from spectral_surgery.flows.demo import BUDGETS, with_overrides
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet, fleet_specs
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    budget = with_overrides(BUDGETS[args.budget], task_limit=args.task_limit, task_limits=())
    cache = (args.data_dir or Path(tempfile.gettempdir()) / "spectral-surgery-bench").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [a.strip() for a in args.adapters.split(",") if a.strip()] if args.adapters else None
    try:
        specs = fleet_specs(wanted)  # an over-scaled adapter's source is built too (refined only if named)
    except ValueError as e:
        ap.error(f"--adapters: {e}")
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=cache)
    fleet = [a for a in build_demo_fleet(base_dir, cache, steps=budget.steps, n_train=budget.n_train, fleet=specs,
                                         on_progress=print) if wanted is None or a["name"] in wanted]
    return budget, cache, fleet, [f"demo-{a['name']}" for a in fleet]


def refine_once(fleet: list[dict], names: list[str], cache: Path, budget, label: str, update: dict) -> dict:
    """One real nightly over ``fleet`` in a FRESH registry and store (sharing only the model cache), its config the
    demo's with ``update``; returns wall and CPU seconds (this process: the flow's thread workers included), task
    subject-documents, verdicts, failures, sequential stops and the
    seconds spent scoring (the sum of the evaluations' recorded seconds)."""
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.demo import demo_config
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.tasks.model import BUNDLED_MODEL

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
    try:
        (run_dir / "models").symlink_to(cache / "models", target_is_directory=True)
        cfg = demo_config(run_dir, budget).model_copy(update=update)
        reg = worker.registry(cfg)
        for a in fleet:
            reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                                 config={"calib": str(a["calib_path"]), **a.get("overrides", {})})
        t, c = time.perf_counter(), time.process_time()
        summary = run_nightly(cfg)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        scoring = sum(e.seconds or 0.0 for n in names for v in reg.list_versions(n)
                      for e in reg.list_evaluations(v.id))
        return {"seconds": seconds, "cpu_seconds": cpu, "task_documents": _task_documents(reg, names),
                "scoring_seconds": scoring,
                "verdicts": {r["adapter"]: r.get("verdict") or r.get("status") for r in summary["results"]},
                "failed": summary["failed"],
                "stopped_at_look": {r["adapter"]: (r.get("statistics") or {}).get("sequential", {}).get(
                    "stopped_at_look") for r in summary["results"]}}
    finally:
        worker.reset()
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="small", help="Demo budget preset (smallest, small, default, large).")
    ap.add_argument("--task-limit", type=int, default=None, help="Document budget (default: the preset's).")
    ap.add_argument("--looks", type=int, default=4, help="Looks of the sequential design.")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Where the base model cache and the demo fleet live (reused across runs).")
    ap.add_argument("--adapters", default=None,
                    help="Demo adapters to refine (comma-separated; default: the whole demo fleet).")
    ap.add_argument("--mode", choices=["both", "fixed", "sequential"], default="both",
                    help="Run one half only (its figures; the ratios need both).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = ap.parse_args(argv)

    budget, cache, fleet, names = prepare_fleet(ap, args)
    from spectral_surgery.tasks.decision.sequential import SequentialConfig

    result: dict = {"budget": args.budget, "task_limit": budget.task_limit, "looks": args.looks, "adapters": names,
                    "modes": {}}
    for mode in ("fixed", "sequential") if args.mode == "both" else (args.mode,):
        update = {"sequential": SequentialConfig(enabled=True, looks=args.looks)} if mode == "sequential" else {}
        result["modes"][mode] = out = refine_once(fleet, names, cache, budget, mode, update)
        print(f"{mode}: {out['seconds']:.1f} s, {out['task_documents']} task subject-documents, "
              f"verdicts {out['verdicts']}" + (f", stopped at look {out['stopped_at_look']}"
                                               if mode == "sequential" else ""))
    if args.mode != "both":
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return result
    fixed, seq = result["modes"]["fixed"], result["modes"]["sequential"]
    result["documents_ratio"] = seq["task_documents"] / max(1, fixed["task_documents"])
    result["seconds_ratio"] = seq["seconds"] / fixed["seconds"]
    result["identical_verdicts"] = seq["verdicts"] == fixed["verdicts"]
    print(f"\nsequential / fixed: documents {100 * result['documents_ratio']:.1f}%, wall "
          f"{100 * result['seconds_ratio']:.1f}%, identical verdicts: {result['identical_verdicts']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
