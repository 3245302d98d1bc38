"""Marchenko–Pastur based edits: Gavish–Donoho hard threshold and RMT bulk-only editing (EXTENSIONS §2, §6).

Both compare a module's LoRA spectrum σ with the Marchenko–Pastur (MP) law of a noise matrix of the **full layer
shape** (d_out × d_in, the rows of U and of V), so their policies need ``PolicyInputs.shape``.

- ``dg_hard`` (§6, data-free): the optimal hard threshold for unknown noise (Gavish & Donoho,
  https://arxiv.org/abs/1305.5870). For LoRA r ≪ min(d_out, d_in), so the zero-padded median, and with it the
  threshold, is 0: the edit is an exact identity and the module keeps its original bytes. Per EXTENSIONS §11 it is
  a byte-identity sanity check, not a candidate worth scoring.
- ``rmt_bulk_only`` (§2, needs the calibration pass): labels components signal / near-edge / bulk against a
  conservative MP edge and lets a gradient policy change only the bulk.

The two use different MP medians on purpose (EXTENSIONS §12.1): the labelling a 20,000-point grid (0.652875 at
β = 1), the threshold Gauss–Legendre quadrature (0.652776); each keeps its own for parity with the reference.

Both register through :mod:`tasks.surgery.policy_registry` (never :mod:`tasks.surgery.policies`, which imports this
module so that they register whenever the registry is used). ``rmt_bulk_only`` resolves its base policy by name at call
time, so the paper's policies must be registered by then: :func:`tasks.surgery.policies.apply_policy`, its caller, sees
to that.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig, SettingsModel
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, get_policy, preserve_energy, register_policy

_EPS = 1e-8
SIGNAL, NEAR_EDGE, BULK = "signal", "near_edge", "bulk"


def _beta(d_out: int, d_in: int) -> float:
    if min(d_out, d_in) < 1:
        raise ValueError(f"layer shape must have both dimensions >= 1, got ({d_out}, {d_in})")
    return min(d_out, d_in) / max(d_out, d_in)


# ---- Gavish–Donoho (EXTENSIONS §6) ---------------------------------------------------------------------------


def gd_lambda_star(beta: float) -> float:
    """``λ*(β) = √(2(β+1) + 8β/(β+1+√(β²+14β+1)))``, the known-noise optimal coefficient (EXTENSIONS §6 step 3)."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / (beta + 1 + math.sqrt(beta * beta + 14 * beta + 1)))


def _mp_cdf_theta(theta: float, beta: float, order: int) -> float:
    """MP CDF at ``x(θ) = (1−√β)² + 4√β sin²(θ/2)``: Gauss–Legendre of ``2 sin²t/(πx(t))`` over [0, θ]."""
    if theta <= 0.0:
        return 0.0
    nodes, weights = np.polynomial.legendre.leggauss(order)
    t = 0.5 * theta * (nodes + 1.0)
    x = (1.0 - math.sqrt(beta)) ** 2 + 4.0 * math.sqrt(beta) * np.sin(t / 2.0) ** 2
    return float(np.sum(0.5 * theta * weights * 2.0 * np.sin(t) ** 2 / (np.pi * x)))


@functools.lru_cache(maxsize=256)
def mp_median_quadrature(beta: float) -> float:
    """Median of the MP law with ratio β, as Gavish–Donoho's threshold computes it (EXTENSIONS §6 step 4).

    β = 1: the closed-form CDF ``(θ + sin θ)/π``; otherwise Gauss–Legendre quadrature. 64 bisection steps on
    θ ∈ [0, π]; the quadrature order doubles 64 → 1024 until two successive medians differ by < 1e-11.

    Raises:
        ValueError: β outside (0, 1], or the quadrature does not settle by order 1024.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"MP median needs 0 < beta <= 1, got {beta}")
    sb = math.sqrt(beta)

    def median(cdf) -> float:
        lo, hi = 0.0, math.pi
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
        theta = 0.5 * (lo + hi)
        return (1.0 - sb) ** 2 + 4.0 * sb * math.sin(theta / 2.0) ** 2

    if beta == 1.0:
        return median(lambda th: (th + math.sin(th)) / math.pi)
    prev, order = median(lambda th: _mp_cdf_theta(th, beta, 64)), 128
    while order <= 1024:
        cur = median(lambda th, o=order: _mp_cdf_theta(th, beta, o))
        if abs(cur - prev) < 1e-11:
            return cur
        prev, order = cur, order * 2
    raise ValueError(f"MP median quadrature did not converge for beta={beta} (order 1024)")


def gd_omega(beta: float) -> float:
    """``ω(β) = λ*(β)/√μ_β``, the unknown-noise threshold per unit median (EXTENSIONS §6 step 5)."""
    return gd_lambda_star(beta) / math.sqrt(mp_median_quadrature(beta))


def dg_threshold(sigma: Tensor, d_out: int, d_in: int) -> tuple[float, float, float]:
    """``(median, threshold, β)`` of Gavish–Donoho for σ in a d_out × d_in layer (EXTENSIONS §6 steps 1-5).

    The median is numpy's, of σ zero-padded to p = min(d_out, d_in) ("the full spectrum").

    Raises:
        ValueError: σ is not 1-D, longer than p, not finite or has a negative entry; a dimension < 1.
    """
    beta = _beta(d_out, d_in)
    p = min(d_out, d_in)
    if not isinstance(sigma, Tensor) or sigma.dim() != 1:
        raise ValueError(f"dg_hard: sigma must be a 1-D tensor, got {getattr(sigma, 'shape', type(sigma))}")
    s = sigma.detach().to(torch.float64).cpu().numpy()
    if s.size > p:
        raise ValueError(f"dg_hard: {s.size} singular values exceed min(d_out, d_in) = {p}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"dg_hard: sigma must be finite and >= 0, got {s.tolist()}")
    padded = np.zeros(p)
    padded[: s.size] = s
    median = float(np.median(padded))
    return median, gd_omega(beta) * median, beta


def dg_hard_spectrum(sigma: Tensor, d_out: int, d_in: int) -> Tensor:
    """Gavish–Donoho hard threshold (EXTENSIONS §6; https://arxiv.org/abs/1305.5870).

    Keeps σ_k strictly above ``ω(β)·median`` (float64 compare) and zeroes the rest; no rescale.

    Args:
        sigma: Singular values, shape (r,), r <= min(d_out, d_in), finite, >= 0.
        d_out: Rows of the layer (of B and U).
        d_in: Columns of the layer (of A; rows of V).

    Returns:
        t, shape (r,), σ's dtype; kept entries are σ's exact values.
    """
    _, threshold, _ = dg_threshold(sigma, d_out, d_in)
    s = sigma.detach().to(torch.float64)
    return torch.where(s > threshold, s, torch.zeros_like(s)).to(sigma.dtype)


def _dg_describe(inp: PolicyInputs, cfg: EditConfig) -> dict:
    median, threshold, beta = dg_threshold(inp.sigma0, *inp.shape)
    return {"dg_median": median, "dg_threshold": threshold, "dg_beta": beta, "dg_omega": gd_omega(beta)}


@register_policy(
    "dg_hard",
    uses_sensitivity=False,
    needs_data=False,
    role="posthoc",
    postprocess=False,
    needs_shape=True,
    keep_identical=True,
    describe=_dg_describe,
    description="Gavish–Donoho hard threshold (an exact identity on LoRA: a byte-identity check).",
)
def dg_hard(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Gavish–Donoho hard threshold per module (EXTENSIONS §6; paper: https://arxiv.org/abs/2603.03995).

    t = :func:`dg_hard_spectrum` (σ, d_out, d_in). A module left unchanged keeps its original factor bytes
    (``keep_identical``); a changed one is rebuilt balanced at the same r. On LoRA it is an identity (§6).
    """
    return dg_hard_spectrum(inp.sigma0, *inp.shape)


# ---- RMT labelling and bulk-only editing (EXTENSIONS §2) -------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _mp_median_grid_cached(beta: float) -> float:
    theta = np.linspace(0.0, np.pi, 20000)
    x = 1.0 + beta - 2.0 * np.sqrt(beta) * np.cos(theta)
    density = 2.0 * np.sin(theta) ** 2 / (np.pi * np.maximum(x, 1e-12))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(theta))])
    cdf /= cdf[-1]
    return float(x[int(np.argmax(cdf >= 0.5))])


def mp_median_grid(beta: float) -> float:
    """Median of the MP law as the RMT labelling computes it (EXTENSIONS §2 step 2): β rounded to 8 decimals,
    ``x(θ) = 1 + β − 2√β cos θ`` on 20,000 θ ∈ [0, π], density ``2 sin²θ/(π·max(x, 1e-12))``, trapezoid CDF,
    x at the first index where CDF >= 0.5. β = 1 gives 0.652875 (exact: 0.652776).

    Raises:
        ValueError: β outside (0, 1].
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"MP median needs 0 < beta <= 1, got {beta}")
    return _mp_median_grid_cached(round(float(beta), 8))


@dataclass(frozen=True)
class RMTLabels:
    """MP labels of one module's components (EXTENSIONS §2).

    Attributes:
        labels: One of ``signal``, ``near_edge``, ``bulk`` per component, in σ's order.
        tail: Size t of the tail (the t smallest σ) the noise level is estimated from.
        beta: ``min(d_out, d_in)/max(d_out, d_in)``.
        mp_median: The grid MP median m(β).
        noise_var: ``v̂ = median(tail σ²)/m(β)``.
        sigma_plus: The MP edge ``√v̂(1 + √β)``.
        edge: The conservative edge ``max(σ₊, max tail)``.
    """

    labels: tuple[str, ...]
    tail: int
    beta: float
    mp_median: float
    noise_var: float
    sigma_plus: float
    edge: float

    @property
    def bulk(self) -> list[int]:
        """Indices of the bulk components."""
        return [i for i, lab in enumerate(self.labels) if lab == BULK]

    def counts(self) -> dict[str, int]:
        """Number of components per label."""
        return {lab: self.labels.count(lab) for lab in (SIGNAL, NEAR_EDGE, BULK)}


def rmt_labels(sigma: Tensor, d_out: int, d_in: int, *, tail_count: int = 0, edge_margin: float = 0.10) -> RMTLabels:
    """Label σ against a conservative MP edge (EXTENSIONS §2, "Labelling"; data-free).

    Tail size ``t = 1`` if r <= 1, else ``clip(tail_count, 1, r−1)`` if tail_count > 0, else ``clip(⌊r/2⌋, 1,
    r−1)``; ``v̂ = median(tail σ²)/m(β)`` (numpy median: an even t averages the centre pair); ``σ₊ = √v̂(1+√β)``;
    ``e = max(σ₊, max tail)``. ``signal`` if σ_k > (1+m)e, ``bulk`` if σ_k < max(0, (1−m)e), else ``near_edge``.
    Bulk may reach beyond the tail; a lone component (r = 1) is bulk for β ≳ 0.02.

    Raises:
        ValueError: σ is not a non-empty 1-D tensor of finite values; a layer dimension < 1.
    """
    if not isinstance(sigma, Tensor) or sigma.dim() != 1 or sigma.numel() == 0:
        raise ValueError(f"rmt_labels: sigma must be a non-empty 1-D tensor, got {getattr(sigma, 'shape', sigma)}")
    s = sigma.detach().to(torch.float64).cpu().numpy()
    if not np.isfinite(s).all():
        raise ValueError(f"rmt_labels: sigma must be finite, got {s.tolist()}")
    r = s.size
    if r <= 1:
        t = 1
    elif tail_count > 0:
        t = min(max(int(tail_count), 1), r - 1)
    else:
        t = min(max(r // 2, 1), r - 1)
    beta = _beta(d_out, d_in)
    m_beta = mp_median_grid(beta)
    tail = np.sort(s)[:t]
    noise_var = float(np.median(tail**2)) / m_beta
    sigma_plus = math.sqrt(noise_var) * (1.0 + math.sqrt(beta))
    edge = max(sigma_plus, float(tail.max()))
    hi, lo = (1.0 + edge_margin) * edge, max(0.0, (1.0 - edge_margin) * edge)
    labels = tuple(SIGNAL if v > hi else BULK if v < lo else NEAR_EDGE for v in s)
    return RMTLabels(labels, t, beta, m_beta, noise_var, sigma_plus, edge)


class RMTConfig(SettingsModel):
    """Settings of Marchenko–Pastur labelling and bulk-only editing, policy ``rmt_bulk_only`` (EXTENSIONS §2).

    Defaults are the reference CLI's (``--rmt_tail_count 0``, ``--rmt_edge_margin 0.10``); the wrapped policy
    defaults to the reference edit CLI's default mode, ``abs_select`` (METHOD §16; the §2 test vectors use it).
    """

    tail_count: int = Field(0, ge=0, description="Tail size t (smallest σ); 0 = ⌊r/2⌋; clipped to [1, r−1].")
    edge_margin: float = Field(0.10, ge=0.0, description="Margin m around the conservative MP edge e.")
    base_policy: str = Field(
        "abs_select", min_length=1, description="Gradient policy applied to the bulk components (by name)."
    )


def _labels_for(inp: PolicyInputs, cfg: EditConfig) -> RMTLabels:
    c = cfg.rmt_bulk_only
    return rmt_labels(inp.sigma0, *inp.shape, tail_count=c.tail_count, edge_margin=c.edge_margin)


def _rmt_describe(inp: PolicyInputs, cfg: EditConfig) -> dict:
    lab = _labels_for(inp, cfg)
    return {"rmt_labels": list(lab.labels), "rmt_counts": lab.counts(), "rmt_edge": lab.edge,
            "rmt_sigma_plus": lab.sigma_plus, "rmt_noise_var": lab.noise_var, "rmt_tail": lab.tail,
            "rmt_beta": lab.beta, "rmt_base_policy": cfg.rmt_bulk_only.base_policy}  # fmt: skip


def _rmt_reads(cfg: EditConfig) -> tuple[str, ...]:
    # the clamp and rescale it applies itself, and whatever its base policy reads (its own settings: settings=)
    base = get_policy(cfg.rmt_bulk_only.base_policy)
    return ("sigma_clip_min", "preserve_energy", *base.settings(cfg))


@register_policy(
    "rmt_bulk_only",
    uses_sensitivity=True,
    role="posthoc",
    postprocess=False,
    needs_shape=True,
    describe=_rmt_describe,
    reads=_rmt_reads,
    settings=RMTConfig,
    description="A gradient policy (cfg.rmt_bulk_only.base_policy) on the MP-bulk components only.",
)
def rmt_bulk_only(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """RMT bulk-only editing (EXTENSIONS §2; paper: https://arxiv.org/abs/2603.03995).

    1. ``σ_pol`` = the base policy (``cfg.rmt_bulk_only.base_policy``, default ``abs_select``) with its clamp at
       ``sigma_clip_min`` and *module-wide* ``preserve_energy``, as :func:`tasks.surgery.policies.apply_policy` runs it.
    2. ``t = σ``; ``t[bulk] = σ_pol[bulk]``: signal and near-edge entries stay exactly σ.
    3. Unless ``preserve_energy`` is ``none`` or the bulk is empty, the bulk alone is rescaled to its own norm:
       ``l1`` by ``max(Σσ[bulk], 0)/max(Σt[bulk], 1e-8)``, ``l2`` the same with ℓ2 norms, so the module's norm
       is kept exactly. (Step 1's rescale is thus superseded on the bulk, EXTENSIONS §12.3.)

    Raises:
        ValueError: the base policy is unknown, is this policy, or is not a gradient policy or random control.
    """
    base = get_policy(cfg.rmt_bulk_only.base_policy)
    if base.role not in ("policy", "random_control"):
        raise ValueError(f"rmt_bulk_only.base_policy must be a reweighting policy of METHOD §7/§12 (role policy "
                         f"or random_control), got {base.name!r} (role {base.role}); e.g. abs_select")  # fmt: skip
    sigma0 = inp.sigma0
    pol = preserve_energy(sigma0, base.fn(inp, cfg).clamp_min(float(cfg.sigma_clip_min)), cfg.preserve_energy)
    bulk = torch.tensor(_labels_for(inp, cfg).bulk, dtype=torch.long, device=sigma0.device)
    t = sigma0.clone()
    if bulk.numel() == 0:
        return t
    t[bulk] = pol[bulk].to(t.dtype)
    mode = cfg.preserve_energy
    if mode == "l1":
        t[bulk] = t[bulk] * (sigma0[bulk].sum().clamp_min(0.0) / t[bulk].sum().clamp_min(_EPS))
    elif mode == "l2":
        n0 = torch.linalg.vector_norm(sigma0[bulk]).clamp_min(0.0)
        t[bulk] = t[bulk] * (n0 / torch.linalg.vector_norm(t[bulk]).clamp_min(_EPS))
    return t
