"""Reweighting policies of Spectral Surgery: σ0 and sensitivities in, new singular values out (METHOD §6-§12).

Paper: https://arxiv.org/abs/2603.03995. Every policy is a small pure function registered by name; it maps
``PolicyInputs`` (σ0, the normalised magnitude â and signed ĝ of the per-component gradient ∂L/∂σ_k) to σ̃
without touching its inputs. :func:`apply_policy` wraps one in the reference order: normalise (§6) →
policy (§7, §12) → clamp at ``sigma_clip_min`` → energy preservation (§9). Semantics, degenerate cases
included (§11), follow ``src/finetune/spectral_edit/edit_strategies.py`` of ``TTtianTT/peft-sft-lab``.

The registry machinery (``PolicyInputs``, ``PolicySpec``, ``Role``/``ROLES``, ``register_policy``,
``get_policy``, ``list_policies``; an unknown name raises :class:`tasks.names.UnknownNameError`) and the shared helpers
``normalize`` and ``preserve_energy`` live in :mod:`tasks.surgery.policy_registry`, which imports no module that
registers policies; this module re-exports all of them, so ``from tasks.surgery.policies import ...`` keeps working (the
registry's dicts ``POLICIES`` is the registry module's own :class:`tasks.names.Registry`). This module holds the paper's
policies, the control ladder, :func:`policy_counts` and :func:`apply_policy`.

The registry also holds the control ladder's edits (EXTENSIONS §8.3, §8.4, §11), each with a ``role``:
``zero_rebuild`` / ``zero_rebuild_one_sided`` (canaries: t = σ, never promoted) and ``global_scalar``
(t = γσ with a calibrated γ, see :mod:`tasks.surgery.global_scalar`; a legitimate edit that may be promoted). They
skip clamp and energy preservation (their target is exact) and name the factor form they are rebuilt in.

The authors' post-hoc edits (EXTENSIONS §1, §2, §4-§6: HNS, flat spectra, the ablation transforms, Gavish–Donoho
and RMT bulk-only, ε-PARA, calibration-guided module selection) have role ``posthoc``; they live in
:mod:`tasks.surgery.posthoc`, :mod:`tasks.surgery.rmt`, :mod:`tasks.surgery.para` and
:mod:`tasks.surgery.module_selection`, which register themselves when this module is imported (last lines).
``needs_data`` tells the data-free edits apart.

Over 400 lines: a catalogue: one short, independent registered function per policy of METHOD §6-§12.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig
# re-exported: the public names this module has always had
from spectral_surgery.tasks.surgery.policy_registry import (  # noqa: F401
    EPS,
    NEVER_PROMOTED,
    ROLES,
    PolicyInputs,
    PolicySpec,
    Rebuild,
    Role,
    get_policy,
    list_policies,
    normalize,
    preserve_energy,
    register_policy,
)

PAPER = "https://arxiv.org/abs/2603.03995"

# The EditConfig fields each policy reads (its ``reads``: what its candidates are keyed by), in groups they share.
FACTORS = ("amp_factor", "sup_factor", "mid_factor")
COUNTS = ("core_frac", "noise_frac", "min_core_k", *FACTORS)  # policy_counts + _three_level
SMOOTH = ("core_frac", "noise_frac", "smooth_temperature", *FACTORS)


def policy_counts(r: int, cfg: EditConfig) -> tuple[int, int]:
    """``(k_core, k_noise)`` of the hard gates (METHOD §7.1): ``k_core = min(r, max(round(r·core_frac),
    min_core_k))``, ``k_noise = max(0, min(round(r·noise_frac), r − k_core))``; Python's round (half to even)."""
    k_core = min(r, max(int(round(r * cfg.core_frac)), cfg.min_core_k))
    k_noise = max(0, min(int(round(r * cfg.noise_frac)), r - k_core))
    return k_core, k_noise


def _three_level(sigma0: Tensor, core_idx: Tensor, noise_idx: Tensor, cfg: EditConfig) -> Tensor:
    gate = torch.full_like(sigma0, float(cfg.mid_factor))
    gate[core_idx] = float(cfg.amp_factor)
    gate[noise_idx] = float(cfg.sup_factor)  # assigned second, as in the reference (sets never overlap)
    return sigma0 * gate


def _double_sigmoid(
    x: Tensor, t_low: Tensor | float, t_high: Tensor | float, tau: Tensor | float, cfg: EditConfig
) -> Tensor:
    """``mid − (mid−sup)·sigmoid((t_low − x)/τ) + (amp−mid)·sigmoid((x − t_high)/τ)``."""
    mid, sup, amp = float(cfg.mid_factor), float(cfg.sup_factor), float(cfg.amp_factor)
    return mid - (mid - sup) * torch.sigmoid((t_low - x) / tau) + (amp - mid) * torch.sigmoid((x - t_high) / tau)


@register_policy(
    "abs_select",
    reads=COUNTS,
    description="Hard gate by |g| rank: top k_core ×amp, bottom k_noise ×sup.",
)
def abs_select(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Hard three-level gate by |g| rank (METHOD §7.1; paper: https://arxiv.org/abs/2603.03995).

    ``order = argsort(â, descending)``; ``w[order[:k_core]] = amp``, ``w[order[r−k_noise:]] = sup``, else
    ``mid``; ``σ̃ = σ0 ⊙ w`` with the counts of :func:`policy_counts`. Only the |g| rank matters. When
    â is constant (g ≡ 0) the unstable argsort still picks core and noise sets: the edit still happens.
    """
    k_core, k_noise = policy_counts(int(inp.sigma0.numel()), cfg)
    order = torch.argsort(inp.magnitude, descending=True)
    noise = order[order.numel() - k_noise :]  # explicit start: order[-0:] would be everything
    return _three_level(inp.sigma0, order[:k_core], noise, cfg)


@register_policy(
    "smooth_abs",
    reads=(*SMOOTH, "smooth_center_q", "smooth_align_mid"),
    description="Sigmoid gate over |g| between sup and amp, centred on the median.",
)
def smooth_abs(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Continuous sigmoid gate over |g| (METHOD §7.2; paper: https://arxiv.org/abs/2603.03995).

    ``w = sup + (amp − sup)·sigmoid((â − μ)/τ)`` with ``τ = max(T·max(Q(q_hi) − Q(q_lo), 1e-8), 1e-8)``,
    window ``(q_lo, q_hi) = (noise_frac, 1 − core_frac)`` (fallback (0.25, 0.75) if empty),
    ``μ = Q(center_q) − τ·logit((mid − sup)/(amp − sup))`` when ``smooth_align_mid`` and sup < mid < amp
    (so gate(centre) = mid), else ``μ = Q(center_q)``. Q is the linear-interpolation quantile.
    Degenerate â (max − min < 1e-12): ``w ≡ mid``.
    """
    x, sigma0 = inp.magnitude.float(), inp.sigma0
    if float((x.max() - x.min()).abs()) < 1e-12:
        return sigma0 * float(cfg.mid_factor)
    q_lo, q_hi = min(1.0, max(0.0, cfg.noise_frac)), min(1.0, max(0.0, 1.0 - cfg.core_frac))
    if q_hi <= q_lo:
        q_lo, q_hi = 0.25, 0.75
    scale = (torch.quantile(x, q_hi) - torch.quantile(x, q_lo)).clamp_min(EPS)
    tau = (float(cfg.smooth_temperature) * scale).clamp_min(EPS)
    mu = torch.quantile(x, min(1.0, max(0.0, cfg.smooth_center_q)))
    sup, mid, amp = float(cfg.sup_factor), float(cfg.mid_factor), float(cfg.amp_factor)
    if cfg.smooth_align_mid and amp > sup and sup < mid < amp:
        p = torch.tensor(min(1.0 - 1e-4, max(1e-4, (mid - sup) / (amp - sup))), device=x.device)
        mu = mu - tau * (torch.log(p) - torch.log(1.0 - p))
    gate = sup + (amp - sup) * torch.sigmoid((x - mu) / tau)
    return sigma0 * gate.to(sigma0.dtype)


@register_policy(
    "random_index",
    uses_sensitivity=False,
    is_control=True,
    needs_data=True,  # edits the modules the gradient pass reached, like the policies it is matched to
    reads=COUNTS,
    description="Matched random control: abs_select's counts on random components.",
)
def random_index(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Matched random control (METHOD §7.3; paper: https://arxiv.org/abs/2603.03995).

    ``π = randperm(r)``; ``w[π[:k_core]] = amp``, ``w[π[k_core:k_core+k_noise]] = sup`` (the *next* block,
    not the tail), else ``mid``; same counts as ``abs_select``, sensitivities ignored.
    """
    sigma0 = inp.sigma0
    r = int(sigma0.numel())
    k_core, k_noise = policy_counts(r, cfg)
    # Drawn on the CPU so one seeded CPU generator gives the same permutation wherever σ0 lives.
    perm = torch.randperm(r, generator=inp.generator).to(sigma0.device)
    return _three_level(sigma0, perm[:k_core], perm[k_core : k_core + k_noise], cfg)


@register_policy(
    "grad_direction",
    aliases=("gd",),
    reads=("eta", "update_mode", "asymmetric_update", "eta_suppress", "eta_enhance", "pos_power"),
    description="Signed step against ∂L/∂σ: shrink g>0, grow g<0.",
)
def grad_direction(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Signed gradient step on σ (METHOD §7.4, CLI mode ``gd``; paper: https://arxiv.org/abs/2603.03995).

    Asymmetric: ``e = η_sup·max(ĝ, 0)^pos_power − η_enh·max(−ĝ, 0)``; symmetric: ``e = η·ĝ``.
    Multiplicative: ``σ̃ = σ0 ⊙ exp(−e)``; additive: ``σ̃ = σ0 − e`` (normalised-gradient units, may go
    negative; the clamp in :func:`apply_policy` handles it).
    """
    g = inp.signed
    if cfg.asymmetric_update:
        g_pos = torch.relu(g)
        if cfg.pos_power != 1.0:
            g_pos = g_pos.pow(cfg.pos_power)
        e = cfg.eta_suppress * g_pos + cfg.eta_enhance * (-torch.relu(-g))
    else:
        e = cfg.eta * g
    if cfg.update_mode == "additive":
        return inp.sigma0 - e
    return inp.sigma0 * torch.exp(-e)


@register_policy(
    "double_smooth",
    reads=SMOOTH,
    description="Two sigmoids: suppress below Q(noise_frac), amplify above Q(1−core).",
)
def double_smooth(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Double-sided sigmoid gate over |g| (METHOD §12; paper: https://arxiv.org/abs/2603.03995).

    ``w = mid − (mid−sup)·sigmoid((t_noise − â)/τ) + (amp−mid)·sigmoid((â − t_core)/τ)`` with
    ``t_noise = Q(noise_frac)``, ``t_core = Q(1 − core_frac)`` (fallback quantiles 0.45/0.55 when
    noise_frac >= 1 − core_frac) and ``τ = max(T·max(max â − min â, 1e-8), 1e-8)``, T = smooth_temperature.
    No degenerate special case: constant â gives a uniform gate (identity after L1).
    """
    x, sigma0 = inp.magnitude.float(), inp.sigma0
    q_noise, q_core = min(1.0, max(0.0, cfg.noise_frac)), min(1.0, max(0.0, 1.0 - cfg.core_frac))
    if q_noise >= q_core:
        q_noise, q_core = 0.45, 0.55
    tau = (float(cfg.smooth_temperature) * (x.max() - x.min()).clamp_min(EPS)).clamp_min(EPS)
    gate = _double_sigmoid(x, torch.quantile(x, q_noise), torch.quantile(x, q_core), tau, cfg)
    return sigma0 * gate.to(sigma0.dtype)


@register_policy(
    "z_score",
    reads=("z_high", "z_low", "z_tau", "z_fallback_std", *FACTORS),
    description="Double sigmoid in z-space, z = (|g| − mean)/std.",
)
def z_score(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Double sigmoid in z-space (METHOD §12; paper: https://arxiv.org/abs/2603.03995).

    ``z = (â − mean â)/max(std â, 1e-8)`` (population std); ``w = mid − (mid−sup)·sigmoid((z_low − z)/τ)
    + (amp−mid)·sigmoid((z − z_high)/τ)``, τ = max(z_tau, 1e-8). Identity (σ̃ = σ0) if
    std < z_fallback_std or max|z| < 1e-3.
    """
    x, sigma0 = inp.magnitude.float(), inp.sigma0
    std = x.std(unbiased=False)
    z = (x - x.mean()) / std.clamp_min(EPS)
    if float(std) < float(cfg.z_fallback_std) or float(z.abs().max()) < 1e-3:
        return sigma0.clone()
    gate = _double_sigmoid(z, float(cfg.z_low), float(cfg.z_high), max(EPS, float(cfg.z_tau)), cfg)
    return sigma0 * gate.to(sigma0.dtype)


@register_policy(
    "robust_z",
    reads=("robust_z_high", "robust_z_low", "robust_z_tau", "robust_fallback_sigma", *FACTORS),
    description="Double sigmoid in robust z-space, z = (|g| − median)/(1.4826·MAD).",
)
def robust_z(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Double sigmoid in robust z-space (METHOD §12; paper: https://arxiv.org/abs/2603.03995).

    ``s = max(1.4826·median|â − m|, 1e-8)`` with ``m = median â``; ``z = (â − m)/s``; the same gate as
    :func:`z_score` with robust_z_low/robust_z_high/robust_z_tau. Identity if s < robust_fallback_sigma.
    The medians are ``torch.median``, which for an even count takes the LOWER middle value (as the reference).
    """
    x, sigma0 = inp.magnitude.float(), inp.sigma0
    median = x.median()
    sigma_robust = ((x - median).abs().median() * 1.4826).clamp_min(EPS)
    if float(sigma_robust) < float(cfg.robust_fallback_sigma):
        return sigma0.clone()
    z = (x - median) / sigma_robust
    gate = _double_sigmoid(
        z, float(cfg.robust_z_low), float(cfg.robust_z_high), max(EPS, float(cfg.robust_z_tau)), cfg
    )
    return sigma0 * gate.to(sigma0.dtype)


# ---- the control ladder (EXTENSIONS §8.3, §8.4, §11) ------------------------------------------------------


@register_policy(
    "zero_rebuild",
    uses_sensitivity=False,
    role="canary",
    postprocess=False,
    description="Canary: t = σ, rebuilt balanced like the policies (the noise floor of the rebuild).",
)
def zero_rebuild(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Zero rebuild in the policies' balanced form (EXTENSIONS §8.4; paper: https://arxiv.org/abs/2603.03995).

    ``t = σ`` exactly, written as ``B' = U diag(√σ)``, ``A' = diag(√σ) Vᵀ``: B·A is unchanged in exact
    arithmetic, but the B/A balance moves and storage rounding may flip greedy outputs. Compare a
    balanced-rebuild candidate with this, not only with the untouched adapter. Never promoted. Data-free
    (``needs_data=False``), so it rebuilds every target module, as the balanced post-hoc edits do (HNS ``0+0``).
    """
    return inp.sigma0.clone()


@register_policy(
    "zero_rebuild_one_sided",
    uses_sensitivity=False,
    role="canary",
    rebuild="one_sided",
    postprocess=False,
    description="Canary: t = σ, rebuilt one-sided (the noise floor of global_scalar).",
)
def zero_rebuild_one_sided(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Zero rebuild in the one-sided form (EXTENSIONS §8.4; paper: https://arxiv.org/abs/2603.03995).

    ``t = σ`` written as ``B' = U diag(σ)``, ``A' = Vᵀ``: the noise floor of ``global_scalar`` (which is
    this at γ = 1). Never promoted.
    """
    return inp.sigma0.clone()


@register_policy(
    "global_scalar",
    uses_sensitivity=False,
    role="scalar_control",
    rebuild="one_sided",
    postprocess=False,
    needs_gamma=True,
    description="Calibrated global scalar: t = γσ in every edited module, γ chosen on held-out data.",
)
def global_scalar(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Calibrated global scalar (EXTENSIONS §8.3; paper: https://arxiv.org/abs/2603.03995).

    ``t_m = γ·σ_m`` with one γ for all edited modules, written one-sided (``B' = U diag(γσ)``, ``A' = Vᵀ``),
    scaling s unchanged: ``W0 + γ·s·BA`` interpolates between the base (γ = 0) and the adapter (γ = 1).
    γ comes from :mod:`tasks.surgery.global_scalar` (chosen on data never used for the decision). A candidate
    must beat this to show that its edit is more than a rescaling (EXTENSIONS §11).
    """
    if inp.gamma is None:
        raise ValueError("global_scalar needs gamma (choose it with tasks.surgery.global_scalar first)")
    return inp.sigma0 * float(inp.gamma)


def _as_vector(t: Tensor, what: str, r: int | None) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() == 0:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{what} must be a non-empty 1-D tensor, got {shape}")
    if r is not None and t.numel() != r:
        raise ValueError(f"{what} has {t.numel()} entries but sigma0 has {r}")
    return t.detach().float()


def apply_policy(
    name: str,
    sigma0: Tensor,
    magnitude_raw: Tensor,
    signed_raw: Tensor,
    cfg: EditConfig,
    generator: torch.Generator | None = None,
    *,
    gamma: float | None = None,
    shape: tuple[int, int] | None = None,
    scaling: float | None = None,
    pooled: dict | None = None,
    module: str | None = None,
    layer: int | None = None,
) -> Tensor:
    """New singular values σ' of one module under policy ``name`` (METHOD §2 step 7).

    Normalise magnitude and signed sensitivities separately with ``cfg.grad_norm`` (with the reference's
    ``abs_of_sum`` aggregation magnitude = |signed|, so the denominators coincide), run the policy to
    get σ̃, clamp at ``cfg.sigma_clip_min`` and preserve ``cfg.preserve_energy``. Inputs are not modified.
    Policies registered with ``postprocess=False`` (the control ladder) return their t unclamped and
    unrescaled, so ``zero_rebuild`` is exactly σ0 and ``global_scalar`` exactly γσ0 under any EditConfig.

    Args:
        name: Registered policy name or alias.
        sigma0: Original singular values, shape (r,).
        magnitude_raw: Raw sensitivity magnitudes |g| (>= 0), shape (r,).
        signed_raw: Raw signed sensitivities g, shape (r,).
        cfg: Edit parameters.
        generator: CPU generator for ``random_index`` (None: torch's global generator).
        gamma: The global scale of policies with ``needs_gamma`` (``global_scalar``); ignored by the others.
        shape: The layer shape ``(d_out, d_in)`` for policies with ``needs_shape`` (``dg_hard``,
            ``rmt_bulk_only``); ignored by the others.
        scaling: The module's LoRA scaling s, for pooled edits (ε-PARA); ignored by the others.
        pooled: The facts of a pooled edit's :attr:`PolicySpec.pool` over all modules (from
            :func:`pool_facts`); required by policies with a ``pool``, ignored by the others.
        module: The module's name, for edits that treat modules apart (``sensitivity_hns``); ignored by the others.
        layer: The module's layer index, or None.

    Returns:
        σ', shape (r,), fp32, on σ0's device.

    Raises:
        UnknownNameError: unknown policy name.
        ValueError: shapes differ, or σ0 (or, for policies that use them, the sensitivities) hold
            NaN/Inf or negative magnitudes; a policy that needs γ got none, or γ is negative or not finite;
            a policy that needs the layer shape got none, or one with a dimension < 1; a pooled policy got
            no pooled facts or no finite scaling.
    """
    spec = get_policy(name)
    if spec.pool is not None:
        if pooled is None:
            raise ValueError(f"policy {spec.name!r} pools every module first: pass pooled=pool_facts(...)")
        if scaling is None or not math.isfinite(float(scaling)):
            raise ValueError(f"policy {spec.name!r} needs the module's finite LoRA scaling; got {scaling!r}")
    if spec.needs_gamma:
        if gamma is None:
            raise ValueError(f"policy {spec.name!r} needs gamma (a global scale >= 0); none was given")
        if not math.isfinite(float(gamma)) or float(gamma) < 0:
            raise ValueError(f"policy {spec.name!r}: gamma must be finite and >= 0, got {gamma!r}")
    if spec.needs_shape:
        if shape is None or len(shape) != 2 or min(int(d) for d in shape) < 1:
            raise ValueError(f"policy {spec.name!r} needs the layer shape (d_out, d_in) with both >= 1; got {shape!r}")
        shape = (int(shape[0]), int(shape[1]))
    s0 = _as_vector(sigma0, "sigma0", None)
    r = s0.numel()
    mag = _as_vector(magnitude_raw, "magnitude", r).to(s0.device)
    sgn = _as_vector(signed_raw, "signed sensitivity", r).to(s0.device)
    if not bool(torch.isfinite(s0).all()):
        raise ValueError(f"sigma0 contains NaN or Inf values: {s0.tolist()}")
    if spec.uses_sensitivity:
        if not (bool(torch.isfinite(mag).all()) and bool(torch.isfinite(sgn).all())):
            raise ValueError(f"sensitivities contain NaN or Inf (magnitude {mag.tolist()}, signed {sgn.tolist()})")
        if bool((mag < 0).any()):
            raise ValueError(f"sensitivity magnitudes must be >= 0, got {mag.tolist()}")
    inputs = PolicyInputs(s0, normalize(mag, cfg.grad_norm), normalize(sgn, cfg.grad_norm), generator,
                          None if gamma is None else float(gamma), shape,
                          None if scaling is None else float(scaling), pooled, module, layer)  # fmt: skip
    if not spec.postprocess:
        return spec.fn(inputs, cfg).float()
    sigma_tilde = spec.fn(inputs, cfg).clamp_min(float(cfg.sigma_clip_min))
    return preserve_energy(s0, sigma_tilde, cfg.preserve_energy).float()


def pool_facts(
    name: str,
    modules: list[tuple[Tensor, float, tuple[int, int] | None]],
    cfg: EditConfig,
    *,
    names: list[str] | None = None,
    layers: list[int | None] | None = None,
    batch_grads: list[Tensor | None] | None = None,
) -> dict | None:
    """The pooled facts of policy ``name`` over an adapter's modules, or None for a per-module policy.

    Args:
        name: Registered policy name or alias.
        modules: One ``(σ0, scaling, shape)`` per module, in module order.
        cfg: Edit parameters.
        names: The modules' names, in the same order (None: unknown).
        layers: Their layer indices (None entries for modules without one).
        batch_grads: Their (n_b, r) per-mini-batch σ-gradients, for a pool that needs data (``sensitivity_hns``).

    Raises:
        ValueError: ``names``, ``layers`` or ``batch_grads`` not one entry per module.
    """
    spec = get_policy(name)
    if spec.pool is None:
        return None
    for what, seq in (("names", names), ("layers", layers), ("batch_grads", batch_grads)):
        if seq is not None and len(seq) != len(modules):
            raise ValueError(f"pool_facts: {what} has {len(seq)} entries for {len(modules)} modules")
    inputs = []
    for i, (sigma0, scaling, shape) in enumerate(modules):
        s0 = _as_vector(sigma0, "sigma0", None)
        zeros = torch.zeros_like(s0)
        inputs.append(PolicyInputs(s0, zeros, zeros, None, None, shape, float(scaling), None,
                                   names[i] if names else None, layers[i] if layers else None,
                                   batch_grads[i] if batch_grads else None))  # fmt: skip
    return spec.pool(inputs, cfg)


# The authors' post-hoc edits register themselves on import; imported here (not in tasks/__init__) so that every
# name is known wherever the registry is used. They import tasks.surgery.policy_registry, not this module (no cycle);
# they stay last so that the paper's policies and the control ladder register first (the order list_policies reports).
from spectral_surgery.tasks.surgery import posthoc as _posthoc  # noqa: E402,F401
from spectral_surgery.tasks.surgery import rmt as _rmt  # noqa: E402,F401
from spectral_surgery.tasks.surgery import para as _para  # noqa: E402,F401
from spectral_surgery.tasks.surgery import module_selection as _module_selection  # noqa: E402,F401
