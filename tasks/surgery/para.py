"""ε-PARA: one global energy threshold over every module's spectrum, a rank-pruning edit (EXTENSIONS §3).

Post-training rank pruning (arXiv 2604.27796, as the authors reimplemented it; no official code exists). Data-free:
it reads the spectra and each module's LoRA scaling s only. One threshold θ is set over the pooled *effective*
values ``e = |s|·σ`` of all modules the run targets, so that the kept components hold at least a share ε of the
pooled energy Σe²; every component with ``e >= θ`` is kept with its σ **unchanged** (no nuclear or Frobenius
restoration), the others are dropped. A module keeping k < r components is rebuilt balanced on those k only (its
rank becomes k: ``rank_pattern[name] = k`` and ``alpha_pattern[name]`` keeps its scaling); a module keeping none is
removed and listed in ``exclude_modules`` (:func:`tasks.surgery.edit.rank_changes`).

Registered as ``para`` (ε from ``EditConfig.para``, default 0.90), ``para_e95`` and ``para_e99`` (the reports'
other two values, each with its own settings), role ``posthoc``, ``needs_data=False``, ``rebuild="rank_changing"``.

Choices where the spec is silent (each tested in ``tests/tasks/surgery/test_para.py``):

- **Which modules are pooled.** The modules the run targets (``surgery.targets``, default ``o_proj`` +
  ``down_proj``); the reports pooled *all* modules, which is ``targets.target_modules: [all]``.
- **ε = 1 and rounding.** ``j`` is the first index with cumulative Σe² >= ε·total (numpy's left search), and
  the total is the last cumulative sum (the same summation order), so ε = 1 lands on the last e > 0: everything
  with e > 0 is kept, except values too small to change the float64 sum at all.
- **Zero components.** A component with σ = 0 has e = 0 < θ (θ > 0 always), so it is dropped.
- **rsLoRA.** The scaling s is kept exactly: ``alpha_pattern = s·k`` (s = α/r), or ``s·√k`` with ``use_rslora``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, register_policy

PRUNING_PAPER = "https://arxiv.org/abs/2604.27796"


@dataclass(frozen=True)
class ParaSelection:
    """The outcome of one ε-PARA threshold over pooled spectra.

    Attributes:
        epsilon: The requested share of energy ε.
        threshold: θ, in effective units (|s|·σ).
        total_energy: Σe² over every pooled component.
        retained_energy: Σe² over the kept components.
        masks: One boolean keep-mask per module, in the order given.
    """

    epsilon: float
    threshold: float
    total_energy: float
    retained_energy: float
    masks: tuple[Tensor, ...]

    @property
    def retained_ratio(self) -> float:
        """Kept share of the pooled energy (>= ε; ties at θ may keep more)."""
        return self.retained_energy / self.total_energy

    @property
    def ranks(self) -> tuple[int, ...]:
        """Components kept per module (k)."""
        return tuple(int(m.sum()) for m in self.masks)


def para_threshold(spectra: Sequence[Tensor], scalings: Sequence[float] | None, epsilon: float) -> ParaSelection:
    """One global energy threshold over the pooled effective spectra (EXTENSIONS §3 steps 1–4).

    Args:
        spectra: One singular-value vector σ per module (1-D, finite, >= 0, non-empty), in module order.
        scalings: One LoRA scaling s per module (finite, ≠ 0); None means s = 1 everywhere.
        epsilon: Requested energy share ε ∈ (0, 1].

    Returns:
        θ, the energies and one keep-mask per module (``|s|·σ >= θ``; ties are all kept).

    Raises:
        ValueError: ε outside (0, 1]; no spectra, an empty one, a non-finite or negative σ; a scaling that is
            missing, not finite or zero; zero pooled energy.
    """
    eps = float(epsilon)
    if not (math.isfinite(eps) and 0.0 < eps <= 1.0):
        raise ValueError(f"ε-PARA epsilon must lie in (0, 1], got {epsilon!r}; the reports used 0.90, 0.95, 0.99")
    if len(spectra) == 0:
        raise ValueError("ε-PARA needs at least one module's spectrum; none was given")
    if scalings is None:
        scalings = [1.0] * len(spectra)
    if len(scalings) != len(spectra):
        raise ValueError(f"ε-PARA got {len(spectra)} spectra but {len(scalings)} scalings; give one per module")
    effective = []
    for i, (sigma, s) in enumerate(zip(spectra, scalings)):
        if not isinstance(sigma, Tensor) or sigma.dim() != 1 or sigma.numel() == 0:
            shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
            raise ValueError(f"ε-PARA: spectrum {i} must be a non-empty 1-D tensor, got {shape}")
        v = sigma.detach().to(torch.float64).cpu()
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(f"ε-PARA: spectrum {i} must be finite and >= 0, got {v.tolist()}")
        if s is None or not math.isfinite(float(s)) or float(s) == 0.0:
            raise ValueError(f"ε-PARA: the scaling of module {i} must be finite and non-zero, got {s!r}")
        effective.append(abs(float(s)) * v)
    pooled = torch.cat(effective)
    ordered = torch.sort(pooled, descending=True, stable=True).values
    cumulative = torch.cumsum(ordered.square(), dim=0)
    total = float(cumulative[-1])  # the same summation as the cumulative sums, so ε = 1 lands on the last e > 0
    if total <= 0.0:
        raise ValueError("ε-PARA: the pooled spectra have zero energy (every σ is 0); nothing to threshold")
    target = torch.tensor([eps * total], dtype=torch.float64)
    j = min(int(torch.searchsorted(cumulative, target, side="left")), ordered.numel() - 1)
    theta = float(ordered[j])
    masks = tuple(e >= theta for e in effective)
    retained = float(sum(float(e[m].square().sum()) for e, m in zip(effective, masks)))
    return ParaSelection(eps, theta, total, retained, masks)


def rank_preserving_alpha(scaling: float, k: int, use_rslora: bool) -> float:
    """The ``lora_alpha`` that keeps a module's scaling s at rank k: ``s·k``, or ``s·√k`` with rsLoRA."""
    return float(scaling) * (math.sqrt(k) if use_rslora else k)


# --------------------------------------------------------------------------- registered edits


def _pool(setting: str):
    def pool(modules: list[PolicyInputs], cfg: EditConfig) -> dict:
        eps = getattr(cfg, setting).epsilon
        sel = para_threshold([m.sigma0 for m in modules], [m.scaling for m in modules], eps)
        params_before = params_after = 0
        for m, k in zip(modules, sel.ranks):
            width = sum(m.shape) if m.shape is not None else 0
            params_before += m.sigma0.numel() * width
            params_after += k * width
        return {
            "method": "epsilon_para",
            "paper": PRUNING_PAPER,
            "epsilon": eps,
            "threshold": sel.threshold,
            "total_energy": sel.total_energy,
            "retained_energy": sel.retained_energy,
            "retained_ratio": sel.retained_ratio,
            "modules": len(modules),
            "modules_zeroed": sum(1 for k in sel.ranks if k == 0),
            "components_before": sum(m.sigma0.numel() for m in modules),
            "components_kept": sum(sel.ranks),
            "parameter_ratio": params_after / params_before if params_before else None,
        }

    return pool


def _keep(inp: PolicyInputs) -> Tensor:
    e = abs(float(inp.scaling)) * inp.sigma0.detach().to(torch.float64).clamp_min(0.0)
    return e >= float(inp.pooled["threshold"])


def _para_fn(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """ε-PARA (EXTENSIONS §3): keep σ where |s|·σ >= the pooled threshold θ, drop the rest (rank becomes k)."""
    return torch.where(_keep(inp), inp.sigma0, torch.zeros_like(inp.sigma0))


def _para_describe(inp: PolicyInputs, cfg: EditConfig) -> dict:
    keep = _keep(inp)
    return {"rank_after": int(keep.sum()), "kept": [bool(x) for x in keep]}


for _name, _setting, _desc in (
    ("para", "para", "ε-PARA rank pruning: one global energy threshold over all modules, ε from settings (0.90)"),
    ("para_e95", "para_e95", "ε-PARA rank pruning at ε = 0.95 (the reports' middle value)"),
    ("para_e99", "para_e99", "ε-PARA rank pruning at ε = 0.99 (keeps ~80% of parameters in the reports)"),
):
    register_policy(_name, uses_sensitivity=False, role="posthoc", description=_desc, rebuild="rank_changing",
                    postprocess=False, needs_data=False, needs_shape=True, describe=_para_describe, reads=(_setting,),
                    pool=_pool(_setting))(_para_fn)  # fmt: skip
