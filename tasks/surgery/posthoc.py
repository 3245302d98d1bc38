"""The authors' data-free post-hoc spectrum reshapes: HNS, flat spectra and the ablation bank (EXTENSIONS §1, §4, §5).

Each method is a pure function on one module's singular values σ (descending, the *unscaled* spectrum of B·A)
returning the target spectrum t, and a registered policy (role ``posthoc``, ``needs_data=False``) that applies it
through :func:`tasks.surgery.policies.apply_policy`. They ignore the gradients, the calibration set and the EditConfig's
clamp and energy settings: each keeps the norm its spec says (``postprocess=False``, the target is exact), and all
are rebuilt **balanced** (``B' = U diag(√t)``, ``A' = diag(√t) Vᵀ``, EXTENSIONS §0), U, V, r and α unchanged.

Numerics (EXTENSIONS §0): the transforms run in float64 on σ clamped at >= 0 and return σ's dtype; only the flat
spectra refuse a negative σ instead (§5). Re-derived from ``src/finetune/spectral_edit/{posthoc_hns,flat,
ablations}.py`` of ``TTtianTT/peft-sft-lab`` as described in EXTENSIONS; the settings models
(:class:`HNSConfig`, :class:`TemperatureConfig`) are here, registered with their edits (``settings=``).

The edits register through :mod:`tasks.surgery.policy_registry` (never :mod:`tasks.surgery.policies`, which imports this
module so that they register whenever the registry is used; importing that one first keeps the canonical listing order).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig, SettingsModel
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, register_policy

PAPER = "https://arxiv.org/abs/2603.03995"
_TINY = 1e-12  # the reference's floor for "zero" sums and norms in flat, ablations and the effective rank

AblationMode = Literal["scalar_shrink", "exact_flat_nuclear", "top_shrink", "tail_lift", "temperature"]
ABLATION_MODES: tuple[AblationMode, ...] = ("scalar_shrink", "exact_flat_nuclear", "top_shrink", "tail_lift",
                                            "temperature")  # fmt: skip


# ---- settings (EXTENSIONS §1, §4): each registered beside its edit below ----------------------------------
HNS_FAST = (3.4445, -4.7750, 2.0315)  # EXTENSIONS §1 step 3
HNS_STABLE = (2.0, -1.5, 0.5)


class HNSConfig(SettingsModel):
    """Settings of Hybrid Newton–Schulz spectral reshaping, policy ``hns`` (EXTENSIONS §1): ``edit.hns``.

    Defaults are the library/CLI defaults (8 fast + 2 stable steps, nuclear norm restored, full strength). The
    authors' 18-checkpoint cohort ran 4 + 1 (``fast_steps=4, stable_steps=1``); ``0 + 0`` is the zero rebuild.
    """

    fast_steps: int = Field(8, ge=0, description="Steps of the fast polynomial x(a + b x² + c x⁴).")
    stable_steps: int = Field(2, ge=0, description="Steps of the stable polynomial after the fast ones.")
    fast_coefficients: tuple[float, float, float] = Field(HNS_FAST, description="(a, b, c) of the fast steps.")
    stable_coefficients: tuple[float, float, float] = Field(HNS_STABLE, description="(a, b, c) of the stable steps.")
    preserve_nuclear_norm: bool = Field(True, description="Rescale to the nuclear norm Σσ of the kept part.")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="Blend λ: t = σ + λ(x − σ) (0 = identity).")
    output_rank: int | None = Field(
        None, ge=1, description="Keep only the first output_rank components (the rest become 0); None = all r."
    )
    eps: float = Field(1e-7, gt=0.0, description="Floor of ‖σ‖₂ and of Σx (the fill threshold).")

    @field_validator("fast_coefficients", "stable_coefficients")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(c) for c in v):
            raise ValueError(f"HNS coefficients must be finite, got {v}; e.g. (3.4445, -4.775, 2.0315)")
        return v


class TemperatureConfig(SettingsModel):
    """Settings of the ``ablation_temperature`` transform t = S·σ^τ/Σσ^τ (EXTENSIONS §4): ``edit.ablation_temperature``.

    The authors' bank builds τ ∈ {1.0, 0.75, 0.5, 0.25, 0.0}, with no single default; 0.5 (the bank's middle, the
    first non-trivial value of a coarse sweep: τ = 1 is the identity, τ = 0 is flat_nuclear) is this project's.
    """

    tau: float = Field(0.5, ge=0.0, description="Temperature τ (finite, >= 0): 1 = identity, 0 = flat nuclear.")

    @field_validator("tau")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"ablation_temperature.tau must be finite and >= 0, got {v}; e.g. 0.5")
        return v


def _f64(sigma: Tensor) -> Tensor:
    if not isinstance(sigma, Tensor) or sigma.dim() != 1:
        shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be a 1-D tensor, got {shape}")
    return sigma.detach().to(torch.float64).clamp_min(0.0)


def effective_rank(sigma: Tensor) -> float:
    """``exp(H(p))`` with ``p = σ/Σσ`` (EXTENSIONS §0): entries with p <= 1e-12 are dropped; 0 if Σσ <= 1e-12."""
    s = _f64(sigma)
    total = float(s.sum())
    if total <= _TINY:
        return 0.0
    p = s / total
    p = p[p > _TINY]
    return float(torch.exp(-(p * p.log()).sum()))


def hns_spectrum(sigma: Tensor, settings: HNSConfig | None = None) -> Tensor:
    """Hybrid Newton–Schulz reshaping of one spectrum (EXTENSIONS §1; paper: https://arxiv.org/abs/2603.03995).

    ``r_out = r`` or ``min(max(1, output_rank), r)``, ``ref = σ[:r_out]``; ``x = σ/max(‖σ‖₂, eps)`` (Frobenius
    norm of the *full* spectrum); ``fast_steps`` × ``x ← x(a + b x² + c x⁴)`` with the fast coefficients, then
    ``stable_steps`` × with the stable ones; ``x = max(x[:r_out], 0)``; with ``preserve_nuclear_norm``,
    ``x ← x·Σref/Σx`` (or ``Σref/r_out`` everywhere when ``Σx <= eps``); ``t = ref + λ(x − ref)``.
    Zero values stay zero (both polynomials map 0 to 0); the order of σ is not preserved. This equals
    ``X ← aX + b(XXᵀ)X + c(XXᵀ)²X`` on ``X = BA/‖BA‖_F`` in the basis of B·A.

    Args:
        sigma: Singular values, shape (r,) (r = 0 returns a copy).
        settings: Steps, coefficients, L1 restoration, strength λ, output rank, eps (default: HNSConfig()).

    Returns:
        t, shape (r_out,), σ's dtype. An all-zero σ gives zeros.

    Raises:
        ValueError: σ is not 1-D, or the strength lies outside [0, 1].
    """
    cfg = settings or HNSConfig()
    if not 0.0 <= cfg.strength <= 1.0:
        raise ValueError(f"hns strength must lie in [0, 1], got {cfg.strength}")
    s = _f64(sigma)
    r = s.numel()
    if r == 0:
        return sigma.detach().clone()
    r_out = r if cfg.output_rank is None else min(max(1, int(cfg.output_rank)), r)
    ref = s[:r_out]
    x = s / max(float(torch.linalg.vector_norm(s)), cfg.eps)
    for (a, b, c), steps in ((cfg.fast_coefficients, cfg.fast_steps), (cfg.stable_coefficients, cfg.stable_steps)):
        for _ in range(steps):
            x2 = x * x
            x = x * (a + b * x2 + c * x2 * x2)
    x = x[:r_out].clamp_min(0.0)
    if cfg.preserve_nuclear_norm:
        total = float(x.sum())
        x = torch.full_like(x, float(ref.sum()) / r_out) if total <= cfg.eps else x * (ref.sum() / total)
    return (ref + cfg.strength * (x - ref)).to(sigma.dtype)


def flat_spectrum(sigma: Tensor, norm: Literal["fro", "nuclear"]) -> Tensor:
    """A constant spectrum at the original budget (EXTENSIONS §5; paper: https://arxiv.org/abs/2603.03995).

    ``fro``: every entry ``‖σ‖₂/√r`` (Frobenius norm kept); ``nuclear``: every entry ``Σσ/r`` (nuclear norm
    kept). All-zero σ gives zeros; a rank-deficient σ spreads its mass onto the zero directions.

    Args:
        sigma: Singular values, shape (r,), r >= 1, finite, >= 0.
        norm: ``fro`` or ``nuclear``.

    Returns:
        t, shape (r,), σ's dtype.

    Raises:
        ValueError: σ is not 1-D, empty, not finite or has a negative entry; an unknown norm.
    """
    if not isinstance(sigma, Tensor) or sigma.dim() != 1 or sigma.numel() == 0:
        shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"flat spectrum: sigma must be a non-empty 1-D tensor, got {shape}")
    s = sigma.detach().to(torch.float64)
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"flat spectrum: sigma must be finite and >= 0, got {s.tolist()}")
    r = s.numel()
    if norm == "fro":
        level = float(torch.linalg.vector_norm(s)) / math.sqrt(r)
    elif norm == "nuclear":
        level = float(s.sum()) / r
    else:
        raise ValueError(f"flat spectrum: norm must be 'fro' or 'nuclear', got {norm!r}")
    return torch.full_like(s, level).to(sigma.dtype)


def ablation_spectrum(sigma: Tensor, mode: AblationMode, tau: float | None = None) -> Tensor:
    """One deterministic reshape of the authors' ablation bank (EXTENSIONS §4; paper: https://arxiv.org/abs/2603.03995).

    With ``S = Σσ``, ``μ = S/r``:

    - ``scalar_shrink``: ``c·σ``, ``c = (S/√r)/‖σ‖₂`` (0 if ‖σ‖₂ <= 1e-12): the Frobenius norm of the *flat*
      spectrum, shape kept (not the HNS-matched ScalarShrink of §8.1);
    - ``exact_flat_nuclear``: μ everywhere (nuclear kept; lifts zero directions);
    - ``top_shrink``: ``min(σ, μ)`` (norm falls); ``tail_lift``: ``max(σ, μ)`` (norm rises; lifts zeros);
    - ``temperature``: τ = 0 → μ everywhere; S <= 1e-12 → 0; else ``S·p/Σp`` with ``p = σ^τ`` (0 where σ = 0),
      all-zero if Σp <= 1e-12 (nuclear kept; τ = 1 is the identity).

    Args:
        sigma: Singular values, shape (r,) (r = 0 is returned as is).
        mode: One of :data:`ABLATION_MODES`.
        tau: The temperature of ``temperature`` (finite, >= 0); ignored by the other modes.

    Returns:
        t, shape (r,), σ's dtype.

    Raises:
        ValueError: σ is not 1-D; an unknown mode; ``temperature`` without a finite τ >= 0.
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"ablation mode must be one of {', '.join(ABLATION_MODES)}; got {mode!r}")
    if mode == "temperature" and (tau is None or not math.isfinite(float(tau)) or float(tau) < 0):
        raise ValueError(f"ablation temperature needs a finite tau >= 0, got {tau!r}")
    s = _f64(sigma)
    r = s.numel()
    if r == 0:
        return sigma.detach().clone()
    total = float(s.sum())
    mu = total / r
    if mode == "scalar_shrink":
        fro = float(torch.linalg.vector_norm(s))
        t = s * ((total / math.sqrt(r)) / fro if fro > _TINY else 0.0)
    elif mode == "exact_flat_nuclear" or (mode == "temperature" and float(tau) == 0.0):
        t = torch.full_like(s, mu)
    elif mode == "top_shrink":
        t = s.clamp_max(mu)
    elif mode == "tail_lift":
        t = s.clamp_min(mu)
    elif total <= _TINY:
        t = torch.zeros_like(s)
    else:
        p = torch.where(s > 0, s.pow(float(tau)), torch.zeros_like(s))
        z = float(p.sum())
        t = p * (total / z) if z > _TINY else torch.zeros_like(s)
    return t.to(sigma.dtype)


# ---- registered edits -------------------------------------------------------------------------------------

_POSTHOC = {"uses_sensitivity": False, "needs_data": False, "role": "posthoc", "postprocess": False}


@register_policy(
    "hns", settings=HNSConfig, description="HNS: data-free Newton–Schulz flattening of σ, nuclear norm kept.",
    **_POSTHOC,
)
def hns(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """HNS spectral reshaping with ``cfg.hns`` (EXTENSIONS §1; paper: https://arxiv.org/abs/2603.03995).

    t = :func:`hns_spectrum` (σ, cfg.hns). With ``output_rank`` < r the dropped components are written as 0,
    so the rank-r adapter computes exactly the reference's truncated ``U[:, :r_out] diag(t) Vᵀ[:r_out]`` while
    its config (r, α) stays valid (EXTENSIONS §12.4: the reference writes rank-r_out factors under the old r,
    which PEFT cannot load; this is this project's choice). Defaults 8 + 2; the reports' cohort ran 4 + 1.
    """
    t = hns_spectrum(inp.sigma0, cfg.hns)
    pad = inp.sigma0.numel() - t.numel()
    return torch.cat([t, t.new_zeros(pad)]) if pad else t


@register_policy("flat_fro", description="Flat spectrum ‖σ‖₂/√r everywhere (Frobenius norm kept).", **_POSTHOC)
def flat_fro(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Flat spectrum at the Frobenius level (EXTENSIONS §5; paper: https://arxiv.org/abs/2603.03995).

    t = ``‖σ‖₂/√r`` in every entry. No settings.
    """
    return flat_spectrum(inp.sigma0, "fro")


@register_policy(
    "flat_nuclear",
    aliases=("exact_flat_nuclear",),
    description="Flat spectrum Σσ/r everywhere (nuclear norm kept).",
    **_POSTHOC,
)
def flat_nuclear(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Flat spectrum at the nuclear level (EXTENSIONS §5, = ``exact_flat_nuclear`` of §4; paper:
    https://arxiv.org/abs/2603.03995).

    t = ``Σσ/r`` in every entry. The ablation bank's ``exact_flat_nuclear`` is the same t, so it is an alias.
    """
    return flat_spectrum(inp.sigma0, "nuclear")


@register_policy(
    "ablation_scalar_shrink", description="Ablation: σ scaled to the flat spectrum's Frobenius norm.", **_POSTHOC
)
def ablation_scalar_shrink(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Shape-keeping shrink to the flat Frobenius level (EXTENSIONS §4; paper: https://arxiv.org/abs/2603.03995).

    t = ``σ·(Σσ/√r)/‖σ‖₂``. Named with its bank's prefix: it is not the HNS-matched ScalarShrink of §8.1.
    """
    return ablation_spectrum(inp.sigma0, "scalar_shrink")


@register_policy("ablation_top_shrink", description="Ablation: min(σ, mean σ) (only the head shrinks).", **_POSTHOC)
def ablation_top_shrink(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Head-only shrink (EXTENSIONS §4; paper: https://arxiv.org/abs/2603.03995).

    t = ``min(σ, μ)``, μ = Σσ/r; no norm restored (it falls).
    """
    return ablation_spectrum(inp.sigma0, "top_shrink")


@register_policy("ablation_tail_lift", description="Ablation: max(σ, mean σ) (only the tail grows).", **_POSTHOC)
def ablation_tail_lift(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Tail-only lift (EXTENSIONS §4; paper: https://arxiv.org/abs/2603.03995).

    t = ``max(σ, μ)``, μ = Σσ/r; no norm restored (it rises); zero directions are lifted.
    """
    return ablation_spectrum(inp.sigma0, "tail_lift")


@register_policy(
    "ablation_temperature", settings=TemperatureConfig,
    description="Ablation: Σσ·σ^τ/Σσ^τ (τ from cfg, nuclear norm kept).", **_POSTHOC
)
def ablation_temperature(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Spectral temperature with ``cfg.ablation_temperature.tau`` (EXTENSIONS §4; paper:
    https://arxiv.org/abs/2603.03995).

    t = ``S·σ^τ/Σσ^τ``: τ = 1 is the identity, τ = 0 the flat nuclear spectrum, τ in between flattens while
    keeping the nuclear norm. Default τ = 0.5 (this project's choice; the bank runs τ ∈ {1, .75, .5, .25, 0}).
    """
    return ablation_spectrum(inp.sigma0, "temperature", cfg.ablation_temperature.tau)
