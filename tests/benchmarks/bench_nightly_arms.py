"""The nightly on the demo fleet, arm by arm vs every arm in one pass (run on demand, not a timed test), in one run.

    python -m tests.benchmarks.bench_nightly_arms [--budget small] [--task-limit N] [--data-dir DIR]
                                                  [--adapters math,commonsense,...] [--json out.json]

The demo fleet (every LoRA adapter, or those ``--adapters`` names, on the bundled SmolLM2-135M-Instruct, trained or
reused from ``DIR``) is refined twice by the real nightly flow (real lm-eval evaluator, the demo budget, the default
ladder), each time in a FRESH registry and artifact store sharing only the model cache, the two runs differing only
in ``evaluator_options.arms_pass``:

* ``arm_by_arm``: one lm-eval run per arm (baseline, candidates, random controls, scalar, canaries, guard arms);
* ``one_pass``: every arm of an adapter scored together (:mod:`tasks.evaluation.arms`): log-likelihood contexts once
  per arm, generation decoded by the baseline and verified for the others.

Reported per mode: wall and CPU seconds (CPU: robust to other processes sharing the cores), the seconds spent
scoring (the evaluations' recorded seconds) and their share of the run, subject-documents scored on the task
suites, and each adapter's verdict; then the ratios and whether the verdicts are identical (the per-document
outcomes are the same by test; the verdicts must be too). Both runs calibrate and edit the same way (identical
candidates), so the difference is the evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.benchmarks.bench_sequential import prepare_fleet, refine_once

MODES = ("arm_by_arm", "one_pass")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="small", help="Demo budget preset (smallest, small, default, large).")
    ap.add_argument("--task-limit", type=int, default=None, help="Documents per task suite (default: the preset's).")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Where the base model cache and the demo fleet live (reused across runs).")
    ap.add_argument("--adapters", default=None,
                    help="Demo adapters to refine (comma-separated; default: the whole demo fleet).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = ap.parse_args(argv)

    budget, cache, fleet, names = prepare_fleet(ap, args)
    from spectral_surgery.flows.demo import demo_config

    options = demo_config(cache, budget).evaluator_options
    result: dict = {"budget": args.budget, "task_limit": budget.task_limit, "adapters": names, "modes": {}}
    for mode in MODES:
        out = refine_once(fleet, names, cache, budget, mode, {"evaluator_options": {**options, "arms_pass": mode}})
        out["scoring_share"] = out["scoring_seconds"] / out["seconds"]
        result["modes"][mode] = out
        print(f"{mode}: {out['seconds']:.1f} s wall, {out['cpu_seconds']:.1f} s CPU "
              f"({out['scoring_seconds']:.1f} s scoring, "
              f"{100 * out['scoring_share']:.0f}%), {out['task_documents']} task subject-documents, "
              f"verdicts {out['verdicts']}", flush=True)
    ref, one = result["modes"]["arm_by_arm"], result["modes"]["one_pass"]
    result["seconds_ratio"] = ref["seconds"] / one["seconds"]
    result["cpu_ratio"] = ref["cpu_seconds"] / one["cpu_seconds"]
    result["scoring_ratio"] = ref["scoring_seconds"] / max(one["scoring_seconds"], 1e-9)
    result["identical_verdicts"] = ref["verdicts"] == one["verdicts"]
    print(f"\narm by arm / one pass: wall {result['seconds_ratio']:.2f}x, CPU {result['cpu_ratio']:.2f}x, "
          f"scoring {result['scoring_ratio']:.2f}x, "
          f"identical verdicts: {result['identical_verdicts']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
