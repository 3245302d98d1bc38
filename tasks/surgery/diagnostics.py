"""Subspace alignment of an adapter's residual-writing modules (the paper's Fig. 1), computed from its files.

For every ``o_proj`` and ``down_proj`` LoRA module the thin SVD ``B·A = U diag(σ) Vᵀ`` gives ``U`` (d_out × r),
whose columns are directions in the residual stream: both module types write to it, so d_out is the hidden size
for all of them and their ``U``'s can be compared across layers and across the two types. Two measures:

* principal-direction similarity ``|u₁ᵀu₁'|`` (cosine of the leading output directions, sign-free), and
* top-m output-subspace overlap ``‖U_mᵀ U'_m‖_F² / m`` (the mean squared cosine of the m principal angles;
  1 = same subspace, m/d = what two random m-dimensional subspaces of R^d share on average).

The SVD is the project's QR-based thin SVD (``tasks.surgery.decompose.lowrank_svd``): milliseconds per module, no
dense ΔW. Results are cached by the version's content sha256 (in memory and, optionally, as JSON files), so a
dashboard that re-renders every few seconds computes them once per adapter version.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

RESIDUAL_MODULES = ("o_proj", "down_proj")
DEFAULT_M = 4  # the paper's Appendix B uses the top-4 subspace
_MEMORY: dict[tuple[str, int], dict[str, Any]] = {}


def short_module(name: str) -> str:
    """``model.layers.3.self_attn.o_proj`` → ``L3 o_proj`` (the last two dotted parts without a layer index)."""
    m = re.search(r"\.layers\.(\d+)\.", name)
    last = name.rsplit(".", 1)[-1]
    return f"L{m.group(1)} {last}" if m else ".".join(name.split(".")[-2:])


def alignment_from_factors(modules: list[tuple[str, int | None, Any, Any]], m: int = DEFAULT_M) -> dict[str, Any]:
    """Alignment matrices of a set of LoRA modules that write to one space.

    Args:
        modules: ``(name, layer index, A (r, d_in), B (d_out, r))`` per module, in display order; every module
            must have the same d_out.
        m: Subspace size (clipped to the smallest rank).

    Returns:
        ``{"names", "d", "m", "principal": [[|u₁ᵀu₁'|]], "overlap": [[‖U_mᵀU'_m‖²/m]], "intra_layer": [{layer,
        principal, overlap}] (o_proj vs down_proj of the same layer), "random_overlap": m/d,
        "random_principal": E|uᵀv| of random unit vectors ≈ sqrt(2/(π d))}``.

    Raises:
        ValueError: no modules, or modules with different output dimensions.
    """
    import torch

    from spectral_surgery.tasks.surgery.decompose import lowrank_svd

    if not modules:
        raise ValueError("no o_proj/down_proj LoRA modules to compare")
    dims = {name: tuple(b.shape)[0] for name, _, _, b in modules}
    if len(set(dims.values())) != 1:
        raise ValueError(f"modules write to spaces of different sizes {dims}; only equal output dims compare")
    us = [lowrank_svd(a, b).U for _, _, a, b in modules]  # each (d, r), fp32
    d = int(us[0].shape[0])
    m = max(1, min(m, *(int(u.shape[1]) for u in us)))
    top = torch.stack([u[:, :m] for u in us])  # (n, d, m)
    lead = top[:, :, 0]  # (n, d)
    principal = (lead @ lead.T).abs()  # (n, n)
    overlap = torch.einsum("idk,jdl->ijkl", top, top).pow(2).sum(dim=(2, 3)) / m  # (n, n)
    by_layer: dict[int, dict[str, int]] = {}
    for i, (name, layer, _, _) in enumerate(modules):
        if layer is not None:
            by_layer.setdefault(layer, {})[name.rsplit(".", 1)[-1]] = i
    intra = [{"layer": layer, "principal": float(principal[ix["o_proj"], ix["down_proj"]]),
              "overlap": float(overlap[ix["o_proj"], ix["down_proj"]])}
             for layer, ix in sorted(by_layer.items()) if {"o_proj", "down_proj"} <= ix.keys()]
    return {"names": [name for name, *_ in modules], "d": d, "m": m,
            "principal": [[round(float(x), 5) for x in row] for row in principal],
            "overlap": [[round(float(x), 5) for x in row] for row in overlap],
            "intra_layer": intra, "random_overlap": m / d, "random_principal": math.sqrt(2 / (math.pi * d))}


def subspace_alignment(adapter_dir: str | Path, content_sha256: str, *, m: int = DEFAULT_M,
                       cache_dir: Path | None = None) -> dict[str, Any]:
    """Alignment of the residual-writing modules of the adapter stored at ``adapter_dir`` (cached).

    Args:
        adapter_dir: The unedited adapter's directory (``adapter_versions.local_path``).
        content_sha256: The version's content hash in the registry: the cache key, and checked against the files
            so a directory overwritten since it was recorded is reported, not silently analysed.
        m: Subspace size.
        cache_dir: Also keep results as ``alignment-<sha>-m<m>.json`` files here (None: memory only).

    Returns:
        :func:`alignment_from_factors`'s dict plus ``modules`` (short names), ``seconds`` and ``cached``.

    Raises:
        tasks.adapter_io.AdapterError: the directory is not a readable LoRA adapter.
        ValueError: the files' hash differs from ``content_sha256``, or no comparable modules.
    """
    key = (content_sha256, m)
    if key in _MEMORY:
        return {**_MEMORY[key], "cached": True}
    path = Path(cache_dir) / f"alignment-{content_sha256[:16]}-m{m}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            _MEMORY[key] = json.loads(path.read_text())
            return {**_MEMORY[key], "cached": True}
        except (OSError, ValueError):
            pass  # a torn or foreign file: recompute and overwrite
    from spectral_surgery.tasks.adapter_io import load_adapter

    t0 = time.perf_counter()
    adapter = load_adapter(adapter_dir)
    if adapter.sha256 != content_sha256:
        raise ValueError(f"{adapter_dir}: files hash to {adapter.sha256[:12]} but the registry recorded "
                         f"{content_sha256[:12]} for this version (the directory changed since)")
    order = {name: i for i, name in enumerate(RESIDUAL_MODULES)}
    chosen = sorted((mod for mod in adapter.modules.values() if mod.name.rsplit(".", 1)[-1] in order),
                    key=lambda mod: (mod.layer_index if mod.layer_index is not None else -1,
                                     order[mod.name.rsplit(".", 1)[-1]]))
    result = alignment_from_factors(
        [(mod.name, mod.layer_index, adapter.tensors[mod.key_A], adapter.tensors[mod.key_B]) for mod in chosen], m)
    result.update(modules=[short_module(n) for n in result["names"]], seconds=time.perf_counter() - t0,
                  content_sha256=content_sha256)
    _MEMORY[key] = result
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one, never half
        except OSError:
            pass  # the cache is an optimisation; an unwritable directory only costs a recomputation
    return {**result, "cached": False}
