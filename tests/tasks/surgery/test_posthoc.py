"""The authors' data-free post-hoc reshapes (tasks/surgery/posthoc.py): HNS, flat spectra, the ablation bank (EXTENSIONS
§1, §4, §5), their settings, their registration and their path through tasks.surgery.edit on a tiny LoRA adapter."""

from __future__ import annotations

import math

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.adapter_io import load_adapter
from spectral_surgery.tasks.config import EditConfig, SurgeryConfig
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare_data_free, write_candidate
from spectral_surgery.tasks.surgery.policies import apply_policy, get_policy, list_policies
from spectral_surgery.tasks.surgery.posthoc import (
    HNS_FAST,
    HNS_STABLE,
    HNSConfig,
    TemperatureConfig,
    ablation_spectrum,
    effective_rank,
    flat_spectrum,
    hns_spectrum,
)

# EXTENSIONS §1 H1 (= METHOD §15's σ0), §1 H2, §4 A1.
H1 = torch.tensor([8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0], dtype=torch.float64)
H2 = torch.tensor([3.0, 1.0, 0.01, 0.0], dtype=torch.float64)
A1 = torch.tensor([8.0, 1.0, 0.2, 0.02], dtype=torch.float64)
TOL = {"atol": 1e-6, "rtol": 0.0}  # the spec prints 6 decimals: |error| <= 5e-7
POSTHOC = ["hns", "flat_fro", "flat_nuclear", "ablation_scalar_shrink", "ablation_top_shrink", "ablation_tail_lift",
           "ablation_temperature", "dg_hard", "rmt_bulk_only"]  # fmt: skip
DATA_FREE = [n for n in POSTHOC if n != "rmt_bulk_only"]


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _hns(sigma=H1, **kw) -> torch.Tensor:
    return hns_spectrum(sigma, HNSConfig(**kw))


def _fro(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


# ---- settings ---------------------------------------------------------------------------------------------


def test_hns_defaults_are_the_library_defaults():
    c = HNSConfig()
    assert (c.fast_steps, c.stable_steps) == (8, 2)
    assert c.fast_coefficients == HNS_FAST == (3.4445, -4.7750, 2.0315) and c.stable_coefficients == (2, -1.5, 0.5)
    assert HNS_STABLE == (2.0, -1.5, 0.5)
    assert c.preserve_nuclear_norm and c.strength == 1.0 and c.output_rank is None and c.eps == 1e-7
    assert TemperatureConfig().tau == 0.5  # this project's choice (the bank has no single default)
    assert EditConfig().hns == c and EditConfig().ablation_temperature == TemperatureConfig()


def test_every_settings_field_has_a_description():
    for model in (HNSConfig, TemperatureConfig):
        assert [n for n, f in model.model_fields.items() if not f.description] == [], model.__name__


@pytest.mark.parametrize("bad", [{"strength": 1.5}, {"strength": -0.1}, {"output_rank": 0}, {"fast_steps": -1},
                                 {"eps": 0.0}, {"fast_coefficients": (1.0, float("nan"), 0.0)}, {"steps": 3}])
def test_hns_settings_are_validated(bad):
    with pytest.raises(ValidationError):
        HNSConfig(**bad)


@pytest.mark.parametrize("tau", [-0.5, float("inf"), float("nan")])
def test_temperature_settings_are_validated(tau):
    with pytest.raises(ValidationError):
        TemperatureConfig(tau=tau)


def test_default_method_settings_stay_out_of_dumps_and_keys():
    """Default settings are left out of dumps (candidate/result keys of older runs stay the same)."""
    dumped = EditConfig().model_dump(mode="json")
    assert not {"hns", "ablation_temperature", "rmt_bulk_only"} & set(dumped)
    assert "hns" not in SurgeryConfig().model_dump(mode="json")["edit"]
    changed = EditConfig(hns={"fast_steps": 4, "stable_steps": 1})
    assert changed.model_dump(mode="json")["hns"]["fast_steps"] == 4 and "rmt_bulk_only" not in changed.model_dump()
    assert EditConfig.model_validate(changed.model_dump()) == changed
    assert EditConfig.model_validate(dumped) == EditConfig()
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        EditConfig(hns={"fast_step": 4})


# ---- registry ---------------------------------------------------------------------------------------------


def test_registered_post_hoc_edits():
    # ε-PARA: tests/tasks/test_para; sensitivity_hns: tests/tasks/test_module_selection
    assert list_policies(("posthoc",)) == POSTHOC + ["para", "para_e95", "para_e99", "sensitivity_hns"]
    assert list_policies() == ["abs_select", "smooth_abs", "random_index", "grad_direction", "double_smooth",
                               "z_score", "robust_z"]  # fmt: skip
    assert SurgeryConfig().policies == ("abs_select", "smooth_abs", "grad_direction")
    for name in POSTHOC:
        spec = get_policy(name)
        assert spec.role == "posthoc" and spec.promotable and not spec.is_control and not spec.postprocess
        assert spec.rebuild == "balanced" and spec.description  # EXTENSIONS §0: balanced rebuild
        assert "EXTENSIONS §" in spec.fn.__doc__ and "2603.03995" in spec.fn.__doc__
    for name in DATA_FREE:
        spec = get_policy(name)
        assert not spec.needs_data and not spec.uses_sensitivity and not spec.needs_gamma
    assert get_policy("exact_flat_nuclear") is get_policy("flat_nuclear")
    assert get_policy("dg_hard").keep_identical and get_policy("dg_hard").needs_shape
    assert [n for n in POSTHOC if get_policy(n).keep_identical] == ["dg_hard"]


def test_needs_data_tells_data_free_edits_apart():
    """needs_data: the gradient policies and global_scalar (γ from held-out data) need the calibration pass;
    random_index too (it is matched to the gradient pass's modules); the zero rebuilds and post-hoc reshapes do not."""
    needs = {n: get_policy(n).needs_data for n in list_policies(None)}
    assert needs == {**{n: True for n in list_policies()}, "zero_rebuild": False, "zero_rebuild_one_sided": False,
                     "global_scalar": True, **{n: n == "rmt_bulk_only" for n in POSTHOC},
                     "para": False, "para_e95": False, "para_e99": False, "sensitivity_hns": True}  # fmt: skip


# ---- effective rank (§0) ----------------------------------------------------------------------------------


def test_effective_rank():
    assert effective_rank(_hns()) == pytest.approx(7.99999987, abs=1e-8)  # H1, 8+2
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert effective_rank(_t([2.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4)) == 0.0 and effective_rank(_t([1e-13])) == 0.0


# ---- HNS (§1) ---------------------------------------------------------------------------------------------


def test_hns_h1_vectors():
    x0 = _hns(fast_steps=0, stable_steps=0, preserve_nuclear_norm=False)  # x0 = σ/‖σ‖₂ (full Frobenius norm)
    torch.testing.assert_close(x0, _t([.637962, .478471, .398726, .318981, .239236, .159490, .119618, .079745]), **TOL)
    assert _fro(H1) == pytest.approx(12.539936, abs=1e-6)
    t82 = _hns()
    torch.testing.assert_close(t82, _t([3.813189, 3.812712, 3.811899, 3.813396, 3.812075, 3.811770, 3.811658,
                                        3.813301]), **TOL)  # fmt: skip
    assert float(t82.sum()) == pytest.approx(30.5, abs=1e-12)
    assert _fro(t82) / _fro(H1) == pytest.approx(0.859923, abs=1e-6)
    t41 = _hns(fast_steps=4, stable_steps=1)
    torch.testing.assert_close(t41, _t([3.822512, 3.833099, 3.754010, 3.688617, 3.903066, 3.796742, 3.877819,
                                        3.824134]), **TOL)  # fmt: skip
    assert _fro(t41) / _fro(H1) == pytest.approx(0.860042, abs=1e-6)
    assert not bool((t41[:-1] >= t41[1:]).all())  # the order of σ is not preserved
    torch.testing.assert_close(_hns(fast_steps=4, stable_steps=1, strength=0.5),
                               _t([5.911256, 4.916550, 4.377005, 3.844309, 3.451533, 2.898371, 2.688910, 2.412067]),
                               **TOL)  # fmt: skip
    torch.testing.assert_close(_hns(preserve_nuclear_norm=False),
                               _t([1.000483, 1.000358, 1.000144, 1.000537, 1.000190, 1.000110, 1.000081, 1.000512]),
                               **TOL)  # fmt: skip
    t3 = _hns(output_rank=3)
    torch.testing.assert_close(t3, _t([6.334312, 6.333520, 6.332168]), **TOL)
    assert float(t3.sum()) == pytest.approx(19.0, abs=1e-12)  # the nuclear norm of the KEPT part


def test_hns_h2_zero_stays_zero():
    torch.testing.assert_close(_hns(H2), _t([1.336359, 1.336824, 1.336818, 0.0]), **TOL)
    torch.testing.assert_close(_hns(H2, fast_steps=4, stable_steps=1), _t([1.493826, 1.411411, 1.104762, 0.0]), **TOL)
    assert float(_hns(H2)[3]) == 0.0 and float(_hns(H2, fast_steps=4, stable_steps=1)[3]) == 0.0


def test_hns_polynomial_facts():
    a, b, c = HNS_FAST
    assert a + b + c == pytest.approx(0.701, abs=1e-12)  # f_fast(1)
    x = torch.linspace(0.01, 1.0, 1000, dtype=torch.float64)
    for _ in range(8):
        x = x * (a + b * x**2 + c * x**4)
    assert float(x.min()) >= 0.68 and float(x.max()) <= 1.20
    one = _hns(_t([1.0]), fast_steps=0, stable_steps=5, preserve_nuclear_norm=False)
    assert float(one) == pytest.approx(1.0, abs=1e-15)  # f_stable(1) = 1, a fixed point


def test_hns_zero_steps_is_the_balanced_zero_rebuild_and_every_strength_keeps_the_nuclear_norm():
    torch.testing.assert_close(_hns(fast_steps=0, stable_steps=0), H1, atol=1e-12, rtol=0)
    for lam in (0.0, 0.25, 0.5, 1.0):
        assert float(_hns(fast_steps=4, stable_steps=1, strength=lam).sum()) == pytest.approx(30.5, abs=1e-12)
    assert torch.equal(_hns(strength=0.0), H1)  # λ = 0: t = ref exactly


def test_hns_degenerate_cases():
    empty = torch.zeros(0)
    out = hns_spectrum(empty)
    assert out.shape == (0,) and out is not empty
    assert torch.equal(hns_spectrum(torch.zeros(4)), torch.zeros(4))  # fill value Σref/r = 0
    assert torch.equal(hns_spectrum(torch.zeros(4), HNSConfig(preserve_nuclear_norm=False)), torch.zeros(4))
    torch.testing.assert_close(_hns(_t([2.5])), _t([2.5]), atol=1e-12, rtol=0)  # r = 1
    torch.testing.assert_close(_hns(torch.full((6,), 0.7, dtype=torch.float64)), torch.full((6,), 0.7,
                               dtype=torch.float64), atol=1e-12, rtol=0)  # all equal stays equal  # fmt: skip
    assert _hns(_t([3.0, 1.0]), output_rank=7).shape == (2,)  # output_rank capped at r
    with pytest.raises(ValueError, match="strength"):
        hns_spectrum(H1, HNSConfig.model_construct(**{**HNSConfig().model_dump(), "strength": 1.5}))
    with pytest.raises(ValueError, match="1-D"):
        hns_spectrum(H1[None])


def test_hns_float64_math_and_dtype():
    out32 = hns_spectrum(H1.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), _hns(), atol=1e-6, rtol=0)
    assert hns_spectrum(H1).dtype == torch.float64
    neg = hns_spectrum(_t([3.0, -1.0]))  # σ is clamped at 0 first (EXTENSIONS §0)
    assert float(neg[1]) == 0.0


def test_hns_equals_the_dense_matrix_iteration():
    """EXTENSIONS §1: the σ iteration equals X ← aX + b(XXᵀ)X + c(XXᵀ)²X on X = BA/‖BA‖_F (no L1)."""
    g = torch.Generator().manual_seed(3)
    b_mat = torch.randn(12, 4, generator=g, dtype=torch.float64)
    a_mat = torch.randn(4, 9, generator=g, dtype=torch.float64)
    x = b_mat @ a_mat
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    x = x / torch.linalg.matrix_norm(x)
    for (a, b, c), steps in ((HNS_FAST, 4), (HNS_STABLE, 1)):
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + b * gram @ x + c * gram @ gram @ x
    t = _hns(s, fast_steps=4, stable_steps=1, preserve_nuclear_norm=False)
    torch.testing.assert_close(x, u @ torch.diag(t) @ vh, atol=1e-12, rtol=0)


# ---- flat spectra (§5) ------------------------------------------------------------------------------------


def test_flat_vectors_and_norms():
    torch.testing.assert_close(flat_spectrum(H1, "fro"), torch.full((8,), 4.433537, dtype=torch.float64), **TOL)
    torch.testing.assert_close(flat_spectrum(H1, "nuclear"), torch.full((8,), 3.8125, dtype=torch.float64), **TOL)
    torch.testing.assert_close(flat_spectrum(A1, "fro"), torch.full((4,), 4.032381, dtype=torch.float64), **TOL)
    torch.testing.assert_close(flat_spectrum(A1, "nuclear"), torch.full((4,), 2.305, dtype=torch.float64), **TOL)
    assert _fro(flat_spectrum(H1, "fro")) == pytest.approx(_fro(H1), abs=1e-12)
    assert float(flat_spectrum(H1, "nuclear").sum()) == pytest.approx(30.5, abs=1e-12)


def test_flat_degenerate_cases():
    torch.testing.assert_close(flat_spectrum(_t([4.0, 3.0, 0.0, 0.0]), "nuclear"), torch.full((4,), 1.75,
                               dtype=torch.float64))  # mass spread onto the zero directions  # fmt: skip
    torch.testing.assert_close(flat_spectrum(_t([4.0, 3.0, 0.0, 0.0]), "fro"), torch.full((4,), 2.5,
                               dtype=torch.float64))  # fmt: skip
    assert torch.equal(flat_spectrum(torch.zeros(3), "fro"), torch.zeros(3))
    assert torch.equal(flat_spectrum(torch.zeros(3), "nuclear"), torch.zeros(3))
    assert torch.equal(flat_spectrum(_t([2.5]), "fro"), _t([2.5]))
    assert flat_spectrum(H1.float(), "fro").dtype == torch.float32
    for bad in (torch.zeros(0), H1[None], _t([1.0, -0.1]), _t([1.0, float("nan")]), _t([float("inf")])):
        with pytest.raises(ValueError, match="flat spectrum"):
            flat_spectrum(bad, "fro")
    with pytest.raises(ValueError, match="'fro' or 'nuclear'"):
        flat_spectrum(H1, "l1")  # type: ignore[arg-type]


# ---- ablation transforms (§4) -----------------------------------------------------------------------------


def test_ablation_a1_vectors():
    torch.testing.assert_close(ablation_spectrum(A1, "scalar_shrink"), _t([4.572980, 0.571623, 0.114325, 0.011432]),
                               **TOL)  # fmt: skip
    assert _fro(ablation_spectrum(A1, "scalar_shrink")) == pytest.approx(4.61, abs=1e-12)  # = S/√r
    torch.testing.assert_close(ablation_spectrum(A1, "exact_flat_nuclear"), torch.full((4,), 2.305,
                               dtype=torch.float64), **TOL)  # fmt: skip
    torch.testing.assert_close(ablation_spectrum(A1, "top_shrink"), _t([2.305, 1.0, 0.2, 0.02]), **TOL)
    torch.testing.assert_close(ablation_spectrum(A1, "tail_lift"), _t([8.0, 2.305, 2.305, 2.305]), **TOL)
    torch.testing.assert_close(ablation_spectrum(A1, "temperature", 0.5), _t([5.903946, 2.087360, 0.933496,
                               0.295197]), **TOL)  # fmt: skip
    torch.testing.assert_close(ablation_spectrum(A1, "temperature", 0.25), _t([4.160940, 2.474109, 1.654537,
                               0.930414]), **TOL)  # fmt: skip


def test_ablation_a2_vectors():
    torch.testing.assert_close(ablation_spectrum(H1, "scalar_shrink"), _t([6.879383, 5.159537, 4.299615, 3.439692,
                               2.579769, 1.719846, 1.289884, 0.859923]), **TOL)  # fmt: skip
    torch.testing.assert_close(ablation_spectrum(H1, "top_shrink"), _t([3.8125] * 4 + [3, 2, 1.5, 1]), **TOL)
    torch.testing.assert_close(ablation_spectrum(H1, "tail_lift"), _t([8, 6, 5, 4] + [3.8125] * 4), **TOL)
    torch.testing.assert_close(ablation_spectrum(H1, "temperature", 0.5), _t([5.795570, 5.019111, 4.581800,
                               4.098087, 3.549047, 2.897785, 2.509555, 2.049043]), **TOL)  # fmt: skip
    zero_dir = _t([4.0, 1.0, 0.0])
    torch.testing.assert_close(ablation_spectrum(zero_dir, "temperature", 0.5), _t([3.333333, 1.666667, 0.0]), **TOL)
    torch.testing.assert_close(ablation_spectrum(zero_dir, "temperature", 0.0), _t([1.666667] * 3), **TOL)


def test_ablation_zero_directions_and_norms():
    zero_dir = _t([4.0, 1.0, 0.0])
    for mode in ("exact_flat_nuclear", "tail_lift"):  # these lift the zero direction
        assert float(ablation_spectrum(zero_dir, mode)[2]) > 0
    for mode, tau in (("top_shrink", None), ("scalar_shrink", None), ("temperature", 0.5), ("temperature", 2.0)):
        assert float(ablation_spectrum(zero_dir, mode, tau)[2]) == 0.0
    for tau in (0.0, 0.25, 0.5, 0.75, 2.0):  # the temperature keeps the nuclear norm
        assert float(ablation_spectrum(H1, "temperature", tau).sum()) == pytest.approx(30.5, abs=1e-12)
    torch.testing.assert_close(ablation_spectrum(H1, "temperature", 1.0), H1, atol=1e-12, rtol=0)  # identity
    assert float(ablation_spectrum(H1, "top_shrink").sum()) < 30.5 < float(ablation_spectrum(H1, "tail_lift").sum())


def test_ablation_degenerate_cases():
    empty = torch.zeros(0)
    for mode in ("scalar_shrink", "exact_flat_nuclear", "top_shrink", "tail_lift"):
        assert ablation_spectrum(empty, mode).shape == (0,)
        assert torch.equal(ablation_spectrum(torch.zeros(3), mode), torch.zeros(3))  # all-zero σ
        torch.testing.assert_close(ablation_spectrum(_t([2.5]), mode), _t([2.5]))  # r = 1
        torch.testing.assert_close(ablation_spectrum(torch.full((4,), 0.3), mode), torch.full((4,), 0.3))
    assert ablation_spectrum(empty, "temperature", 0.5).shape == (0,)
    assert torch.equal(ablation_spectrum(torch.zeros(3), "temperature", 0.5), torch.zeros(3))  # S <= 1e-12
    assert torch.equal(ablation_spectrum(torch.full((3,), 1e-14), "scalar_shrink"), torch.zeros(3))  # ‖σ‖ <= 1e-12
    assert torch.equal(ablation_spectrum(_t([1e-300, 0.0]), "temperature", 3.0), torch.zeros(2))  # Σp <= 1e-12
    for tau in (None, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite tau >= 0"):
            ablation_spectrum(H1, "temperature", tau)
    with pytest.raises(ValueError, match="ablation mode must be one of"):
        ablation_spectrum(H1, "shrink")  # type: ignore[arg-type]


# ---- through apply_policy ---------------------------------------------------------------------------------

G = torch.tensor([0.5, -2.0, 0.1, 1.5, -0.3, 0.05, -0.8, 0.2])
NAN = torch.full((8,), float("nan"))
REGISTERED = {  # policy -> (EditConfig, expected t for σ = H1)
    "hns": (EditConfig(), [3.813189, 3.812712, 3.811899, 3.813396, 3.812075, 3.811770, 3.811658, 3.813301]),
    "flat_fro": (EditConfig(), [4.433537] * 8),
    "flat_nuclear": (EditConfig(), [3.8125] * 8),
    "ablation_scalar_shrink": (EditConfig(), [6.879383, 5.159537, 4.299615, 3.439692, 2.579769, 1.719846, 1.289884,
                                              0.859923]),
    "ablation_top_shrink": (EditConfig(), [3.8125] * 4 + [3, 2, 1.5, 1]),
    "ablation_tail_lift": (EditConfig(), [8, 6, 5, 4] + [3.8125] * 4),
    "ablation_temperature": (EditConfig(), [5.795570, 5.019111, 4.581800, 4.098087, 3.549047, 2.897785, 2.509555,
                                            2.049043]),
    "dg_hard": (EditConfig(), [8, 6, 5, 4, 3, 2, 1.5, 1]),  # D1: H1 in 4096 × 4096, an identity
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_registered_worked_vectors_ignore_gradients_clamp_and_energy(name):
    cfg, want = REGISTERED[name]
    s0 = H1.float()
    for edit in (cfg, cfg.model_copy(update={"sigma_clip_min": 2.5, "preserve_energy": "l2", "grad_norm": "none"})):
        out = apply_policy(name, s0, NAN, NAN, edit, shape=(4096, 4096))  # sensitivities are never looked at
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, torch.tensor(want, dtype=torch.float32), atol=2e-6, rtol=0)
    assert torch.equal(s0, H1.float())


def test_registered_settings_are_read_from_the_edit_config():
    s0 = H1.float()
    out = apply_policy("hns", s0, G.abs(), G, EditConfig(hns={"fast_steps": 4, "stable_steps": 1}))
    torch.testing.assert_close(out.double(), _hns(fast_steps=4, stable_steps=1), atol=2e-6, rtol=0)
    out = apply_policy("ablation_temperature", s0, G.abs(), G, EditConfig(ablation_temperature={"tau": 0.0}))
    torch.testing.assert_close(out, torch.full((8,), 3.8125), atol=2e-6, rtol=0)
    # output_rank < r: the dropped components are written as 0 (the rank and the config stay r)
    out = apply_policy("hns", s0, G.abs(), G, EditConfig(hns={"output_rank": 3}))
    torch.testing.assert_close(out, torch.tensor([6.334312, 6.333520, 6.332168, 0, 0, 0, 0, 0]), atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", DATA_FREE)
def test_all_zero_and_rank_one_modules(name):
    cfg = EditConfig()
    assert torch.equal(apply_policy(name, torch.zeros(4), torch.zeros(4), torch.zeros(4), cfg, shape=(8, 8)),
                       torch.zeros(4))  # fmt: skip
    out = apply_policy(name, torch.tensor([2.5]), torch.zeros(1), torch.zeros(1), cfg, shape=(8, 8))
    torch.testing.assert_close(out, torch.tensor([2.5]))


# ---- through tasks.surgery.edit on a tiny adapter ----------------------------------------------------------------


@pytest.fixture(scope="module")
def free(tiny_adapter):
    """The tiny adapter (r = 4, o_proj + down_proj of 2 layers) decomposed with no model and no data."""
    return prepare_data_free(tiny_adapter, SurgeryConfig())


def test_prepare_data_free_needs_no_model(free):
    assert [m.name.rsplit(".", 1)[-1] for m in free.modules] == ["down_proj", "o_proj"] * 2
    assert free.sensitivities == {} and free.n_examples == 0 and free.edited_modules == []
    for name in ("abs_select", "random_index", "global_scalar", "rmt_bulk_only"):
        with pytest.raises(ValueError, match="needs the calibration pass"):
            edit_sigmas(free, name, EditConfig())


@pytest.mark.parametrize("policy", [n for n in DATA_FREE if n != "dg_hard"] + ["zero_rebuild"])
def test_data_free_edits_write_valid_balanced_adapters(free, tiny_adapter, policy, tmp_path):
    cfg = SurgeryConfig(edit=EditConfig(hns={"fast_steps": 4, "stable_steps": 1}))
    path, manifest = write_candidate(free, policy, cfg, tmp_path / policy)
    assert manifest["needs_data"] is False and manifest["skipped_modules"] == []
    assert manifest["summary"]["modules_edited"] == 4
    edited, src = load_adapter(path), load_adapter(tiny_adapter)
    for m in free.modules:
        sp = free.spectra[m.name]
        want = apply_policy(policy, sp.S, torch.zeros(4), torch.zeros(4), cfg.edit,
                            shape=(sp.U.shape[0], sp.V.shape[0]))
        sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
        torch.testing.assert_close(sig, want, atol=1e-7, rtol=0)
        assert bool((sig >= 0).all()) and bool(torch.isfinite(sig).all())
        a, b = edited.tensors[m.key_A], edited.tensors[m.key_B]
        assert a.shape == src.tensors[m.key_A].shape and b.shape == src.tensors[m.key_B].shape  # same r
        torch.testing.assert_close(b @ a, sp.U @ torch.diag(want) @ sp.V.T, atol=1e-5, rtol=1e-4)
        # balanced: both factors carry √t (EXTENSIONS §0)
        torch.testing.assert_close(torch.linalg.vector_norm(b, dim=0), want.sqrt(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.linalg.vector_norm(a, dim=1), want.sqrt(), atol=1e-5, rtol=1e-5)
        mod = manifest["modules"][m.name]
        assert mod["sensitivity"] is None
        assert mod["effective_rank_before"] == pytest.approx(effective_rank(sp.S))
        assert mod["effective_rank_after"] == pytest.approx(effective_rank(want))
    if policy == "hns":
        assert manifest["settings"]["fast_steps"] == 4 and manifest["role"] == "posthoc" and manifest["promotable"]


def test_flat_and_hns_adapters_load_in_peft(free, tiny_base, tmp_path):
    cfg = SurgeryConfig(edit=EditConfig(hns={"output_rank": 2}))
    for policy in ("hns", "flat_nuclear"):
        path, manifest = write_candidate(free, policy, cfg, tmp_path / policy)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(path)).eval()
        for m in free.modules:
            layer = model.get_submodule("base_model.model." + m.name)
            delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            sp, sig = free.spectra[m.name], torch.tensor(manifest["modules"][m.name]["sigma_after"])
            torch.testing.assert_close(delta, sp.U @ torch.diag(sig) @ sp.V.T, atol=1e-5, rtol=1e-4)
            if policy == "hns":
                assert sig[2:].abs().max() == 0 and float(sig.sum()) == pytest.approx(float(sp.S[:2].sum()), rel=1e-5)
