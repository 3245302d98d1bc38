"""The engine end to end: one decomposition + one calibration pass, every policy, PEFT adapters written back."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.adapter_io import load_adapter
from spectral_surgery.tasks.surgery.calibration import CalibExample, build_batch
from spectral_surgery.tasks.config import CalibConfig, EditConfig, SurgeryConfig, TargetConfig
from spectral_surgery.tasks.surgery.decompose import lowrank_svd
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare, write_candidate
from spectral_surgery.tasks.surgery.global_scalar import fixed_gamma
from spectral_surgery.tasks.surgery.policies import policy_counts
from tests import tiny

POLICIES = ("abs_select", "smooth_abs", "random_index", "grad_direction", "double_smooth", "z_score", "robust_z")


def _examples(n=6):
    return [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(n)]


def _cfg(**targets):
    return SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4), targets=TargetConfig(**targets))


def _base(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def prepared(tiny_base, tiny_adapter):
    model = _base(tiny_base)
    return prepare(model, tiny.make_tokenizer(), tiny_adapter, _examples(), _cfg()), model


def _delta(peft_model, name):
    layer = peft_model.get_submodule("base_model.model." + name)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.scaling["default"] * (b @ a)


def test_prepare_once_for_all_policies(prepared):
    p, model = prepared
    assert [m.name.rsplit(".", 1)[-1] for m in p.modules] == ["down_proj", "o_proj"] * 2  # by layer, then name
    assert set(p.sensitivities) == {m.name for m in p.modules}
    assert p.n_examples == 6 and len(p.calib_sha256) == 64
    # the shared base model comes back without LoRA layers and without gradients
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert not any(q.requires_grad for q in model.parameters())


@pytest.mark.parametrize("policy", POLICIES)
def test_edit_changes_only_sigma(prepared, policy, tmp_path):
    p, _ = prepared
    path, manifest = write_candidate(p, policy, _cfg(), tmp_path / policy, seed=7)
    edited = load_adapter(path)
    for m in p.modules:
        old = p.spectra[m.name]
        new = lowrank_svd(edited.tensors[m.key_A], edited.tensors[m.key_B])
        sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
        torch.testing.assert_close(new.S, sig.sort(descending=True).values, atol=1e-5, rtol=1e-4)
        # U and V are kept (up to sign): B'A' equals U diag(σ') Vᵀ with the ORIGINAL U, V
        rebuilt = edited.tensors[m.key_B].float() @ edited.tensors[m.key_A].float()
        torch.testing.assert_close(rebuilt, old.U @ torch.diag(sig) @ old.V.T, atol=1e-5, rtol=1e-4)
        # L1 energy (default) is preserved
        assert sig.sum().item() == pytest.approx(old.S.sum().item(), rel=1e-5)
    # untouched modules are byte-identical
    src = load_adapter(p.adapter.path)
    edited_keys = {k for m in p.modules for k in (m.key_A, m.key_B)}
    for k, t in src.tensors.items():
        if k not in edited_keys:
            assert torch.equal(edited.tensors[k], t), k


def test_manifest_contents(prepared, tmp_path):
    p, _ = prepared
    _, man = write_candidate(p, "smooth_abs", _cfg(), tmp_path / "s", seed=3)
    on_disk = json.loads((tmp_path / "s" / "edit_manifest.json").read_text())
    assert on_disk["policy"] == "smooth_abs" and on_disk["seed"] == 3
    assert on_disk["input_adapter_sha256"] == p.adapter.sha256
    assert on_disk["calibration"]["sha256"] == p.calib_sha256
    assert on_disk["parameters"]["smooth_temperature"] == 0.35
    assert {"torch", "transformers", "peft"} <= set(on_disk["package_versions"])
    mod = next(iter(on_disk["modules"].values()))
    assert len(mod["sigma_before"]) == len(mod["sigma_after"]) == len(mod["sensitivity"]["sign_agreement"]) == 4
    assert man["summary"]["modules_edited"] == 4 and man["summary"]["scalars_edited"] == 16


def test_random_index_matches_abs_select_counts(prepared):
    p, _ = prepared
    cfg = EditConfig(preserve_energy="none")
    k_core, k_noise = policy_counts(4, cfg)
    for policy in ("abs_select", "random_index"):
        for name, sig in edit_sigmas(p, policy, cfg, seed=1).items():
            ratio = sig / p.spectra[name].S
            assert int(torch.isclose(ratio, torch.tensor(1.25)).sum()) == k_core
            assert int(torch.isclose(ratio, torch.tensor(0.8)).sum()) == k_noise
    # seeded: same seed, same draw; the draw is consumed across modules in order
    a, b = edit_sigmas(p, "random_index", cfg, seed=5), edit_sigmas(p, "random_index", cfg, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"use_rslora": True},
        {"alpha_pattern": {"model.layers.1.self_attn.o_proj": 3}, "rank_pattern": {"down_proj": 2}},
    ],
    ids=["plain", "rslora", "patterns"],
)
def test_edited_adapter_loads_in_peft_with_expected_update(tiny_base, tmp_path, kw):
    adapter = tiny.save_adapter(tiny_base, tmp_path / "a", r=4, alpha=8, **kw)
    model = _base(tiny_base)
    p = prepare(model, tiny.make_tokenizer(), adapter, _examples(), _cfg())
    path, manifest = write_candidate(p, "grad_direction", _cfg(), tmp_path / "gd")
    peft_model = PeftModel.from_pretrained(_base(tiny_base), str(path)).eval()
    for m in p.modules:
        sp = p.spectra[m.name]
        sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
        want = m.scaling * (sp.U @ torch.diag(sig) @ sp.V.T)
        torch.testing.assert_close(_delta(peft_model, m.name), want, atol=1e-5, rtol=1e-4)
        assert peft_model.get_submodule("base_model.model." + m.name).scaling["default"] == pytest.approx(m.scaling)


def test_rank_above_the_layer_width_edits_and_loads_in_peft(tiny_base, tmp_path):
    """r = 40 on 32-wide projections (PEFT allows it): edited, written at r = 40 and loaded by PEFT."""
    adapter = tiny.save_adapter(tiny_base, tmp_path / "a", r=40, alpha=80)
    model = _base(tiny_base)
    p = prepare(model, tiny.make_tokenizer(), adapter, _examples(), _cfg())
    for policy in ("grad_direction", "smooth_abs"):
        path, manifest = write_candidate(p, policy, _cfg(), tmp_path / policy)
        peft_model = PeftModel.from_pretrained(_base(tiny_base), str(path)).eval()
        for m in p.modules:
            sp = p.spectra[m.name]
            assert sp.r == 32 < m.r == 40
            layer = peft_model.get_submodule("base_model.model." + m.name)
            assert layer.lora_A["default"].weight.shape[0] == 40
            sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
            want = m.scaling * (sp.U @ torch.diag(sig) @ sp.V.T)
            torch.testing.assert_close(_delta(peft_model, m.name), want, atol=1e-5, rtol=1e-4)


def test_layer_range_and_targets(tiny_base, tiny_adapter):
    model = _base(tiny_base)
    p = prepare(model, tiny.make_tokenizer(), tiny_adapter, _examples(2),
                _cfg(target_modules="q_proj,v_proj", layer_min=1))
    assert [m.name for m in p.modules] == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


def test_cli_edit_writes_one_adapter_per_policy(tiny_base, tiny_adapter, calib_file, tmp_path, capsys):
    from spectral_surgery.flows.cli import main

    out = tmp_path / "out"
    rc = main(["edit", "--base", str(tiny_base), "--adapter", str(tiny_adapter), "--calib", str(calib_file),
               "--policy", "abs_select", "--policy", "smooth_abs", "--out", str(out), "--n-samples", "4", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in summary["policies"]] == ["abs_select", "smooth_abs"]
    for r in summary["policies"]:
        assert r["modules_edited"] == 4 and r["scalars_edited"] == 16 and r["mean_abs_rel_change"] > 0
        PeftModel.from_pretrained(_base(tiny_base), str(out / r["policy"]))


def test_cli_edit_reports_bad_adapter(tiny_base, calib_file, tmp_path, capsys):
    from spectral_surgery.flows.cli import main

    (tmp_path / "bad").mkdir()
    rc = main(["edit", "--base", str(tiny_base), "--adapter", str(tmp_path / "bad"), "--calib", str(calib_file),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "adapter_config.json" in capsys.readouterr().err


# ---- the control ladder through the same write path ------------------------------------------------------


def _logits(tiny_base, adapter_dir) -> torch.Tensor:
    """Logits of the tiny model (with the adapter at ``adapter_dir``, or bare if None) on a calibration batch."""
    model = _base(tiny_base)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    batch = build_batch(tiny.make_tokenizer(), _examples(4))
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("policy", ["zero_rebuild", "zero_rebuild_one_sided"])
def test_zero_rebuild_reproduces_the_adapter(prepared, tiny_base, tiny_adapter, policy, tmp_path):
    p, _ = prepared
    path, manifest = write_candidate(p, policy, _cfg(), tmp_path / policy)
    assert manifest["role"] == "canary" and manifest["is_control"] and not manifest["promotable"]
    assert manifest["rebuild"] == ("one_sided" if policy.endswith("one_sided") else "balanced")
    assert manifest["summary"]["mean_abs_rel_change"] == 0.0 and "gamma" not in manifest
    edited, src = load_adapter(path), load_adapter(tiny_adapter)
    for m in p.modules:
        a, b = edited.tensors[m.key_A], edited.tensors[m.key_B]
        sig = p.spectra[m.name].S
        torch.testing.assert_close(b @ a, src.tensors[m.key_B] @ src.tensors[m.key_A], atol=1e-5, rtol=1e-4)
        assert not torch.equal(a, src.tensors[m.key_A])  # really rebuilt, not copied
        if manifest["rebuild"] == "balanced":  # both factors carry √σ
            torch.testing.assert_close(torch.linalg.vector_norm(b, dim=0), sig.sqrt(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(torch.linalg.vector_norm(a, dim=1), sig.sqrt(), atol=1e-5, rtol=1e-5)
        else:  # A' = Vᵀ (orthonormal rows), B' carries σ
            torch.testing.assert_close(a @ a.T, torch.eye(m.r), atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.linalg.vector_norm(b, dim=0), sig, atol=1e-5, rtol=1e-5)
    # The written adapter loads in PEFT and computes what the original does (fp32: rounding only).
    torch.testing.assert_close(_logits(tiny_base, path), _logits(tiny_base, tiny_adapter), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", tiny.BROKEN_KINDS)
def test_broken_rebuild_changes_the_outputs(prepared, tiny_base, tiny_adapter, kind, tmp_path):
    """What the zero-rebuild canary must catch: a wrong rebuild moves the logits far beyond rounding."""
    p, _ = prepared
    zero, _ = write_candidate(p, "zero_rebuild", _cfg(), tmp_path / "zero")
    broken = tiny.write_broken_rebuild(p, tmp_path / kind, kind=kind)
    want = _logits(tiny_base, tiny_adapter)
    floor = float((_logits(tiny_base, zero) - want).abs().max())
    moved = float((_logits(tiny_base, broken) - want).abs().max())
    assert floor < 1e-4 and moved > 1e-2 and moved > 1000 * floor, (floor, moved)
    assert json.loads((broken / "edit_manifest.json").read_text())["policy"] == f"broken_{kind}"


def test_global_scalar_through_write_candidate(prepared, tiny_base, tiny_adapter, tmp_path):
    p, _ = prepared
    src = load_adapter(tiny_adapter)
    a_shared = None
    for gamma in (1.0, 0.4):
        sel = fixed_gamma(gamma)
        path, manifest = write_candidate(p, "global_scalar", _cfg(), tmp_path / f"g{gamma}", selection=sel)
        assert manifest["role"] == "scalar_control" and not manifest["is_control"] and manifest["promotable"]
        assert manifest["rebuild"] == "one_sided" and manifest["gamma"] == gamma and manifest["gamma_rule"] == "fixed"
        assert json.loads((path / "edit_manifest.json").read_text())["gamma"] == gamma
        edited = load_adapter(path)
        for m in p.modules:
            a, b = edited.tensors[m.key_A], edited.tensors[m.key_B]
            torch.testing.assert_close(b @ a, gamma * (src.tensors[m.key_B] @ src.tensors[m.key_A]), atol=1e-5,
                                       rtol=1e-4)  # fmt: skip
            sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
            torch.testing.assert_close(sig, gamma * p.spectra[m.name].S, atol=1e-6, rtol=1e-6)
        a_now = [edited.tensors[m.key_A] for m in p.modules]
        if a_shared is not None:  # one-sided: every γ shares a byte-identical A' = Vᵀ
            assert all(torch.equal(x, y) for x, y in zip(a_now, a_shared))
        a_shared = a_now
        PeftModel.from_pretrained(_base(tiny_base), str(path))
    with pytest.raises(ValueError, match="needs a γ selection"):
        write_candidate(p, "global_scalar", _cfg(), tmp_path / "none")
    with pytest.raises(ValueError, match="takes no γ"):
        write_candidate(p, "smooth_abs", _cfg(), tmp_path / "s", selection=fixed_gamma(0.5))
