"""The calibration-loss passes, before and after the output head ran only where a token is scored, interleaved in one
process on the demo fleet's adapters (run on demand, not a timed test):

* the global scalar's γ search: the held-out loss as it was computed (file order, every position's logits) against
  :func:`tasks.surgery.global_scalar.mean_calibration_loss` (examples ordered by length, the head only where a token
  is scored);
* the sensitivity pass (:func:`tasks.surgery.calibration.collect_sensitivities`, forward and backward) with every
  position's logits against the head at the scored positions only (``logits_to_keep``).


    python -m tests.benchmarks.bench_gamma [--data-dir DIR] [--holdout 32] [--reps 3] [--adapters math,commonsense]

Per adapter: the tokens each way batches (padding included), the median seconds of one held-out loss each way, the
ratio, and the largest relative difference of the loss over the γ grid (the choice of γ each way must agree); the
sensitivity pass's median seconds each way over ``--n-calib`` examples, the ratio and the largest relative
difference of the per-example sensitivities.
``DIR`` holds the bundled model's cache and the demo fleet (a ``demo --data-dir DIR`` leaves both; trained here
otherwise, at the smallest budget's 2 steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Sequence


def naive_mean_calibration_loss(model, tokenizer, examples: Sequence, cfg) -> float:
    """The reference: batches in the examples' order and logits at every position (the code before the fast path)."""
    import torch
    import torch.nn.functional as F

    from spectral_surgery.tasks.surgery.calib_data import IGNORE_INDEX, build_batch, sequence_limit

    device = model.get_input_embeddings().weight.device
    limit = sequence_limit(model, cfg.max_seq_len)
    total, n_tok = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(examples), cfg.batch_size):
                batch = build_batch(tokenizer, examples[i : i + cfg.batch_size], max_seq_len=limit)
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
                labels = batch["labels"][:, 1:].to(logits.device)
                sel = labels != IGNORE_INDEX
                total += float(F.cross_entropy(logits[:, :-1][sel].float(), labels[sel], reduction="sum"))
                n_tok += int(sel.sum())
    finally:
        model.train(was_training)
    return total / n_tok


class _EveryPosition:
    """A model with ``logits_to_keep`` dropped: every position's logits (the sensitivity pass before)."""

    def __init__(self, model) -> None:
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, logits_to_keep=None, **kwargs):
        return self.model(*args, **kwargs)


def _tokens(tokenizer, examples, batch_size: int) -> int:
    from spectral_surgery.tasks.surgery.calib_data import token_length

    lengths = [token_length(tokenizer, e) for e in examples]
    return sum(max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
               for i in range(0, len(lengths), batch_size))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("~/.spectral-surgery"))
    ap.add_argument("--holdout", type=int, default=32, help="held-out examples (the default budget's 32)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-calib", type=int, default=32, help="examples of the sensitivity pass (0: skip it)")
    ap.add_argument("--adapters", default="math,commonsense,instruction")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spectral_surgery.tasks.config import CalibConfig, GlobalScalarConfig, SurgeryConfig
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet, fleet_specs
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base
    from spectral_surgery.tasks.adapter_io import load_adapter, select_modules
    from spectral_surgery.tasks.surgery.calib_data import load_calibration
    from spectral_surgery.tasks.surgery.calibration import collect_sensitivities
    from spectral_surgery.tasks.surgery.edit import attached_adapter, decompose_modules
    from spectral_surgery.tasks.surgery.global_scalar import (
        holdout_calib_config, mean_calibration_loss, scaled_lora_b)

    torch.set_num_threads(1)
    data = args.data_dir.expanduser()
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=data)
    names = [a.strip() for a in args.adapters.split(",") if a.strip()]
    fleet = build_demo_fleet(base_dir, data, steps=2, n_train=16, fleet=fleet_specs(names), on_progress=print)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=128), global_scalar=GlobalScalarConfig(holdout=args.holdout))
    out = {"holdout": args.holdout, "batch_size": cfg.calib.batch_size, "adapters": {}}
    for a in (a for a in fleet if a["name"] in names):
        hold = load_calibration(str(a["calib_path"]), holdout_calib_config(cfg))
        ordered = sorted(hold, key=lambda e: _tokens(tok, [e], 1))
        times: dict[str, list[float]] = {"naive": [], "fast": []}
        diffs = []
        with attached_adapter(model, a["path"]) as peft_model:
            mods = [n for n, _ in peft_model.named_modules() if n.endswith("lora_B")]
            names_b = sorted({n.rsplit(".lora_B", 1)[0].split("base_model.model.", 1)[-1] for n in mods})
            for rep in range(args.reps):
                for way, fn in (("naive", naive_mean_calibration_loss), ("fast", mean_calibration_loss)):
                    t = time.perf_counter()
                    fn(peft_model, tok, hold, cfg.calib)
                    times[way].append(time.perf_counter() - t)
            for g in cfg.global_scalar.grid:
                with scaled_lora_b(peft_model, names_b, float(g)):
                    x = naive_mean_calibration_loss(peft_model, tok, hold, cfg.calib)
                    y = mean_calibration_loss(peft_model, tok, hold, cfg.calib)
                diffs.append((float(g), x, y))
        if args.n_calib:
            adapter = load_adapter(a["path"])
            modules = select_modules(adapter, cfg.targets)
            spectra, scalings = decompose_modules(adapter, modules), {m.name: m.scaling for m in modules}
            calib = load_calibration(str(a["calib_path"]), CalibConfig(n_samples=args.n_calib))
            ways = {"every": [], "scored": []}
            got = {}
            with attached_adapter(model, a["path"]) as peft_model:
                for rep in range(args.reps):
                    for way, m in (("every", _EveryPosition(peft_model)), ("scored", peft_model)):
                        t = time.perf_counter()
                        got[way] = collect_sensitivities(m, tok, calib, spectra, scalings, cfg.calib)
                        ways[way].append(time.perf_counter() - t)
            sens_diff = max(float((got["scored"][n].per_example - got["every"][n].per_example).norm()
                                  / got["every"][n].per_example.norm().clamp_min(1e-30)) for n in got["every"])
        pick = lambda i: min(diffs, key=lambda d: d[i])[0]  # noqa: E731
        row = {"tokens_naive": _tokens(tok, hold, cfg.calib.batch_size),
               "tokens_fast": _tokens(tok, ordered, cfg.calib.batch_size),
               "naive_s": statistics.median(times["naive"]), "fast_s": statistics.median(times["fast"]),
               "max_rel_diff": max(abs(x - y) / abs(x) for _, x, y in diffs),
               "gamma_naive": pick(1), "gamma_fast": pick(2)}
        row["ratio"] = row["naive_s"] / row["fast_s"]
        if args.n_calib:
            row.update(sens_every_s=statistics.median(ways["every"]), sens_scored_s=statistics.median(ways["scored"]),
                       sens_max_rel_diff=sens_diff)
            row["sens_ratio"] = row["sens_every_s"] / row["sens_scored_s"]
        out["adapters"][a["name"]] = row
        print(f"{a['name']}: {row['tokens_naive']} -> {row['tokens_fast']} tokens, {row['naive_s']:.2f} s -> "
              f"{row['fast_s']:.2f} s ({row['ratio']:.2f}x), max rel diff {row['max_rel_diff']:.1e}, "
              f"gamma {row['gamma_naive']} / {row['gamma_fast']}")
        if args.n_calib:
            print(f"{a['name']}: sensitivity pass on {args.n_calib}: {row['sens_every_s']:.2f} s -> "
                  f"{row['sens_scored_s']:.2f} s ({row['sens_ratio']:.2f}x), max rel diff {sens_diff:.1e}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
