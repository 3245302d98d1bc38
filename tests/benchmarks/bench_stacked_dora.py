"""Micro-benchmark (run on demand, not a timed test): one DoRA layer, every arm's rows stacked vs PEFT arm by arm.

    python -m tests.benchmarks.bench_stacked_dora [--arms 10] [--rank 8] [--tokens 100,300] [--rows 8]
        [--repeats 7] [--threads 1] [--json out.json]

For each of SmolLM2-135M's projection shapes (576->576 q/o, 576->192 k/v, 576->1536 gate/up, 1536->576 down) a
``peft`` ``lora.Linear`` holds ``--arms`` seeded random DoRA adapters (rank ``--rank``, magnitudes off their init)
over a random fp32 base weight. A batch of ``--rows`` rows of T tokens, the rows' arms all distinct, in pairs, or
all the same, is run three ways, interleaved in one process (the order rotates per repeat), under ``no_grad``:

* ``stacked``: :class:`tasks.evaluation.arms.stacked_lora.StackedLora` (every arm's ``m / ||W + sBA||`` computed
  once when the stack is built, outside the timing; its cost is reported as ``build``);
* ``peft``: PEFT's own forward, the rows of each arm run with that adapter active (what the arm-by-arm path does
  per layer: PEFT's mixed batch refuses DoRA), PEFT recomputing the weight norm on every call as it does by default;
* ``peft_cached``: the same with ``peft.tuners.lora.dora.ENABLE_DORA_CACHING`` on (the norm cached per adapter).

Reported: CPU time per batch of each (torch on one thread: the process's CPU time is the work done, robust to other
processes sharing the cores), the median ratios stacked / peft and stacked / peft_cached over the repeats, the
one-time build of the stack, and the largest |Δ| of the stacked output against PEFT's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SHAPES = ((576, 576), (576, 192), (576, 1536), (1536, 576))  # SmolLM2-135M: q/o, k/v, gate/up, down
PATTERNS = ("distinct", "pairs", "same")


def dora_layer(d_in: int, d_out: int, arms: int, rank: int, seed: int = 0):
    """A ``peft`` ``lora.Linear`` (``d_in -> d_out``) holding ``arms`` seeded random DoRA adapters, eval mode."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(d_in, d_out, bias=False))
    names = [f"arm{i}" for i in range(arms)]
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["proj"], use_dora=True)
    pm = get_peft_model(net, cfg, adapter_name=names[0])
    for n in names[1:]:
        pm.add_adapter(n, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return pm.eval(), pm.base_model.model.proj, names


def row_arms(names: list[str], rows: int, pattern: str) -> list[str]:
    """Each row's arm: all distinct (cycling), in pairs, or all the first arm."""
    if pattern == "distinct":
        return [names[i % len(names)] for i in range(rows)]
    if pattern == "pairs":
        return [names[(i // 2) % len(names)] for i in range(rows)]
    return [names[0]] * rows


def peft_arm_by_arm(layer, x: torch.Tensor, rows: list[str]) -> torch.Tensor:
    """PEFT's forward per arm on that arm's rows (its adapter active), scattered back into one output."""
    out = None
    for arm in dict.fromkeys(rows):
        idx = [i for i, a in enumerate(rows) if a == arm]
        layer.set_adapter(arm)
        y = layer(x[idx])
        if out is None:
            out = y.new_empty(x.shape[0], *y.shape[1:])
        out[idx] = y
    return out


def _cpu(fn, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def run(args: argparse.Namespace) -> list[dict]:
    from peft.tuners.lora import dora

    from spectral_surgery.tasks.evaluation.arms.stacked_lora import StackedLora

    results = []
    for d_in, d_out in SHAPES:
        _pm, layer, names = dora_layer(d_in, d_out, args.arms, args.rank)
        t0 = time.process_time()
        stacked = StackedLora([layer], names)
        build = time.process_time() - t0
        for tokens in args.tokens:
            x = torch.randn(args.rows, tokens, d_in, generator=torch.Generator().manual_seed(3))
            for pattern in PATTERNS:
                rows = row_arms(names, args.rows, pattern)

                def run_stacked():
                    with stacked.installed(), stacked.rows(rows):
                        return layer(x)

                def run_peft(cached: bool):
                    dora.ENABLE_DORA_CACHING = cached
                    try:
                        return peft_arm_by_arm(layer, x, rows)
                    finally:
                        dora.ENABLE_DORA_CACHING = False

                with torch.no_grad():
                    gap = (run_stacked() - run_peft(False)).abs().max().item()
                    variants = {"stacked": run_stacked, "peft": lambda: run_peft(False),
                                "peft_cached": lambda: run_peft(True)}
                    secs: dict[str, list[float]] = {k: [] for k in variants}
                    order = list(variants)
                    for rep in range(args.repeats):
                        for k in order[rep % 3:] + order[:rep % 3]:
                            secs[k].append(_cpu(variants[k], args.iters))
                ratio = statistics.median(s / p for s, p in zip(secs["stacked"], secs["peft"]))
                ratio_c = statistics.median(s / p for s, p in zip(secs["stacked"], secs["peft_cached"]))
                r = {"shape": f"{d_in}->{d_out}", "tokens": tokens, "pattern": pattern, "arms": args.arms,
                     "rank": args.rank, "rows": args.rows, "build_ms": 1e3 * build,
                     **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in secs.items()},
                     "ratio_peft": ratio, "ratio_peft_cached": ratio_c, "max_abs_diff": gap}
                results.append(r)
                print(f"{r['shape']:>10} T={tokens:<4} {pattern:<8} stacked {r['stacked_ms']:7.2f} ms  peft "
                      f"{r['peft_ms']:7.2f} ms  peft_cached {r['peft_cached_ms']:7.2f} ms  stacked/peft {ratio:.2f}  "
                      f"stacked/peft_cached {ratio_c:.2f}  build {r['build_ms']:.1f} ms  max|Δ| {gap:.1e}",
                      flush=True)
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", type=int, default=10, help="DoRA adapters in the layer (default 10).")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--tokens", type=lambda s: [int(t) for t in s.split(",")], default=[100, 300],
                    help="Tokens per row, comma-separated (default 100,300).")
    ap.add_argument("--rows", type=int, default=8, help="Rows per batch (default 8).")
    ap.add_argument("--repeats", type=int, default=7, help="Interleaved repeats (median ratio).")
    ap.add_argument("--iters", type=int, default=3, help="Batches per timing.")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1).")
    ap.add_argument("--json", default=None, help="Write the results here.")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
