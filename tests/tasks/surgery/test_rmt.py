"""Marchenko–Pastur based edits (tasks/surgery/rmt.py): Gavish–Donoho hard threshold (EXTENSIONS §6) and RMT labelling
with bulk-only editing (EXTENSIONS §2), as pure functions, registered policies and through tasks.surgery.edit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.adapter_io import load_adapter
from spectral_surgery.tasks.surgery.calibration import CalibExample
from spectral_surgery.tasks.config import CalibConfig, EditConfig, RMTConfig, SurgeryConfig
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare, prepare_data_free, write_candidate
from spectral_surgery.tasks.names import UnknownNameError
from spectral_surgery.tasks.surgery.policies import apply_policy, get_policy
from spectral_surgery.tasks.surgery.rmt import (
    dg_hard_spectrum,
    dg_threshold,
    gd_lambda_star,
    gd_omega,
    mp_median_grid,
    mp_median_quadrature,
    rmt_labels,
)
from tests import tiny

H1 = torch.tensor([8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0], dtype=torch.float64)
R2 = torch.tensor([10.0, 3.0, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7], dtype=torch.float64)
G = torch.tensor([0.5, -2.0, 0.1, 1.5, -0.3, 0.05, -0.8, 0.2])  # METHOD §15's g (the §2 vectors use abs_select)
SQUARE, DOWN = (4096, 4096), (4096, 14336)  # β = 1 and β = 4096/14336 (Llama down_proj: d_out 4096, d_in 14336)
TOL = {"atol": 1e-6, "rtol": 0.0}
CODES = {"signal": "S", "near_edge": "E", "bulk": "B"}


def _codes(labels) -> str:
    return "".join(CODES[x] for x in labels.labels)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---- Gavish–Donoho (§6) -----------------------------------------------------------------------------------


def test_gd_reference_values():
    assert gd_lambda_star(1.0) == pytest.approx(4 / math.sqrt(3), abs=1e-12)
    assert mp_median_quadrature(1.0) == pytest.approx(0.652776, abs=1e-6)
    for beta, omega in ((1.0, 2.858362), (0.1, 1.608772), (0.25, 1.836866), (0.5, 2.171185)):
        assert gd_omega(beta) == pytest.approx(omega, abs=1e-6)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="0 < beta <= 1"):
            mp_median_quadrature(bad)


def test_dg_vectors():
    median, threshold, beta = dg_threshold(H1, *SQUARE)  # D1: r ≪ p, the zero-padded median is 0
    assert (median, threshold, beta) == (0.0, 0.0, 1.0)
    assert torch.equal(dg_hard_spectrum(H1, *SQUARE), H1)
    d2 = _t([10.0, 2.0, 1.0, 0.0])  # D2 (the repo's test), 4 × 4
    median, threshold, _ = dg_threshold(d2, 4, 4)
    assert median == 1.5 and threshold == pytest.approx(4.287544, abs=1e-6)
    assert torch.equal(dg_hard_spectrum(d2, 4, 4), _t([10.0, 0.0, 0.0, 0.0]))
    d3 = _t([8, 6, 5, 4, 3, 2, 1.5, 1, 0.9, 0.8, 0.7, 0.6])  # D3, 12 × 12
    median, threshold, _ = dg_threshold(d3, 12, 12)
    assert median == 1.75 and threshold == pytest.approx(5.002134, abs=1e-6)
    assert torch.equal(dg_hard_spectrum(d3, 12, 12), _t([8, 6] + [0] * 10))


def test_dg_edge_cases():
    assert torch.equal(dg_hard_spectrum(torch.zeros(4), 4, 4), torch.zeros(4))  # all-zero σ: 0 > 0 is false
    assert torch.equal(dg_hard_spectrum(torch.ones(4), 4, 4), torch.zeros(4))  # all equal: ω(1)·1 > 1
    assert torch.equal(dg_hard_spectrum(_t([2.5]), 64, 32), _t([2.5]))  # r = 1 in a big layer
    assert dg_hard_spectrum(H1.float(), *SQUARE).dtype == torch.float32
    # the median is numpy's over the zero-padded spectrum: an even p averages the centre pair
    assert dg_threshold(_t([4.0, 2.0]), 2, 3)[0] == 3.0 and dg_threshold(_t([4.0]), 2, 3)[0] == 2.0
    with pytest.raises(ValueError, match="exceed min"):
        dg_hard_spectrum(H1, 4, 4)
    for bad in (_t([1.0, -1.0]), _t([float("nan")])):
        with pytest.raises(ValueError, match="finite and >= 0"):
            dg_hard_spectrum(bad, 4, 4)


def test_dg_hard_policy():
    spec = get_policy("dg_hard")
    assert spec.needs_shape and spec.keep_identical and not spec.needs_data and spec.role == "posthoc"
    out = apply_policy("dg_hard", torch.tensor([10.0, 2.0, 1.0, 0.0]), torch.zeros(4), torch.zeros(4), EditConfig(),
                       shape=(4, 4))  # fmt: skip
    assert torch.equal(out, torch.tensor([10.0, 0.0, 0.0, 0.0]))
    for shape in (None, (0, 4), (4,)):
        with pytest.raises(ValueError, match="needs the layer shape"):
            apply_policy("dg_hard", H1.float(), torch.zeros(8), torch.zeros(8), EditConfig(), shape=shape)


# ---- RMT labelling (§2) -----------------------------------------------------------------------------------


def test_mp_grid_median():
    assert mp_median_grid(1.0) == pytest.approx(0.652875, abs=1e-6)  # the grid's, not the exact 0.652776 (§12.1)
    assert mp_median_grid(4096 / 14336) == pytest.approx(0.903970, abs=1e-6)
    assert mp_median_grid(4096 / 14336) == mp_median_grid(round(4096 / 14336, 8))  # rounded to 8 decimals
    for bad in (0.0, 1.0000001, -1.0):
        with pytest.raises(ValueError, match="0 < beta <= 1"):
            mp_median_grid(bad)


def test_r1_labels():
    lab = rmt_labels(H1, *SQUARE)
    assert lab.tail == 4 and lab.beta == 1.0
    assert lab.noise_var == pytest.approx(4.786521, abs=1e-6)  # median tail σ² = 3.125 (even t: centre pair)
    assert lab.sigma_plus == pytest.approx(4.375624, abs=1e-6) and lab.edge == lab.sigma_plus
    assert 0.9 * lab.edge == pytest.approx(3.938061, abs=1e-6) and 1.1 * lab.edge == pytest.approx(4.813186, abs=1e-6)
    assert _codes(lab) == "SSSEBBBB" and lab.bulk == [4, 5, 6, 7]
    assert lab.counts() == {"signal": 3, "near_edge": 1, "bulk": 4}
    down = rmt_labels(H1, *DOWN)
    assert down.mp_median == pytest.approx(0.903970, abs=1e-6)
    assert down.sigma_plus == pytest.approx(2.853128, abs=1e-6) and down.edge == 3.0  # the tail max
    assert _codes(down) == "SSSSEBBB"


def test_r2_labels_bulk_beyond_the_tail():
    lab = rmt_labels(R2, *SQUARE)
    assert lab.noise_var == pytest.approx(1.110473, abs=1e-6) and lab.edge == pytest.approx(2.107579, abs=1e-6)
    assert _codes(lab) == "SSBBBBBB"  # bulk reaches beyond the 4 tail candidates


def test_tail_size_rules_and_rank_one():
    assert rmt_labels(H1, *SQUARE, tail_count=3).tail == 3
    assert rmt_labels(H1, *SQUARE, tail_count=100).tail == 7  # clipped to r − 1
    assert rmt_labels(_t([5.0, 1.0]), *SQUARE).tail == 1  # ⌊r/2⌋ = 1
    assert rmt_labels(_t([5.0, 4.0, 1.0]), *SQUARE).tail == 1
    one = rmt_labels(_t([5.0]), *SQUARE)
    assert one.tail == 1 and one.labels == ("bulk",)  # r = 1: bulk at any β ≳ 0.02
    assert rmt_labels(_t([5.0]), 1, 10000).labels == ("near_edge",)  # β = 1e-4: below that
    assert rmt_labels(H1, *SQUARE, edge_margin=1.0).bulk == []  # (1 − m)e floored at 0: nothing is bulk
    with pytest.raises(ValueError, match="non-empty 1-D"):
        rmt_labels(torch.zeros(0), *SQUARE)


def test_rmt_settings():
    c = RMTConfig()
    assert (c.tail_count, c.edge_margin, c.base_policy) == (0, 0.10, "abs_select")
    assert EditConfig().rmt_bulk_only == c
    for bad in ({"tail_count": -1}, {"edge_margin": -0.1}, {"base_policy": ""}):
        with pytest.raises(ValidationError):
            RMTConfig(**bad)


# ---- bulk-only editing (§2) -------------------------------------------------------------------------------


def _bulk(sigma, cfg=EditConfig(), shape=SQUARE, g=G):
    return apply_policy("rmt_bulk_only", sigma.float(), g.abs(), g, cfg, shape=shape)


def test_r1_bulk_only():
    pol = apply_policy("abs_select", H1.float(), G.abs(), G, EditConfig())
    torch.testing.assert_close(pol, torch.tensor([7.721519, 7.238924, 3.860759, 4.825949, 2.895570, 1.544304,
                                                  1.447785, 0.965190]), atol=1e-5, rtol=0)  # fmt: skip
    assert float(pol[4:].sum()) == pytest.approx(6.852849, abs=1e-5)  # rescaled to Σσ[bulk] = 7.5
    out = _bulk(H1)
    torch.testing.assert_close(out, torch.tensor([8, 6, 5, 4, 3.169014, 1.690141, 1.584507, 1.056338]), atol=1e-5,
                               rtol=0)  # fmt: skip
    assert torch.equal(out[:4], H1[:4].float())  # signal and near-edge stay exactly σ
    assert float(out.sum()) == pytest.approx(30.5, abs=1e-5)


def test_r2_bulk_only():
    out = _bulk(R2)
    torch.testing.assert_close(out, torch.tensor([10, 3, 0.985059, 1.410891, 1.026103, 0.738794, 0.820882, 0.718272]),
                               atol=1e-5, rtol=0)  # fmt: skip
    assert float(out.sum()) == pytest.approx(18.7, abs=1e-5)


def test_bulk_only_energy_modes():
    s = H1.float()
    none = _bulk(H1, EditConfig(preserve_energy="none"))  # no rescale: the policy's bulk values as they are
    pol = apply_policy("abs_select", s, G.abs(), G, EditConfig(preserve_energy="none"))
    torch.testing.assert_close(none, torch.cat([s[:4], pol[4:]]))
    l2 = _bulk(H1, EditConfig(preserve_energy="l2"))
    assert torch.equal(l2[:4], s[:4])
    assert float(torch.linalg.vector_norm(l2[4:])) == pytest.approx(float(torch.linalg.vector_norm(s[4:])), rel=1e-6)
    assert float(torch.linalg.vector_norm(l2)) == pytest.approx(float(torch.linalg.vector_norm(s)), rel=1e-6)
    # an empty bulk is no change, exactly
    assert torch.equal(_bulk(H1, EditConfig(rmt_bulk_only={"edge_margin": 1.0})), s)
    # all-zero σ stays zero; r = 1 is bulk, rescaled back to itself
    assert torch.equal(_bulk(torch.zeros(8)), torch.zeros(8))
    torch.testing.assert_close(_bulk(_t([2.5]), g=torch.tensor([0.3])), torch.tensor([2.5]))


def test_bulk_only_base_policy():
    out = _bulk(H1, EditConfig(rmt_bulk_only={"base_policy": "gd"}))
    pol = apply_policy("grad_direction", H1.float(), G.abs(), G, EditConfig())
    want = torch.cat([H1[:4].float(), pol[4:] * (7.5 / float(pol[4:].sum()))])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    with pytest.raises(UnknownNameError, match="Did you mean"):
        _bulk(H1, EditConfig(rmt_bulk_only={"base_policy": "abs_selct"}))
    for bad in ("hns", "rmt_bulk_only", "zero_rebuild"):
        with pytest.raises(ValueError, match="must be a reweighting policy"):
            _bulk(H1, EditConfig(rmt_bulk_only={"base_policy": bad}))
    with pytest.raises(ValueError, match="NaN or Inf"):  # it uses the sensitivities, so they are checked
        apply_policy("rmt_bulk_only", H1.float(), torch.full((8,), float("nan")), G, EditConfig(), shape=SQUARE)
    spec = get_policy("rmt_bulk_only")
    assert spec.needs_data and spec.uses_sensitivity and spec.needs_shape and not spec.postprocess


# ---- through tasks.surgery.edit -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny_base, tiny_adapter):
    """The tiny adapter prepared with a calibration pass on the tiny base (6 examples)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    examples = [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(6)]
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4))
    return prepare(model, tiny.make_tokenizer(), tiny_adapter, examples, cfg)


def test_rmt_bulk_only_through_write_candidate(calibrated, tmp_path):
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4))
    path, manifest = write_candidate(calibrated, "rmt_bulk_only", cfg, tmp_path / "rmt")
    assert manifest["needs_data"] is True and manifest["settings"]["base_policy"] == "abs_select"
    edited = load_adapter(path)
    for m in calibrated.modules:
        sp, mod = calibrated.spectra[m.name], manifest["modules"][m.name]
        labels = rmt_labels(sp.S, sp.U.shape[0], sp.V.shape[0])
        assert mod["rmt_labels"] == list(labels.labels) and mod["rmt_counts"] == labels.counts()
        assert mod["rmt_beta"] == pytest.approx(min(sp.U.shape[0], sp.V.shape[0]) / max(sp.U.shape[0], sp.V.shape[0]))
        sig = torch.tensor(mod["sigma_after"])
        keep = [i for i, x in enumerate(labels.labels) if x != "bulk"]
        torch.testing.assert_close(sig[keep], sp.S[keep], atol=1e-7, rtol=0)  # non-bulk entries untouched
        assert float(sig.sum()) == pytest.approx(float(sp.S.sum()), rel=1e-5)  # l1 kept module-wide
        b, a = edited.tensors[m.key_B], edited.tensors[m.key_A]
        torch.testing.assert_close(b @ a, sp.U @ torch.diag(sig) @ sp.V.T, atol=1e-5, rtol=1e-4)


def test_data_free_edits_reach_modules_without_a_gradient(calibrated):
    """Data-free edits cover every target module; those that need data skip modules the pass never reached."""
    dropped = calibrated.modules[0].name
    partial = dataclasses.replace(calibrated, sensitivities={k: v for k, v in calibrated.sensitivities.items()
                                                             if k != dropped})  # fmt: skip
    for policy, reaches in (("abs_select", False), ("random_index", False), ("rmt_bulk_only", False),
                            ("hns", True), ("dg_hard", True), ("zero_rebuild", True)):  # fmt: skip
        assert (dropped in edit_sigmas(partial, policy, EditConfig())) is reaches, policy
        assert len(edit_sigmas(partial, policy, EditConfig())) == (4 if reaches else 3)


def test_dg_hard_keeps_the_original_bytes(tiny_adapter, tmp_path):
    free = prepare_data_free(tiny_adapter, SurgeryConfig())
    path, manifest = write_candidate(free, "dg_hard", SurgeryConfig(), tmp_path / "dg")
    edited, src = load_adapter(path), load_adapter(tiny_adapter)
    assert all(torch.equal(edited.tensors[k], t) for k, t in src.tensors.items())  # identity on LoRA (§6)
    assert manifest["summary"]["mean_abs_rel_change"] == 0.0
    assert all(mod["dg_threshold"] == 0.0 and mod["dg_median"] == 0.0 for mod in manifest["modules"].values())


def test_dg_hard_rebuilds_a_changed_module_balanced(tiny_base, tmp_path):
    """With r > p/2 the median is positive: changed modules are rebuilt balanced at the same r."""
    adapter = tiny.save_adapter(tiny_base, tmp_path / "wide", r=20, alpha=20, targets=["o_proj"])
    free = prepare_data_free(adapter, SurgeryConfig(targets={"target_modules": ["o_proj"]}))
    path, manifest = write_candidate(free, "dg_hard", SurgeryConfig(targets={"target_modules": ["o_proj"]}),
                                     tmp_path / "dg")  # fmt: skip
    edited = load_adapter(path)
    for m in free.modules:
        sp, mod = free.spectra[m.name], manifest["modules"][m.name]
        assert mod["dg_threshold"] > 0
        want = dg_hard_spectrum(sp.S, 32, 32)
        kept = int((want > 0).sum())
        assert 0 < kept < 20 and torch.equal(torch.tensor(mod["sigma_after"]), want)
        a, b = edited.tensors[m.key_A], edited.tensors[m.key_B]
        assert a.shape == (20, 32) and b.shape == (32, 20)
        torch.testing.assert_close(torch.linalg.vector_norm(b, dim=0), want.sqrt(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b @ a, sp.U @ torch.diag(want) @ sp.V.T, atol=1e-5, rtol=1e-4)
