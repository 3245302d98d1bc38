"""Thin SVD of a LoRA update ``B·A`` and the balanced rebuild of its factors (METHOD §3, §10).

Spectral Surgery (https://arxiv.org/abs/2603.03995) only ever changes the singular values of the
*unscaled* product ``B·A = U diag(σ) Vᵀ``; ``U``, ``V``, the rank and α stay as they are. The product is
never formed: for a (4096 × 4096) module with r = 16 the dense ΔW is 64 MiB and its SVD takes seconds,
while QR of the two thin factors plus an r × r SVD takes milliseconds and a few hundred KiB.

Reference: ``lowrank_svd_from_ba`` and ``rebuild_ba_from_uv_sigma`` in ``TTtianTT/peft-sft-lab``
(``src/finetune/spectral_edit/svd.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class Spectrum:
    """Compact SVD ``B·A = U diag(S) Vᵀ`` of one LoRA module, in fp32 (fp64 for fp64 factors) on their device.

    Attributes:
        U: Left singular vectors, shape (d_out, r), orthonormal columns.
        S: Singular values, shape (r,), descending, >= 0. Entries are ≈ 0 when ``B·A`` has rank < r.
        V: Right singular vectors, shape (d_in, r), orthonormal columns.
    """

    U: Tensor
    S: Tensor
    V: Tensor

    @property
    def r(self) -> int:
        """The LoRA rank (number of components)."""
        return int(self.S.shape[0])


def _check_factor(t: Tensor, what: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{what} must be 2-D, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {t.dtype}")


def lowrank_svd(A: Tensor, B: Tensor) -> Spectrum:
    """Thin SVD of ``B·A`` through reduced QR of the factors, without forming the dense product.

    ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A`` (reduced QR), core ``M = R_B R_Aᵀ`` (r × r),
    ``M = U_M diag(σ) V_Mᵀ``, then ``U = Q_B U_M`` and ``V = Q_A V_M``. When ``B·A`` is rank-deficient
    the trailing σ are ≈ 0 and their columns of U and V are still orthonormal (they come from the
    Householder Q factors).

    Args:
        A: The ``lora_A`` weight, shape (r, d_in), any floating dtype.
        B: The ``lora_B`` weight, shape (d_out, r), any floating dtype.

    A rank above the layer's width (r > min(d_in, d_out)) is accepted, as PEFT accepts it: ``B·A`` then has rank
    at most ``min(d_in, d_out)``, so the spectrum has ``k = min(r, d_in, d_out)`` components (the reduced QR
    factors are ``min(d, r)`` wide) and :func:`rebuild_factors` with ``rank=r`` pads the factors back to the
    stored rank with zero components.

    Returns:
        The fp32 spectrum (U (d_out, k), S (k,), V (d_in, k), k = min(r, d_in, d_out)) on the factors' device
        (fp64 if a factor is fp64).

    Raises:
        ValueError: a factor is not 2-D or not floating point, the ranks of A and B differ, the rank is 0, the
            factors sit on different devices, or they hold NaN/Inf.
    """
    _check_factor(A, "lora_A weight")
    _check_factor(B, "lora_B weight")
    r, d_in = A.shape
    d_out, r_b = B.shape
    if r != r_b:
        raise ValueError(
            f"LoRA rank mismatch: lora_A weight has shape {tuple(A.shape)} (r={r}) but lora_B weight has shape "
            f"{tuple(B.shape)} (r={r_b}); expected A (r, d_in) and B (d_out, r)"
        )
    if r == 0:
        raise ValueError("LoRA rank is 0: lora_A/lora_B weights have no components")
    if A.device != B.device:
        raise ValueError(f"lora_A weight is on {A.device} but lora_B weight is on {B.device}; move both to one device")
    # fp32 on purpose: adapters are stored in fp16/bf16, whose 8-10 bit mantissas would make QR and the small
    # SVD lose the trailing (small) singular values and the orthogonality of U and V (METHOD §3 step 1).
    # fp64 factors stay fp64 (more precision never hurts; the zero-rebuild check of EXTENSIONS §8.4 needs it).
    work = torch.float64 if (A.dtype == torch.float64 or B.dtype == torch.float64) else torch.float32
    a32, b32 = A.detach().to(work), B.detach().to(work)
    for t, what in ((a32, "lora_A weight"), (b32, "lora_B weight")):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what} (shape {tuple(t.shape)}) contains NaN or Inf values")
    q_b, r_b_mat = torch.linalg.qr(b32, mode="reduced")  # (d_out, min(d_out, r)), (min(d_out, r), r)
    q_a, r_a_mat = torch.linalg.qr(a32.T, mode="reduced")  # (d_in, min(d_in, r)), (min(d_in, r), r)
    core = r_b_mat @ r_a_mat.T  # (r, r) when r <= min(d_in, d_out): B·A = Q_B · core · Q_Aᵀ
    u_m, s, v_m_t = torch.linalg.svd(core, full_matrices=False)  # descending, >= 0, min(r, d_in, d_out) of them
    return Spectrum(U=q_b @ u_m, S=s, V=q_a @ v_m_t.T)


def rebuild_factors(
    spectrum: Spectrum,
    sigma: Tensor,
    *,
    dtype_A: torch.dtype,
    dtype_B: torch.dtype,
    form: Literal["balanced", "one_sided"] = "balanced",
    rank: int | None = None,
) -> tuple[Tensor, Tensor]:
    """New LoRA factors with ``B'·A' = U diag(σ') Vᵀ`` (METHOD §10, EXTENSIONS §0).

    ``balanced`` (the policies' form): ``B' = U diag(√σ')`` and ``A' = diag(√σ') Vᵀ``, split evenly.
    ``one_sided`` (the common-basis controls'): ``B' = U diag(σ')`` and ``A' = Vᵀ``, so every variant of
    one adapter shares a byte-identical A'.
    σ' is clamped at 0 first (the reference does the same before the square root, METHOD §10). The
    original balance between A and B is not kept; inference only sees the product.

    Args:
        spectrum: The module's spectrum from :func:`lowrank_svd`.
        sigma: New singular values σ', shape (r,), any device and floating dtype.
        dtype_A: dtype of the stored ``lora_A`` weight (the output A' is cast to it).
        dtype_B: dtype of the stored ``lora_B`` weight (the output B' is cast to it).
        form: ``balanced`` or ``one_sided``.
        rank: The stored LoRA rank when it exceeds the spectrum's (r > min(d_in, d_out), see
            :func:`lowrank_svd`): the factors are padded with zero rows of A' and zero columns of B' up to it.
            None: the spectrum's rank.

    Returns:
        ``(A', B')`` with shapes (r, d_in) and (d_out, r) (r = ``rank`` if given), on the spectrum's device.

    Raises:
        ValueError: sigma is not shape (r,) or holds NaN/Inf; an unknown form; ``rank`` below the spectrum's.
    """
    if form not in ("balanced", "one_sided"):
        raise ValueError(f"form must be 'balanced' or 'one_sided'; got {form!r}")
    r = spectrum.r
    if not isinstance(sigma, Tensor) or tuple(sigma.shape) != (r,):
        shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must have shape ({r},) to match the spectrum's rank, got {shape}")
    # The product is computed in fp32 (like the decomposition) and cast only at the end, so the
    # edited factors lose no more precision than one rounding to the stored dtype.
    s = sigma.detach().to(device=spectrum.U.device, dtype=torch.promote_types(spectrum.U.dtype, torch.float32))
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"sigma contains NaN or Inf values: {s.tolist()}")
    s = s.clamp_min(0.0)
    if form == "one_sided":
        b_new = spectrum.U * s.unsqueeze(0)  # (d_out, r)
        a_new = spectrum.V.T.clone()  # (r, d_in)
    else:
        root = s.sqrt()
        b_new = spectrum.U * root.unsqueeze(0)  # (d_out, r)
        a_new = root.unsqueeze(1) * spectrum.V.T  # (r, d_in)
    if rank is not None and rank != r:
        if rank < r:
            raise ValueError(f"rank={rank} is below the spectrum's {r} components; pass the stored LoRA rank")
        a_new = torch.cat([a_new, a_new.new_zeros(rank - r, a_new.shape[1])], dim=0)
        b_new = torch.cat([b_new, b_new.new_zeros(b_new.shape[0], rank - r)], dim=1)
    return a_new.to(dtype_A).contiguous(), b_new.to(dtype_B).contiguous()
