"""Nightly benchmark (run on demand, not a timed test): no-op, gate-only and one-new-policy nightly runs against the
full one, in one run.

    python -m tests.benchmarks.bench_nightly [--budget small] [--data-dir DIR] [--json out.json]

The demo fleet (three LoRA adapters on the bundled SmolLM2-135M-Instruct, trained or reused from ``DIR``) is
registered in a FRESH SQLite registry; then the real nightly flow (``flows.refine_fleet.run_nightly``, real
lm-eval evaluator, the demo budget's limits) runs twice in this process:

* full: every adapter is new, so each one is calibrated, edited under every policy and the random control,
  evaluated, guarded, decided and promoted;
* no-op: the same configuration again; every result is keyed by content hashes, so the flow scans the sources,
  finds nothing pending and stops;
* gate-only: the same, with a decision-only threshold changed (``gate.alpha``); the run configuration differs, so
  every adapter is decided again, from the stored per-document outcomes: no SVD, no calibration, no model pass
  (expect <= 2% of the full run);
* one-new-policy: the same, with one more policy configured; only the new candidate is edited and evaluated
  (candidates, evaluations and the baseline are reused by their stage keys; expect <= 1/(arms) + 5%, arms = the
  policies, the controls and the baseline of the full run).

Both runs include the scan (hashing every adapter's weights) and the flow's Prefect overhead; the base model is
already cached as safetensors. Reported: seconds of each run, the ratios to the full run (no-op expect < 5%), and the
rows each run added to the registry (the no-op must add only its own run row; the gate-only run only decisions;
the one-new-policy run one candidate and its evaluations per adapter).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _row_counts(reg) -> dict[str, int]:
    from sqlalchemy import func, select

    from spectral_surgery.registry import models
    from spectral_surgery.registry.db import session_scope

    out = {}
    with session_scope(reg.engine, write=False) as s:
        for name in ("Candidate", "Evaluation", "Decision", "PromotionEvent", "RefinementRun"):
            out[name] = s.scalar(select(func.count()).select_from(getattr(models, name)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="small", help="Demo budget preset (smallest, small, default, large).")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Where the base model cache and the demo fleet live (reused across runs).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    ap.add_argument("--new-policy", default="double_smooth",
                    help="The policy added by the one-new-policy run (default double_smooth).")
    args = ap.parse_args(argv)

    from spectral_surgery.flows import worker
    from spectral_surgery.flows.demo import BUDGETS, demo_config
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    budget = BUDGETS[args.budget]
    cache = (args.data_dir or Path(tempfile.gettempdir()) / "spectral-surgery-bench").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=cache)
    fleet = build_demo_fleet(base_dir, cache, steps=budget.steps, n_train=budget.n_train, on_progress=print)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    try:
        # a fresh registry and artifact store, sharing only the model cache, so the first run does everything
        (run_dir / "models").symlink_to(cache / "models", target_is_directory=True)
        cfg = demo_config(run_dir, budget)
        reg = worker.registry(cfg)
        for a in fleet:
            reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                                 config={"calib": str(a["calib_path"])})
        gate_only = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"alpha": cfg.gate.alpha / 2})})
        policies = (*cfg.surgery.policies, args.new_policy)
        new_policy = gate_only.model_copy(update={"surgery": cfg.surgery.model_copy(update={"policies": policies})})
        runs = {"full": cfg, "no-op": cfg, "gate-only": gate_only, "one-new-policy": new_policy}
        times, added = {}, {}
        for label, config in runs.items():
            before = _row_counts(reg)
            t = time.perf_counter()
            summary = run_nightly(config)
            times[label] = time.perf_counter() - t
            after = _row_counts(reg)
            added[label] = {k: after[k] - before[k] for k in after}
            print(f"{label}: {times[label]:.1f} s, refined {summary['refined']}, failed {summary['failed']}, "
                  f"rows added {added[label]}")
        arms = added["full"]["Candidate"] // max(len(fleet), 1) + 1  # candidates (policies + controls) + baseline
        result = {"budget": args.budget, "adapters": len(fleet), "seconds": times, "arms_per_adapter": arms,
                  "ratio_noop_over_full": times["no-op"] / times["full"],
                  "ratio_gate_only_over_full": times["gate-only"] / times["full"],
                  "ratio_new_policy_over_full": times["one-new-policy"] / times["full"],
                  "expected_new_policy_at_most": 1 / arms + 0.05, "rows_added": added}
        for label in ("no-op", "gate-only", "one-new-policy"):
            print(f"{label} / full = {times[label]:.1f} s / {times['full']:.1f} s = "
                  f"{100 * times[label] / times['full']:.2f}%")
        print(f"(one-new-policy expected <= 1/{arms} + 5% = {100 * result['expected_new_policy_at_most']:.1f}%)")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return result
    finally:
        worker.reset()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
