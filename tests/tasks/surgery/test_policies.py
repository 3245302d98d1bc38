"""Reweighting policies, normalisation, clamp and energy preservation (tasks/surgery/policies.py, METHOD §6-§12,
§15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spectral_surgery.tasks.config as config_module
from spectral_surgery.tasks.surgery import policies, policy_registry
from spectral_surgery.tasks.config import EditConfig
from spectral_surgery.tasks.names import UnknownNameError
from spectral_surgery.tasks.surgery.policies import (
    PolicyInputs,
    apply_policy,
    get_policy,
    list_policies,
    normalize,
    policy_counts,
    preserve_energy,
    register_policy,
)

# METHOD §15 worked example (r = 8).
SIGMA0 = torch.tensor([8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0])
G = torch.tensor([0.5, -2.0, 0.1, 1.5, -0.3, 0.05, -0.8, 0.2])
EXPECTED = {
    "abs_select": (
        [1, 1.25, 0.8, 1.25, 1, 0.8, 1, 1],
        [7.721519, 7.238924, 3.860759, 4.825949, 2.895570, 1.544304, 1.447785, 0.965190],
    ),
    "smooth_abs": (
        [1.029658, 1.241983, 0.919544, 1.221312, 0.971197, 0.908297, 1.113840, 0.944150],
        [7.726259, 6.989615, 4.312497, 4.582191, 2.732844, 1.703900, 1.567114, 0.885579],
    ),
    "grad_direction": (
        [0.230411, 1.798865, 0.745591, 0.012232, 1.092068, 0.863476, 1.264735, 0.555906],
        [2.355318, 13.791319, 4.763506, 0.062521, 4.186268, 2.206665, 2.424078, 0.710325],
    ),
}
DEFAULT = EditConfig()
ALL = ["abs_select", "smooth_abs", "random_index", "gd", "double_smooth", "z_score", "robust_z"]


def _inputs(cfg: EditConfig = DEFAULT, sigma0=SIGMA0, g=G, generator=None) -> PolicyInputs:
    return PolicyInputs(sigma0, normalize(g.abs(), cfg.grad_norm), normalize(g, cfg.grad_norm), generator)


def _factors(name: str, cfg: EditConfig = DEFAULT, **kw) -> torch.Tensor:
    """Per-component factors σ̃/σ0 of a policy, before clamp and energy preservation."""
    inp = _inputs(cfg, **kw)
    return get_policy(name).fn(inp, cfg) / inp.sigma0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _double_gate(x, t_low, t_high, tau, cfg: EditConfig):
    mid, sup, amp = cfg.mid_factor, cfg.sup_factor, cfg.amp_factor
    return mid - (mid - sup) * _sigmoid((t_low - x) / tau) + (amp - mid) * _sigmoid((x - t_high) / tau)


A_HAT = (G.abs() / G.abs().mean()).double().numpy()  # â of the §15 example; mean|g| = 0.68125


# ---- registry ---------------------------------------------------------------------------------------------


def test_registered_names_and_flags():
    assert list_policies() == [
        "abs_select", "smooth_abs", "random_index", "grad_direction", "double_smooth", "z_score", "robust_z"
    ]
    rand = get_policy("random_index")
    assert rand.is_control and not rand.uses_sensitivity
    for name in list_policies():
        spec = get_policy(name)
        assert spec.name == name and spec.description
        assert "2603.03995" in (spec.fn.__doc__ or "")  # every policy cites the paper
        if name != "random_index":
            assert spec.uses_sensitivity and not spec.is_control


def test_gd_alias():
    assert get_policy("gd") is get_policy("grad_direction")
    assert "gd" not in list_policies()
    via_alias = apply_policy("gd", SIGMA0, G.abs(), G, DEFAULT)
    torch.testing.assert_close(via_alias, apply_policy("grad_direction", SIGMA0, G.abs(), G, DEFAULT))


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError) as e:
        get_policy("smoth_abs")
    msg = str(e.value)
    assert "Did you mean 'smooth_abs'" in msg and "abs_select" in msg and "robust_z" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="unknown policy"):
        apply_policy("nope", SIGMA0, G.abs(), G, DEFAULT)


def test_duplicate_registration_raises(monkeypatch):
    monkeypatch.setattr(policy_registry, "POLICIES", policy_registry.POLICIES.copy())
    monkeypatch.setattr(config_module, "EDIT_SECTIONS", dict(config_module.EDIT_SECTIONS))

    @register_policy("tmp_identity", aliases=("tmp_id",))
    def tmp_identity(inp, cfg):
        """Identity."""
        return inp.sigma0.clone()

    assert get_policy("tmp_id").description == "Identity."
    for name in ("tmp_identity", "tmp_id", "abs_select", "gd"):
        with pytest.raises(ValueError, match="already registered"):
            register_policy(name)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("fresh", aliases=("abs_select",))


# ---- §15 worked vectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_worked_vectors(name):
    factors, finals = EXPECTED[name]
    torch.testing.assert_close(_factors(name), torch.tensor(factors), atol=1e-5, rtol=0)
    out = apply_policy(name, SIGMA0, G.abs(), G, DEFAULT)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(finals), atol=1e-5, rtol=0)
    assert float(out.sum()) == pytest.approx(30.5, abs=1e-4)


def test_inputs_are_not_modified():
    s0, mag, sgn = SIGMA0.clone(), G.abs(), G.clone()
    for name in list_policies():
        apply_policy(name, s0, mag, sgn, EditConfig(update_mode="additive"), torch.Generator().manual_seed(0))
    assert torch.equal(s0, SIGMA0) and torch.equal(sgn, G) and torch.equal(mag, G.abs())


# ---- counts, abs_select and random_index ------------------------------------------------------------------


@pytest.mark.parametrize(
    "r,expected", [(8, (2, 2)), (16, (3, 3)), (32, (6, 6)), (64, (13, 13)), (1, (1, 0)), (2, (1, 0))]
)
def test_policy_counts_reference_ranks(r, expected):
    assert policy_counts(r, DEFAULT) == expected


def test_policy_counts_round_half_to_even():
    cfg = EditConfig(core_frac=0.25, noise_frac=0.25)
    assert policy_counts(10, cfg) == (2, 2)  # 2.5 rounds to 2 (half-up would give 3)
    assert policy_counts(6, EditConfig(core_frac=0.25, noise_frac=0.25)) == (2, 2)  # 1.5 -> 2
    assert policy_counts(10, EditConfig(core_frac=0.0, min_core_k=3)) == (3, 2)  # min_core_k floor
    assert policy_counts(10, EditConfig(core_frac=0.7, noise_frac=0.6)) == (7, 3)  # noise truncated to r - k_core
    assert policy_counts(4, EditConfig(core_frac=0.0, min_core_k=9)) == (4, 0)  # capped at r


def test_abs_select_with_zero_gradient_still_edits():
    zero = torch.zeros(8)
    f = _factors("abs_select", g=zero)
    torch.testing.assert_close(f.sort().values, torch.tensor([0.8, 0.8, 1.0, 1.0, 1.0, 1.0, 1.25, 1.25]))
    assert not torch.allclose(apply_policy("abs_select", SIGMA0, zero, zero, DEFAULT), SIGMA0)


@pytest.mark.parametrize("r", [8, 10, 16, 32, 64])
@pytest.mark.parametrize("cfg", [DEFAULT, EditConfig(core_frac=0.25, noise_frac=0.25)])
def test_random_index_matches_abs_select_counts(r, cfg):
    sigma0 = torch.linspace(2.0, 1.0, r)
    g = torch.randn(r, generator=torch.Generator().manual_seed(r))
    k_core, k_noise = policy_counts(r, cfg)
    for name in ("abs_select", "random_index"):
        f = _factors(name, cfg, sigma0=sigma0, g=g, generator=torch.Generator().manual_seed(1))
        assert int(torch.isclose(f, torch.tensor(cfg.amp_factor)).sum()) == k_core
        assert int(torch.isclose(f, torch.tensor(cfg.sup_factor)).sum()) == k_noise


def test_random_index_noise_is_the_next_block_of_the_permutation():
    r, seed = 16, 7
    k_core, k_noise = policy_counts(r, DEFAULT)
    perm = torch.randperm(r, generator=torch.Generator().manual_seed(seed))
    f = _factors("random_index", sigma0=torch.ones(r), g=torch.ones(r), generator=torch.Generator().manual_seed(seed))
    want = torch.full((r,), DEFAULT.mid_factor)
    want[perm[:k_core]] = DEFAULT.amp_factor
    want[perm[k_core : k_core + k_noise]] = DEFAULT.sup_factor
    torch.testing.assert_close(f, want)


def test_random_index_is_seeded_and_ignores_sensitivities():
    def run(g, seed):
        return apply_policy("random_index", SIGMA0, g.abs(), g, DEFAULT, torch.Generator().manual_seed(seed))

    assert torch.equal(run(G, 3), run(G, 3))
    assert torch.equal(run(G, 3), run(torch.randn(8) * 100, 3))
    assert torch.equal(run(G, 3), run(torch.full((8,), float("nan")), 3))  # not even validated
    assert any(not torch.equal(run(G, 3), run(G, s)) for s in range(4, 10))
    # One generator consumed module after module (the reference's global generator, §7.3).
    gen = torch.Generator().manual_seed(3)
    first = apply_policy("random_index", SIGMA0, G.abs(), G, DEFAULT, gen)
    assert torch.equal(first, run(G, 3))
    # None falls back to torch's global generator.
    torch.manual_seed(5)
    a = apply_policy("random_index", SIGMA0, G.abs(), G, DEFAULT)
    torch.manual_seed(5)
    assert torch.equal(a, apply_policy("random_index", SIGMA0, G.abs(), G, DEFAULT))


# ---- grad_direction variants ----------------------------------------------------------------------------


def test_gd_symmetric_multiplicative():
    cfg = EditConfig(asymmetric_update=False, eta=0.3)
    g_hat = G.double().numpy() / np.abs(G.double().numpy()).mean()
    want = torch.from_numpy(np.exp(-0.3 * g_hat))
    torch.testing.assert_close(_factors("grad_direction", cfg).double(), want, atol=1e-6, rtol=0)


def test_gd_additive_variants():
    g_hat = G.double().numpy() / np.abs(G.double().numpy()).mean()
    s0 = SIGMA0.double().numpy()
    cfg = EditConfig(update_mode="additive", asymmetric_update=False, eta=0.5, preserve_energy="none")
    torch.testing.assert_close(
        get_policy("gd").fn(_inputs(cfg), cfg).double(), torch.from_numpy(s0 - 0.5 * g_hat), atol=1e-5, rtol=0
    )
    cfg = EditConfig(update_mode="additive", preserve_energy="none")  # asymmetric, η_sup 2, η_enh 0.2
    e = 2.0 * np.maximum(g_hat, 0) - 0.2 * np.maximum(-g_hat, 0)
    got = get_policy("gd").fn(_inputs(cfg), cfg).double()
    torch.testing.assert_close(got, torch.from_numpy(s0 - e), atol=1e-5, rtol=0)


@pytest.mark.parametrize("p", [0.5, 2.0, 3.0])
def test_gd_pos_power_applies_to_positive_part_only(p):
    cfg = EditConfig(pos_power=p)
    g_hat = G.double().numpy() / np.abs(G.double().numpy()).mean()
    e = 2.0 * np.maximum(g_hat, 0) ** p - 0.2 * np.maximum(-g_hat, 0)
    f = _factors("grad_direction", cfg).double()
    torch.testing.assert_close(f, torch.from_numpy(np.exp(-e)), atol=1e-5, rtol=1e-5)
    neg = G < 0
    torch.testing.assert_close(f[neg], _factors("grad_direction")[neg].double())  # negatives unaffected by p


def test_gd_zero_gradient_is_identity():
    zero = torch.zeros(8)
    assert torch.equal(apply_policy("gd", SIGMA0, zero, zero, DEFAULT), SIGMA0)


# ---- normalisation ----------------------------------------------------------------------------------------


def test_normalize_modes():
    v = torch.tensor([3.0, -4.0, 0.0, 1.0])
    torch.testing.assert_close(normalize(v, "mean_abs"), v / 2.0)
    torch.testing.assert_close(normalize(v, "l2"), v / math.sqrt(26.0))
    out = normalize(v, "none")
    assert torch.equal(out, v) and out is not v
    assert torch.equal(normalize(torch.zeros(3), "mean_abs"), torch.zeros(3))  # denominator floored at 1e-8
    with pytest.raises(ValueError, match="grad_norm"):
        normalize(v, "max")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["l2", "none"])
def test_grad_norm_modes_drive_gd(mode):
    cfg = EditConfig(grad_norm=mode, preserve_energy="none", asymmetric_update=False, eta=0.2)
    g = G.double().numpy()
    g_hat = g / np.linalg.norm(g) if mode == "l2" else g
    out = apply_policy("gd", SIGMA0, G.abs(), G, cfg).double()
    torch.testing.assert_close(out, torch.from_numpy(SIGMA0.double().numpy() * np.exp(-0.2 * g_hat)), atol=1e-5, rtol=0)


def test_scale_of_g_cancels_under_normalisation():
    for name in ("abs_select", "smooth_abs", "gd", "double_smooth", "z_score", "robust_z"):
        for mode in ("mean_abs", "l2"):
            cfg = EditConfig(grad_norm=mode)
            a = apply_policy(name, SIGMA0, G.abs(), G, cfg)
            b = apply_policy(name, SIGMA0, 37.0 * G.abs(), 37.0 * G, cfg)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- clamp and energy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_energy_options_preserve_their_norm(name):
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = apply_policy(name, SIGMA0, G.abs(), G, EditConfig(preserve_energy="l1"), gen())
    assert float(out.sum()) == pytest.approx(float(SIGMA0.sum()), rel=1e-6)
    out = apply_policy(name, SIGMA0, G.abs(), G, EditConfig(preserve_energy="l2"), gen())
    assert float(out.norm()) == pytest.approx(float(SIGMA0.norm()), rel=1e-6)
    raw = get_policy(name).fn(_inputs(generator=gen()), DEFAULT)
    out = apply_policy(name, SIGMA0, G.abs(), G, EditConfig(preserve_energy="none"), gen())
    torch.testing.assert_close(out, raw)


def test_preserve_energy_function():
    s0, st = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(preserve_energy(s0, st, "l1"), torch.tensor([3.0, 3.0, 0.0]))
    torch.testing.assert_close(preserve_energy(s0, st, "l2"), st * math.sqrt(14.0 / 2.0))
    assert torch.equal(preserve_energy(s0, st, "none"), st)
    assert torch.equal(preserve_energy(s0, torch.zeros(3), "l1"), torch.zeros(3))  # no guard: all-zero stays 0
    with pytest.raises(ValueError, match="preserve_energy"):
        preserve_energy(s0, st, "l3")  # type: ignore[arg-type]


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_clamp_happens_before_renormalisation(clip):
    cfg = EditConfig(update_mode="additive", asymmetric_update=False, eta=3.0, sigma_clip_min=clip)
    g_hat = G.double().numpy() / np.abs(G.double().numpy()).mean()
    s0 = SIGMA0.double().numpy()
    tilde = np.maximum(s0 - 3.0 * g_hat, clip)
    want = tilde * s0.sum() / tilde.sum()
    out = apply_policy("gd", SIGMA0, G.abs(), G, cfg)
    torch.testing.assert_close(out.double(), torch.from_numpy(want), atol=1e-5, rtol=0)
    assert (s0 - 3.0 * g_hat).min() < clip  # the clamp was active
    if clip == 0.0:
        assert int((out == 0).sum()) >= 1  # clamped entries stay exactly 0 after the rescale
    else:
        assert float(out.min()) < clip  # the rescale (< 1) takes clamped entries below the floor


def test_all_zero_sigma_stays_zero():
    zero = torch.zeros(8)
    for name in ALL:
        for energy in ("l1", "l2", "none"):
            cfg = EditConfig(preserve_energy=energy)
            out = apply_policy(name, zero, G.abs(), G, cfg, torch.Generator().manual_seed(0))
            assert torch.equal(out, zero), (name, energy)
    # Additive gd can lift zeros, but the 1e-8 floors shrink the result to nothing under l1.
    out = apply_policy("gd", zero, G.abs(), G, EditConfig(update_mode="additive"))
    assert float(out.sum()) == pytest.approx(1e-8, rel=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="magnitude has 7 entries"):
        apply_policy("abs_select", SIGMA0, G.abs()[:7], G, DEFAULT)
    with pytest.raises(ValueError, match="sigma0 must be a non-empty 1-D"):
        apply_policy("abs_select", SIGMA0[None], G.abs(), G, DEFAULT)
    with pytest.raises(ValueError, match="NaN or Inf"):
        apply_policy("smooth_abs", SIGMA0, torch.full((8,), float("nan")), G, DEFAULT)
    with pytest.raises(ValueError, match=">= 0"):
        apply_policy("smooth_abs", SIGMA0, G, G, DEFAULT)


def test_rank_one_multiplicative_policies_are_no_ops():
    s0, g = torch.tensor([2.5]), torch.tensor([-0.7])
    for name in list_policies():
        torch.testing.assert_close(apply_policy(name, s0, g.abs(), g, DEFAULT, torch.Generator()), s0)


# ---- smooth_abs -------------------------------------------------------------------------------------------


def _smooth_np(x, cfg: EditConfig, q_lo=None, q_hi=None):
    q_lo = cfg.noise_frac if q_lo is None else q_lo
    q_hi = 1 - cfg.core_frac if q_hi is None else q_hi
    tau = cfg.smooth_temperature * max(np.quantile(x, q_hi) - np.quantile(x, q_lo), 1e-8)
    mu = np.quantile(x, cfg.smooth_center_q)
    sup, mid, amp = cfg.sup_factor, cfg.mid_factor, cfg.amp_factor
    if cfg.smooth_align_mid and sup < mid < amp:
        p = (mid - sup) / (amp - sup)
        mu -= tau * np.log(p / (1 - p))
    return sup + (amp - sup) * _sigmoid((x - mu) / tau)


@pytest.mark.parametrize(
    "cfg,window",
    [
        (EditConfig(smooth_align_mid=False), None),
        (EditConfig(smooth_temperature=1.0, smooth_center_q=0.3), None),
        (EditConfig(core_frac=0.6, noise_frac=0.5), (0.25, 0.75)),  # empty window -> fallback
        (EditConfig(mid_factor=1.25), None),  # mid not strictly inside (sup, amp): no alignment
    ],
)
def test_smooth_abs_formula(cfg, window):
    q = window or (None, None)
    want = _smooth_np(A_HAT, cfg, *q)
    if cfg.mid_factor == 1.25:
        want = _smooth_np(A_HAT, cfg.model_copy(update={"smooth_align_mid": False}), *q)
    torch.testing.assert_close(_factors("smooth_abs", cfg).double(), torch.from_numpy(want), atol=1e-5, rtol=0)


def test_smooth_abs_gate_at_centre():
    g = torch.tensor([0.1, 0.4, 0.9, 1.6, 3.0])  # odd r: the median is an element (index 2)
    assert float(_factors("smooth_abs", sigma0=torch.ones(5), g=g)[2]) == pytest.approx(1.0, abs=1e-6)
    off = EditConfig(smooth_align_mid=False)
    assert float(_factors("smooth_abs", off, sigma0=torch.ones(5), g=g)[2]) == pytest.approx(1.025, abs=1e-6)


def test_smooth_abs_degenerate_is_uniform_mid():
    same = torch.full((8,), -0.3)
    torch.testing.assert_close(_factors("smooth_abs", EditConfig(mid_factor=1.1), g=same), torch.full((8,), 1.1))
    torch.testing.assert_close(apply_policy("smooth_abs", SIGMA0, same.abs(), same, DEFAULT), SIGMA0)


# ---- double_smooth, z_score, robust_z ---------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [DEFAULT, EditConfig(smooth_temperature=0.1, core_frac=0.3, noise_frac=0.1)])
def test_double_smooth_formula(cfg):
    x = A_HAT
    tau = cfg.smooth_temperature * (x.max() - x.min())
    want = _double_gate(x, np.quantile(x, cfg.noise_frac), np.quantile(x, 1 - cfg.core_frac), tau, cfg)
    torch.testing.assert_close(_factors("double_smooth", cfg).double(), torch.from_numpy(want), atol=1e-5, rtol=0)


def test_double_smooth_fallback_quantiles_and_constant_input():
    cfg = EditConfig(core_frac=0.6, noise_frac=0.5)
    x = A_HAT
    tau = cfg.smooth_temperature * (x.max() - x.min())
    want = _double_gate(x, np.quantile(x, 0.45), np.quantile(x, 0.55), tau, cfg)
    torch.testing.assert_close(_factors("double_smooth", cfg).double(), torch.from_numpy(want), atol=1e-5, rtol=0)
    same = torch.full((8,), 0.2)  # both sigmoids at 1/2: uniform gate, identity after L1
    torch.testing.assert_close(_factors("double_smooth", g=same), torch.full((8,), 1.025))
    torch.testing.assert_close(apply_policy("double_smooth", SIGMA0, same, same, DEFAULT), SIGMA0)


@pytest.mark.parametrize("cfg", [DEFAULT, EditConfig(z_high=0.5, z_low=-1.0, z_tau=0.5)])
def test_z_score_formula(cfg):
    x = A_HAT
    z = (x - x.mean()) / x.std()  # numpy's default is the population std (ddof=0)
    want = _double_gate(z, cfg.z_low, cfg.z_high, cfg.z_tau, cfg)
    torch.testing.assert_close(_factors("z_score", cfg).double(), torch.from_numpy(want), atol=1e-5, rtol=0)


def test_z_score_fallbacks_to_identity():
    same = torch.full((8,), 0.4)
    assert torch.equal(_factors("z_score", g=same), torch.ones(8))  # std < z_fallback_std
    assert torch.equal(_factors("z_score", EditConfig(z_fallback_std=0.0), g=same), torch.ones(8))  # max|z| < 1e-3
    assert torch.equal(_factors("z_score", EditConfig(z_fallback_std=10.0)), torch.ones(8))
    assert torch.equal(apply_policy("z_score", SIGMA0, same, same, DEFAULT), SIGMA0)


def _lower_median(v):
    return np.sort(v)[(len(v) - 1) // 2]  # torch.median's convention for even counts


@pytest.mark.parametrize("cfg", [DEFAULT, EditConfig(robust_z_high=0.5, robust_z_low=-1.0, robust_z_tau=0.5)])
def test_robust_z_formula(cfg):
    x = A_HAT
    m = _lower_median(x)
    s = 1.4826 * _lower_median(np.abs(x - m))
    want = _double_gate((x - m) / s, cfg.robust_z_low, cfg.robust_z_high, cfg.robust_z_tau, cfg)
    torch.testing.assert_close(_factors("robust_z", cfg).double(), torch.from_numpy(want), atol=1e-5, rtol=0)


def test_robust_z_fallback_to_identity():
    g = torch.tensor([0.3, 0.3, 0.3, 0.3, 0.3, 2.0, 0.01, 0.3])  # more than half equal the median: MAD = 0
    assert torch.equal(_factors("robust_z", g=g), torch.ones(8))
    assert torch.equal(apply_policy("robust_z", SIGMA0, g.abs(), g, DEFAULT), SIGMA0)
    assert torch.equal(_factors("robust_z", EditConfig(robust_fallback_sigma=100.0)), torch.ones(8))
    assert not torch.equal(_factors("robust_z"), torch.ones(8))


# ---- the control ladder (EXTENSIONS §8.3, §8.4, §11) -----------------------------------------------------

CONTROLS = {"zero_rebuild": ("canary", "balanced"), "zero_rebuild_one_sided": ("canary", "one_sided"),
            "global_scalar": ("scalar_control", "one_sided")}  # fmt: skip


def test_control_ladder_roles_and_flags():
    assert list_policies(("scalar_control", "canary")) == list(CONTROLS)
    # the authors' post-hoc edits (role posthoc, tests/tasks/surgery/test_posthoc.py) are registered after the ladder
    assert list_policies(None) == list_policies() + list(CONTROLS) + list_policies(("posthoc",))
    assert list_policies(("random_control",)) == ["random_index"]
    for name, (role, rebuild) in CONTROLS.items():
        spec = get_policy(name)
        assert (spec.role, spec.rebuild) == (role, rebuild) and not spec.uses_sensitivity and not spec.postprocess
        assert "2603.03995" in (spec.fn.__doc__ or "") and spec.description
    # canaries are never promoted; the calibrated scalar is a legitimate edit that may win
    assert get_policy("zero_rebuild").is_control and not get_policy("zero_rebuild").promotable
    assert not get_policy("global_scalar").is_control and get_policy("global_scalar").promotable
    assert get_policy("global_scalar").needs_gamma and not get_policy("zero_rebuild").needs_gamma
    assert get_policy("random_index").role == "random_control" and get_policy("random_index").is_control
    others = [get_policy(n) for n in list_policies() if n != "random_index"]
    assert all(spec.role == "policy" and spec.promotable for spec in others)


def test_register_policy_role_arguments(monkeypatch):
    monkeypatch.setattr(policy_registry, "POLICIES", policy_registry.POLICIES.copy())
    monkeypatch.setattr(config_module, "EDIT_SECTIONS", dict(config_module.EDIT_SECTIONS))

    @register_policy("tmp_control", is_control=True)
    def tmp_control(inp, cfg):
        """Old-style control."""
        return inp.sigma0.clone()

    assert get_policy("tmp_control").role == "random_control" and get_policy("tmp_control").is_control
    with pytest.raises(ValueError, match="contradicts"):
        register_policy("tmp2", is_control=True, role="scalar_control")
    with pytest.raises(ValueError, match="role must be one of"):
        register_policy("tmp3", role="boss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rebuild must be"):
        register_policy("tmp4", rebuild="diagonal")  # type: ignore[arg-type]


@pytest.mark.parametrize("cfg", [DEFAULT, EditConfig(sigma_clip_min=2.5, preserve_energy="l2"),
                                 EditConfig(preserve_energy="none", grad_norm="none")])  # fmt: skip
def test_zero_rebuild_is_exactly_sigma_under_any_edit_config(cfg):
    for name in ("zero_rebuild", "zero_rebuild_one_sided"):
        out = apply_policy(name, SIGMA0, torch.full((8,), float("nan")), G, cfg)  # sensitivities ignored
        assert out.dtype == torch.float32 and torch.equal(out, SIGMA0)


@pytest.mark.parametrize("gamma", [1.0, 0.4, 0.0, 1.3])
def test_global_scalar_is_gamma_sigma_without_clamp_or_energy(gamma):
    cfg = EditConfig(sigma_clip_min=2.5)  # would lift entries and restore Σσ if postprocessing ran
    out = apply_policy("global_scalar", SIGMA0, G.abs(), G, cfg, gamma=gamma)
    torch.testing.assert_close(out, SIGMA0 * gamma, atol=0, rtol=0)
    # γ is ignored by the other policies
    torch.testing.assert_close(apply_policy("abs_select", SIGMA0, G.abs(), G, DEFAULT, gamma=gamma),
                               apply_policy("abs_select", SIGMA0, G.abs(), G, DEFAULT))  # fmt: skip


def test_global_scalar_needs_a_valid_gamma():
    with pytest.raises(ValueError, match="needs gamma"):
        apply_policy("global_scalar", SIGMA0, G.abs(), G, DEFAULT)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and >= 0"):
            apply_policy("global_scalar", SIGMA0, G.abs(), G, DEFAULT, gamma=bad)
    with pytest.raises(ValueError, match="needs gamma"):
        get_policy("global_scalar").fn(PolicyInputs(SIGMA0, G.abs(), G), DEFAULT)
