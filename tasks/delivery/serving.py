"""What a serving engine can apply as-is, and the normalisation that makes any LoRA adapter fit it.

Engines that batch many adapters (vLLM, LoRAX) apply ONE rank and ONE scaling ``lora_alpha / r`` per adapter and
know nothing of PEFT's per-module ``rank_pattern``/``alpha_pattern`` or of ``exclude_modules``: they would misread
the shapes or the scale of an ε-PARA edit. :func:`serving_problems` names those fields; :func:`normalise` rewrites
the adapter so one global ``r``/``lora_alpha`` gives exactly the same ΔW per module:

* every module is padded to the adapter's largest rank R with zero rows of A and zero columns of B (ΔW unchanged);
* each module's own scaling s_m is folded into its B (``B' = s_m · B``, computed in fp32, cast back to the stored
  dtype) and the global scaling becomes 1 (``r = lora_alpha = R``, no rsLoRA), so ``ΔW' = 1 · B'A' = s_m · BA``;
* ``target_modules`` becomes the exact list of the modules that have tensors, and ``exclude_modules`` goes: a module
  the edit removed simply has no layer (PEFT creates no randomly initialised layer for it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from spectral_surgery.tasks.adapter_io import CONFIG_NAME, AdapterError, lora_modules

SERVING_FIELDS = ("rank_pattern", "alpha_pattern", "exclude_modules")
_WHY = {
    "rank_pattern": "per-module ranks (serving engines such as vLLM apply one rank per adapter)",
    "alpha_pattern": "per-module alphas (serving engines such as vLLM apply one scaling lora_alpha/r per adapter)",
    "exclude_modules": "excluded modules (serving engines match target_modules only)",
}


def serving_problems(config: dict) -> list[tuple[str, str]]:
    """The config fields a serving engine cannot apply as-is, as ``(field, why)``; empty when it can."""
    return [(name, _WHY[name]) for name in SERVING_FIELDS if config.get(name)]


def normalise(config: dict, tensors: dict[str, torch.Tensor], *,
              path: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:  # fmt: skip
    """An equivalent adapter with one global rank and scaling (module docstring): same ΔW for every module.

    Args:
        config: The parsed ``adapter_config.json`` (not mutated).
        tensors: The adapter's tensors by state-dict key (not mutated); A is (r_m, d_in), B is (d_out, r_m).
        path: The adapter directory, named in errors.

    Returns:
        ``(config, tensors)``: ``r = lora_alpha = R`` (the largest module rank), ``use_rslora`` off, no patterns, no
        ``exclude_modules``, ``target_modules`` the exact names of the modules present; A padded to (R, d_in) and
        B to (d_out, R), B multiplied by the module's scaling. Other tensors are kept as they are.

    Raises:
        AdapterError: the adapter has ``lora_bias`` (the bias would need the scaling too), LoRA tensors that are not
            linear A/B pairs (embeddings, DoRA), or no LoRA module at all.
    """
    cfg_path = (path / CONFIG_NAME) if path is not None else None
    if config.get("lora_bias"):
        raise AdapterError(cfg_path, "lora_bias", "--normalise cannot fold the scaling into a lora_B bias")
    modules = lora_modules(config, tensors, config_path=cfg_path)
    paired = {k for m in modules.values() for k in (m.key_A, m.key_B)}
    other = sorted(k for k in tensors if "lora_" in k and k not in paired)
    if other:
        raise AdapterError(cfg_path, other[0], "--normalise handles linear lora_A/lora_B pairs only")
    if not modules:
        raise AdapterError(cfg_path, "lora_A", "no LoRA (lora_A/lora_B) weight pairs to normalise")
    rank = max(m.r for m in modules.values())
    out = dict(tensors)
    for m in modules.values():
        a, b = tensors[m.key_A], tensors[m.key_B]
        # fp32 for the fold: a bf16 multiply would round twice (once here, once casting back).
        a32 = torch.zeros(rank, a.shape[1], dtype=torch.float32)
        a32[: m.r] = a.float()
        b32 = torch.zeros(b.shape[0], rank, dtype=torch.float32)
        b32[:, : m.r] = b.float() * m.scaling
        out[m.key_A] = a32.to(a.dtype).contiguous()
        out[m.key_B] = b32.to(b.dtype).contiguous()
    new = copy.deepcopy(config)
    for fallback in ("rank", "alpha"):  # r / lora_alpha below are what PEFT and engines read
        new.pop(fallback, None)
    new.update({"r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
                "target_modules": sorted(modules)})
    new.pop("exclude_modules", None)
    return new, out
