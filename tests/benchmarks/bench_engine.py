"""Engine benchmark (run on demand, not a timed test): the product's path against the naive one, in one run.

    python -m tests.benchmarks.bench_engine [--device cuda] [--examples 8] [--json out.json]

1. Thin SVD of B·A through QR of the factors vs dense ``torch.linalg.svd`` of ΔW (4096×4096 and 14336×4096, r = 16).
2. Hook-based per-example sensitivities in one batched forward/backward (batch 8) vs one autograd backward per
   example that materialises the dense gradient of ΔW, on a random model with SmolLM2-135M's architecture.
3. Peak memory of the calibration pass against the model's own size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import torch

from spectral_surgery.tasks.surgery.calibration import CalibExample, build_batch, collect_sensitivities
from spectral_surgery.tasks.config import CalibConfig
from spectral_surgery.tasks.surgery.decompose import lowrank_svd
from tests import tiny

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, reps: int) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_svd(device: str, reps: int) -> list[dict]:
    rows = []
    for d_out, d_in in [(4096, 4096), (14336, 4096)]:
        g = torch.Generator().manual_seed(0)
        A = (torch.randn(16, d_in, generator=g) / d_in**0.5).to(device)
        B = (torch.randn(d_out, 16, generator=g) / 16**0.5).to(device)
        thin = _time(lambda: lowrank_svd(A, B), device, reps)
        dense = _time(lambda: torch.linalg.svd(B @ A, full_matrices=False), device, 1)
        s_thin = lowrank_svd(A, B).S
        s_dense = torch.linalg.svdvals(B @ A)[:16]
        rows.append({"shape": f"{d_out}x{d_in}", "r": 16, "thin_s": thin, "dense_s": dense, "speedup": dense / thin,
                     "max_rel_sigma_diff": float(((s_thin - s_dense).abs() / s_dense).max())})
    return rows


class PeakRSS:
    """Samples the process RSS (CPU) or reads CUDA's allocator peak."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil

            self._proc = psutil.Process(os.getpid())
            self.base = self.peak = self._proc.memory_info().rss
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._t.join()

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.base


def naive_per_example(peft_model, tokenizer, examples, spectra, scalings) -> dict[str, torch.Tensor]:
    """One forward/backward per example; the dense gradient of ΔW (d_out×d_in) is formed for every module."""
    cache: dict[str, dict] = {name: {} for name in spectra}
    handles = []
    for name in spectra:
        layer = peft_model.get_submodule("base_model.model." + name)

        def fwd(mod, inp, out, name=name):
            cache[name]["x"] = inp[0].detach()
            out.register_hook(lambda grad, name=name: cache[name].__setitem__("d", grad.detach()))

        handles.append(layer.register_forward_hook(fwd))
    out = {name: [] for name in spectra}
    try:
        for ex in examples:
            batch = build_batch(tokenizer, [ex])
            dev = next(peft_model.parameters()).device
            batch = {k: v.to(dev) for k, v in batch.items()}
            logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                     ignore_index=-100, reduction="sum")
            loss.backward()
            peft_model.zero_grad(set_to_none=True)
            for name, sp in spectra.items():
                x = cache[name]["x"].flatten(0, 1).float()
                d = cache[name]["d"].flatten(0, 1).float()
                G = scalings[name] * d.T @ x  # dense d_out × d_in gradient of ΔW: what the hooks avoid
                out[name].append(((sp.U.T @ G) * sp.V.T).sum(dim=1))
    finally:
        for h in handles:
            h.remove()
    return {name: torch.stack(v) for name, v in out.items()}


def bench_sensitivity(device: str, n_examples: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny.make_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(**SMOLLM2_135M, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval().to(device)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["o_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.02)
    pm.eval()
    spectra, scalings = {}, {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            key = name.removeprefix("base_model.model.")
            spectra[key] = lowrank_svd(mod.lora_A["default"].weight.detach(), mod.lora_B["default"].weight.detach())
            scalings[key] = mod.scaling["default"]
    rows = tiny.calib_rows(n_examples)
    examples = [CalibExample(r["prompt"] * 2, r["answer"] * 2) for r in rows]  # ~100 tokens each
    ccfg = CalibConfig(n_samples=n_examples, batch_size=8)
    collect_sensitivities(pm, tok, examples[:2], spectra, scalings, ccfg.model_copy(update={"n_samples": 2}))  # warm-up
    with PeakRSS(device) as mem:
        t = time.perf_counter()
        sens = collect_sensitivities(pm, tok, examples, spectra, scalings, ccfg)
        _sync(device)
        hook_s = time.perf_counter() - t
    t = time.perf_counter()
    naive = naive_per_example(pm, tok, examples, spectra, scalings)
    _sync(device)
    naive_s = time.perf_counter() - t
    rel = max(
        float((sens[n].per_example.cpu() - naive[n].cpu()).norm() / naive[n].norm().clamp_min(1e-30)) for n in naive
    )
    return {"examples": n_examples, "batch": 8, "modules": len(spectra), "hooks_s": hook_s, "naive_s": naive_s,
            "speedup": naive_s / hook_s, "max_rel_err": rel, "calib_peak_extra_mb": mem.extra_bytes / 2**20,
            "model_mb": model_bytes / 2**20, "peak_over_model": mem.extra_bytes / model_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    svd = bench_svd(args.device, args.reps)
    sens = bench_sensitivity(args.device, args.examples)
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    print("| ΔW shape | r | thin SVD (QR) | dense SVD of ΔW | speed-up | max rel. σ diff |")
    print("|---|---|---|---|---|---|")
    for r in svd:
        print(f"| {r['shape']} | {r['r']} | {r['thin_s']*1e3:.2f} ms | {r['dense_s']:.2f} s | {r['speedup']:.0f}× "
              f"| {r['max_rel_sigma_diff']:.1e} |")
    s = sens
    print("\n| per-example sensitivities | time | speed-up | max rel. error |\n|---|---|---|---|")
    print(f"| hooks, batch {s['batch']}, {s['examples']} examples, {s['modules']} modules | {s['hooks_s']:.2f} s "
          f"| {s['speedup']:.1f}× | {s['max_rel_err']:.1e} |")
    print(f"| one autograd backward per example (dense ∂L/∂ΔW) | {s['naive_s']:.2f} s | 1× | – |")
    print(f"\ncalibration peak memory above the loaded model: {s['calib_peak_extra_mb']:.0f} MiB "
          f"= {s['peak_over_model']:.2f}× the model's own size ({s['model_mb']:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "svd": svd, "sensitivity": sens}, f, indent=2)


if __name__ == "__main__":
    main()
