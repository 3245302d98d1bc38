"""The evaluation benchmarks on a GPU in one command: one pass vs arm by arm, bf16 and fp32, ratios and mismatches.

    tests/benchmarks/gpu_bench.sh --prepare      # here, once: wheels lm-eval needs + SmolLM2's config and tokenizer
    tests/benchmarks/gpu_bench.sh                # on the lent GPU (carry .whl and .gpu_bench): installs, runs, prints
    python -m tests.benchmarks.gpu_bench --device cpu --tiny    # the same end to end on a tiny model (smoke test)

The GPU machine starts bare (python, torch, transformers, peft; no lm-eval, no network) and the 98 MB GGUF of the
bundled base cannot travel, so the base is built from SmolLM2-135M-Instruct's ``config.json`` with random weights
(seeded) and its real tokenizer (copied into ``.gpu_bench/smol`` by ``--prepare``); ``--tiny`` uses
``tests/tiny.py``'s model and character tokenizer instead. The adapters are those of the two benchmarks (a LoRA
baseline, the bare base, the zero rebuild, σ-edits). Then, for each dtype (bf16 first), in this process:

* :mod:`tests.benchmarks.bench_eval_arms`: ``LmEvalEvaluator`` arm by arm vs one pass on ``ss_mc`` (and a generative
  suite), wall-time ratio, outcome mismatches, max |ΔLL|;
* :mod:`tests.benchmarks.bench_eval_generation`: HFLM ``generate_until`` per arm vs ``generate_until_arms``.

Random weights make the timings representative of SmolLM2-135M's shapes, not its answers: outcomes and divergence
rates are a random model's (generation runs to ``max_gen_toks``, the costly case). In bf16 the arm-by-arm
reference is lm-eval's HFLM with bf16 logits, the one pass scores from fp32 logits
(:mod:`tasks.evaluation.arms.precision`): mismatches there are the reference's bf16 ties (each printed with its
top-2 gap).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

SMOL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja")  # fmt: skip
PREPARED = Path(".gpu_bench") / "smol"


def prepare(dest: Path = PREPARED) -> Path:
    """Copy the bundled SmolLM2's config and tokenizer files (3.5 MB, no weights) to ``dest``."""
    from spectral_surgery.tasks.config import default_data_dir
    from tests.smol import bundled_base_dir

    src = bundled_base_dir(default_data_dir())
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMOL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    return dest


def build_base(out: Path, *, tiny: bool, source: Path = PREPARED, seed: int = 0) -> Path:
    """A saved base model with random (seeded) weights: SmolLM2's config and tokenizer from ``source``, or a tiny one.

    Raises:
        FileNotFoundError: No prepared SmolLM2 files (run ``gpu_bench.sh --prepare`` here first, or use --tiny).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tests import tiny as tiny_models

    if tiny:
        return tiny_models.save_base(out, seed=seed)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source}/config.json not found: run tests/benchmarks/gpu_bench.sh --prepare on a "
                                f"machine with the bundled model and carry .gpu_bench, or pass --tiny")
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # transformers' own init (std 0.02)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    for name in ("generation_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    return out


def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Both benchmarks for every dtype on one random base; their rows, by benchmark."""
    from tests.benchmarks import bench_eval_arms, bench_eval_generation

    out: dict[str, list[dict]] = {"eval_arms": [], "generation": []}
    with tempfile.TemporaryDirectory(prefix="gpu_bench-") as tmp:
        base = build_base(Path(tmp) / "base", tiny=args.tiny, seed=args.seed)
        for dtype in args.dtypes:
            print(f"\n## {dtype} on {args.device}: LmEvalEvaluator, arm by arm vs one pass\n", flush=True)
            out["eval_arms"] += bench_eval_arms.main([
                "--base-dir", str(base), "--device", args.device, "--dtype", dtype, "--arms", args.arms,
                "--benchmarks", args.benchmarks, "--limit", str(args.limit), "--gen-limit", str(args.gen_limit),
                "--max-gen-toks", str(args.max_gen_toks), "--batch-size", str(args.batch_size),
                "--threads", str(args.threads)])  # fmt: skip
            print(f"\n## {dtype} on {args.device}: generate_until, HFLM per arm vs all arms\n", flush=True)
            out["generation"] += bench_eval_generation.main([
                "--base-dir", str(base), "--device", args.device, "--dtype", dtype, "--limit", str(args.gen_limit),
                "--arms", *args.arms.split(","),
                "--batch-size", str(args.batch_size if args.batch_size != "auto" else 8),  # HFLM's: an int
                "--threads", str(args.threads)])  # fmt: skip
    return out


def summary(rows: dict[str, list[dict]]) -> str:
    """One line per (benchmark, dtype, K): the ratio and the mismatches, the numbers to read first."""
    lines = ["| what | dtype | K | arm by arm / one pass (wall) | outcome mismatches | max \\|ΔLL\\| "
             "| strings differing |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows["eval_arms"]:
        dll = "n/a" if r["max_abs_dll"] is None else f"{r['max_abs_dll']:.1e}"
        lines.append(f"| evaluator {r['benchmark']} | {r['dtype']} | {r['k']} | {r['ratio']:.2f}× | "
                     f"{len(r['mismatches'])}/{r['documents']} | {dll} | {r['responses_differing']} |")
    for r in rows["generation"]:
        lines.append(f"| generate_until {r['benchmark']} | {r['dtype']} | {r['k']} | {r['ratio']:.2f}× | n/a | n/a | "
                     f"{r['strings_differing']}/{r['strings']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available).")
    ap.add_argument("--tiny", action="store_true", help="A tiny random model and tokenizer (smoke test).")
    ap.add_argument("--dtypes", default=None, help="Comma-separated (default: bfloat16,float32 on cuda, float32 cpu).")
    ap.add_argument("--arms", default="8", help="Numbers of arms K, comma-separated (default 8).")
    ap.add_argument("--benchmarks", default="ss_mc,ss_arith", help="Benchmarks of the evaluator comparison.")
    ap.add_argument("--limit", type=int, default=100, help="ss_mc documents (default 100).")
    ap.add_argument("--gen-limit", type=int, default=16, help="Generative documents (default 16).")
    ap.add_argument("--max-gen-toks", type=int, default=64, help="max_gen_toks of generative suites (default 64).")
    ap.add_argument("--batch-size", default="32", help="Rows per pass, or auto (default 32).")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Also write every row to this JSON file.")
    ap.add_argument("--prepare", action="store_true", help=f"Only copy SmolLM2's config and tokenizer to {PREPARED}.")
    args = ap.parse_args(argv)
    if args.prepare:
        print(f"SmolLM2 config and tokenizer in {prepare()}")
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    cuda = args.device.startswith("cuda")
    args.dtypes = (args.dtypes or ("bfloat16,float32" if cuda else "float32")).split(",")
    if cuda:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows = run(args)
    print("\n## Summary (ratios > 1: the one pass is faster)\n\n" + summary(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
