"""Thin SVD of B·A and the balanced and one-sided rebuilds (tasks/surgery/decompose.py, METHOD §3, §10, EXTENSIONS
§0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectral_surgery.tasks.surgery.decompose import Spectrum, lowrank_svd, rebuild_factors

ATOL = 1e-5
SHAPES = [(8, 6, 2), (32, 48, 4), (64, 16, 16), (128, 96, 8)]  # (d_out, d_in, r); the third has r = d_in


def _factors(d_out: int, d_in: int, r: int, *, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, d_in, generator=g) / d_in**0.5
    B = torch.randn(d_out, r, generator=g) / r**0.5
    return A.to(dtype), B.to(dtype)


def _dense(spec: Spectrum, sigma: torch.Tensor | None = None) -> torch.Tensor:
    s = spec.S if sigma is None else sigma
    return (spec.U.double() * s.double()) @ spec.V.double().T


def _assert_spectrum(spec: Spectrum, A: torch.Tensor, B: torch.Tensor) -> None:
    r, d_in = A.shape
    d_out = B.shape[0]
    assert spec.U.shape == (d_out, r) and spec.S.shape == (r,) and spec.V.shape == (d_in, r)
    assert spec.U.dtype == spec.S.dtype == spec.V.dtype == torch.float32
    eye = torch.eye(r, dtype=torch.float32)
    torch.testing.assert_close(spec.U.T @ spec.U, eye, atol=ATOL, rtol=0)
    torch.testing.assert_close(spec.V.T @ spec.V, eye, atol=ATOL, rtol=0)
    assert bool((spec.S[:-1] >= spec.S[1:]).all()) and bool((spec.S >= 0).all())
    target = B.double() @ A.double()  # the product of the stored values, in float64
    torch.testing.assert_close(_dense(spec), target, atol=ATOL, rtol=0)


@pytest.mark.parametrize("d_out,d_in,r", SHAPES)
def test_thin_svd_reconstructs_product(d_out, d_in, r):
    A, B = _factors(d_out, d_in, r)
    spec = lowrank_svd(A, B)
    _assert_spectrum(spec, A, B)
    torch.testing.assert_close(spec.S, torch.linalg.svdvals(B @ A)[:r], atol=ATOL, rtol=1e-4)
    assert spec.r == r


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_decompose_in_fp32(dtype):
    A, B = _factors(48, 40, 8, dtype=dtype)
    spec = lowrank_svd(A, B)
    _assert_spectrum(spec, A, B)


def test_rank_deficient_product_keeps_orthonormal_vectors():
    A, _ = _factors(40, 30, 6)
    g = torch.Generator().manual_seed(1)
    B = torch.randn(50, 2, generator=g) @ torch.randn(2, 6, generator=g)  # rank(B·A) = 2 < r = 6
    spec = lowrank_svd(A, B)
    _assert_spectrum(spec, A, B)
    assert bool((spec.S[2:] < 1e-5).all()) and bool((spec.S[:2] > 1e-2).all())


def test_peft_init_zero_B_gives_zero_spectrum():
    A, _ = _factors(20, 24, 4)
    spec = lowrank_svd(A, torch.zeros(20, 4))
    assert torch.equal(spec.S, torch.zeros(4))
    _assert_spectrum(spec, A, torch.zeros(20, 4))


def test_svd_only_sees_the_r_by_r_core(monkeypatch):
    seen = []
    real_svd = torch.linalg.svd

    def spy(M, *args, **kwargs):
        seen.append(tuple(M.shape))
        return real_svd(M, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", spy)
    A, B = _factors(300, 200, 8)
    lowrank_svd(A, B)
    assert seen == [(8, 8)]


def test_large_module_without_dense_delta_w():
    """d_out = d_in = 4096, r = 16: a dense SVD would take seconds; spot-check entries of B·A."""
    A, B = _factors(4096, 4096, 16)
    spec = lowrank_svd(A, B)
    idx = torch.randint(0, 4096, (64, 2), generator=torch.Generator().manual_seed(0))
    rows, cols = idx[:, 0], idx[:, 1]
    got = ((spec.U[rows].double() * spec.S.double()) * spec.V[cols].double()).sum(1)
    want = (B[rows].double() * A[:, cols].T.double()).sum(1)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(spec.U.T @ spec.U, torch.eye(16), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "A,B,match",
    [
        (torch.ones(4), torch.ones(8, 4), "lora_A weight must be 2-D"),
        (torch.ones(4, 8), torch.ones(8, 3), "rank mismatch"),
        (torch.ones(0, 5), torch.ones(8, 0), "rank is 0"),
        (torch.ones(4, 8, dtype=torch.int64), torch.ones(8, 4), "floating-point"),
        (torch.full((4, 8), float("nan")), torch.ones(8, 4), "lora_A weight .* NaN or Inf"),
        (torch.ones(4, 8), torch.full((8, 4), float("inf")), "lora_B weight .* NaN or Inf"),
    ],
)
def test_bad_factors_raise_clear_errors(A, B, match):
    with pytest.raises(ValueError, match=match):
        lowrank_svd(A, B)


@pytest.mark.parametrize("d_out,d_in,r", [(8, 5, 6), (5, 8, 6), (6, 6, 10)])
def test_rank_above_the_layer_width_is_accepted_as_peft_accepts_it(d_out, d_in, r):
    """r > min(d_in, d_out): k = min(r, d_in, d_out) components, and rebuild pads back to the stored rank."""
    A, B = _factors(d_out, d_in, r)
    spec = lowrank_svd(A, B)
    k = min(r, d_in, d_out)
    assert spec.r == k and spec.U.shape == (d_out, k) and spec.V.shape == (d_in, k)
    torch.testing.assert_close(spec.U.T @ spec.U, torch.eye(k), atol=ATOL, rtol=0)
    torch.testing.assert_close(spec.V.T @ spec.V, torch.eye(k), atol=ATOL, rtol=0)
    torch.testing.assert_close(_dense(spec), (B @ A).double(), atol=ATOL, rtol=0)
    sigma = spec.S * torch.linspace(0.5, 1.5, k)
    for form in ("balanced", "one_sided"):
        a2, b2 = rebuild_factors(spec, sigma, dtype_A=A.dtype, dtype_B=B.dtype, form=form, rank=r)
        assert a2.shape == (r, d_in) and b2.shape == (d_out, r)
        assert not a2[k:].any() and not b2[:, k:].any()
        torch.testing.assert_close((b2 @ a2).double(), _dense(spec, sigma), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="below the spectrum"):
        rebuild_factors(spec, sigma, dtype_A=A.dtype, dtype_B=B.dtype, rank=k - 1)


@pytest.mark.parametrize("d_out,d_in,r", SHAPES)
def test_rebuild_matches_edited_spectrum(d_out, d_in, r):
    A, B = _factors(d_out, d_in, r, seed=3)
    spec = lowrank_svd(A, B)
    sigma = spec.S * torch.linspace(0.5, 1.5, r)
    A2, B2 = rebuild_factors(spec, sigma, dtype_A=torch.float32, dtype_B=torch.float32)
    assert A2.shape == A.shape and B2.shape == B.shape
    torch.testing.assert_close((B2.double() @ A2.double()), _dense(spec, sigma), atol=ATOL, rtol=0)
    # Balanced split: both factors carry √σ'.
    torch.testing.assert_close(torch.linalg.vector_norm(B2, dim=0), sigma.sqrt(), atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.vector_norm(A2, dim=1), sigma.sqrt(), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("d_out,d_in,r", SHAPES)
def test_identity_round_trip_reproduces_product(d_out, d_in, r):
    A, B = _factors(d_out, d_in, r, seed=4)
    spec = lowrank_svd(A, B)
    A2, B2 = rebuild_factors(spec, spec.S.clone(), dtype_A=A.dtype, dtype_B=B.dtype)
    torch.testing.assert_close(B2.double() @ A2.double(), B.double() @ A.double(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("d_out,d_in,r", SHAPES)
def test_one_sided_rebuild(d_out, d_in, r):
    A, B = _factors(d_out, d_in, r, seed=5)
    spec = lowrank_svd(A, B)
    sigma = spec.S * torch.linspace(0.5, 1.5, r)
    A2, B2 = rebuild_factors(spec, sigma, dtype_A=torch.float32, dtype_B=torch.float32, form="one_sided")
    assert A2.shape == A.shape and B2.shape == B.shape
    torch.testing.assert_close(B2.double() @ A2.double(), _dense(spec, sigma), atol=ATOL, rtol=0)
    assert torch.equal(A2, spec.V.T.contiguous())  # A' = Vᵀ: shared by every one-sided variant
    torch.testing.assert_close(torch.linalg.vector_norm(B2, dim=0), sigma, atol=ATOL, rtol=1e-5)
    A3, _ = rebuild_factors(spec, sigma * 0.3, dtype_A=torch.float32, dtype_B=torch.float32, form="one_sided")
    assert torch.equal(A2, A3)
    with pytest.raises(ValueError, match="form must be"):
        rebuild_factors(spec, sigma, dtype_A=torch.float32, dtype_B=torch.float32, form="sideways")  # type: ignore


def test_zero_rebuild_vector_of_extensions_8_4():
    """EXTENSIONS §8.4: B (6×3, column scales 3, 1, 0.1) and A (3×5) from ``np.random.default_rng(0)``,
    B drawn first (``standard_normal((6, 3)) * [3, 1, 0.1]``, then ``standard_normal((3, 5))``): the draw
    that reproduces the spec's norms. t = σ rebuilt in fp64 reproduces BA to ~2e-16 (relative) in both forms, while
    (‖B‖, ‖A‖) moves from (9.24, 2.70) to (4.39, 4.39) balanced and (17.75, √3) one-sided."""
    rng = np.random.default_rng(0)
    B = torch.from_numpy(rng.standard_normal((6, 3)) * np.array([3.0, 1.0, 0.1]))
    A = torch.from_numpy(rng.standard_normal((3, 5)))
    assert (round(float(B.norm()), 2), round(float(A.norm()), 2)) == (9.24, 2.70)
    spec = lowrank_svd(A, B)
    assert spec.S.dtype == torch.float64  # fp64 factors stay fp64
    want = {"balanced": (4.39, 4.39), "one_sided": (17.75, round(math.sqrt(3), 2))}
    for form, norms in want.items():
        A2, B2 = rebuild_factors(spec, spec.S, dtype_A=A.dtype, dtype_B=B.dtype, form=form)
        assert A2.dtype == B2.dtype == torch.float64
        rel = float((B2 @ A2 - B @ A).norm() / (B @ A).norm())
        assert rel < 5e-16, (form, rel)  # the spec's "2e-16": ‖B'A' − BA‖_F/‖BA‖_F ≈ 2.2e-16 / 2.1e-16
        assert (round(float(B2.norm()), 2), round(float(A2.norm()), 2)) == norms, form
    A2, B2 = rebuild_factors(spec, spec.S, dtype_A=A.dtype, dtype_B=B.dtype)
    assert float(B2.norm()) == pytest.approx(float(A2.norm()), rel=1e-12)  # balanced: exactly equal norms


def test_all_ones_factors_round_trip():
    A, B = torch.ones(4, 12), torch.ones(10, 4)  # B·A = 4·ones, rank 1 with r = 4
    spec = lowrank_svd(A, B)
    _assert_spectrum(spec, A, B)
    A2, B2 = rebuild_factors(spec, spec.S, dtype_A=A.dtype, dtype_B=B.dtype)
    torch.testing.assert_close(B2 @ A2, torch.full((10, 12), 4.0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype_A,dtype_B", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32)])
def test_rebuild_casts_to_original_dtypes(dtype_A, dtype_B):
    A, B = _factors(24, 20, 4)
    A, B = A.to(dtype_A), B.to(dtype_B)
    spec = lowrank_svd(A, B)
    A2, B2 = rebuild_factors(spec, spec.S, dtype_A=A.dtype, dtype_B=B.dtype)
    assert A2.dtype == dtype_A and B2.dtype == dtype_B
    assert A2.is_contiguous() and B2.is_contiguous()
    # Only one rounding to the stored dtype: close to the original product at that precision.
    torch.testing.assert_close(B2.double() @ A2.double(), B.double() @ A.double(), atol=2e-2, rtol=0)


def test_negative_sigma_is_clamped_before_sqrt():
    A, B = _factors(16, 12, 4)
    spec = lowrank_svd(A, B)
    sigma = torch.tensor([1.0, -0.5, 0.25, -1e-3])
    A2, B2 = rebuild_factors(spec, sigma, dtype_A=torch.float32, dtype_B=torch.float32)
    assert bool(torch.isfinite(A2).all() and torch.isfinite(B2).all())
    torch.testing.assert_close(B2.double() @ A2.double(), _dense(spec, sigma.clamp_min(0)), atol=ATOL, rtol=0)
    assert torch.equal(A2[1], torch.zeros(12)) and torch.equal(B2[:, 3], torch.zeros(16))


def test_rebuild_does_not_modify_inputs():
    A, B = _factors(16, 12, 4)
    spec = lowrank_svd(A, B)
    before = (spec.U.clone(), spec.S.clone(), spec.V.clone())
    sigma = torch.tensor([1.0, -0.5, 0.25, 0.1])
    sigma_before = sigma.clone()
    rebuild_factors(spec, sigma, dtype_A=torch.float16, dtype_B=torch.float16)
    assert all(torch.equal(x, y) for x, y in zip(before, (spec.U, spec.S, spec.V)))
    assert torch.equal(sigma, sigma_before)


@pytest.mark.parametrize(
    "sigma,match", [(torch.ones(3), r"shape \(4,\)"), (torch.tensor([1.0, float("nan"), 1, 1]), "NaN")]
)
def test_rebuild_rejects_bad_sigma(sigma, match):
    A, B = _factors(16, 12, 4)
    with pytest.raises(ValueError, match=match):
        rebuild_factors(lowrank_svd(A, B), sigma, dtype_A=torch.float32, dtype_B=torch.float32)


def test_spectrum_is_frozen():
    A, B = _factors(8, 8, 2)
    spec = lowrank_svd(A, B)
    with pytest.raises(Exception):
        spec.S = torch.zeros(2)  # type: ignore[misc]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_works_on_the_inputs_device():
    A, B = _factors(256, 128, 16, dtype=torch.bfloat16)
    spec = lowrank_svd(A.cuda(), B.cuda())
    assert spec.U.is_cuda and spec.S.is_cuda and spec.V.is_cuda
    cpu = Spectrum(spec.U.cpu(), spec.S.cpu(), spec.V.cpu())
    _assert_spectrum(cpu, A, B)
    A2, B2 = rebuild_factors(spec, spec.S.cpu() * 1.1, dtype_A=A.dtype, dtype_B=B.dtype)
    assert A2.is_cuda and B2.is_cuda and A2.dtype == B2.dtype == torch.bfloat16
