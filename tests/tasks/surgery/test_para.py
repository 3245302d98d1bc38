"""ε-PARA (EXTENSIONS §3): the worked vectors P1/P2, validation, and the rank-changing write that PEFT loads."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.adapter_io import CONFIG_NAME, AdapterError, load_adapter, write_adapter
from spectral_surgery.tasks.config import EditConfig, SurgeryConfig, TargetConfig
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare_data_free, rank_changes, write_candidate
from spectral_surgery.tasks.surgery.para import para_threshold, rank_preserving_alpha
from spectral_surgery.tasks.surgery.policies import get_policy, list_policies
from tests import tiny

T = torch.tensor


def _masks(sel):
    return [m.int().tolist() for m in sel.masks]


# --------------------------------------------------------------------------- the spec's vectors


def test_p1_repo_vector():
    sel = para_threshold([T([4.0, 2.0, 1.0]), T([3.0, 2.0, 0.5])], None, 0.9)
    assert sel.total_energy == pytest.approx(34.25)
    assert sel.threshold == 2.0
    assert _masks(sel) == [[1, 1, 0], [1, 1, 0]]
    assert sel.retained_ratio == pytest.approx(33 / 34.25) and round(sel.retained_ratio, 6) == 0.963504


@pytest.mark.parametrize("eps", [0.90, 0.95])
def test_p2_at_90_and_95(eps):
    sel = para_threshold([T([5.0, 2.0, 1.0, 0.5]), T([3.0, 2.5, 0.4, 0.1])], [1.0, 1.0], eps)
    assert sel.total_energy == pytest.approx(45.67)
    assert sel.threshold == 2.0 and _masks(sel) == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert round(sel.retained_ratio, 6) == 0.968907


def test_p2_at_99():
    sel = para_threshold([T([5.0, 2.0, 1.0, 0.5]), T([3.0, 2.5, 0.4, 0.1])], None, 0.99)
    assert sel.threshold == 1.0
    assert _masks(sel)[0] == [1, 1, 1, 0]
    assert round(sel.retained_ratio, 6) == 0.990804


def test_p2_mixed_scalings_pool_effective_values():
    sel = para_threshold([T([5.0, 2.0, 1.0, 0.5]), T([3.0, 2.5, 0.4, 0.1])], [2.0, 0.5], 0.9)
    assert sel.threshold == 4.0  # effective units |s|·σ
    assert sel.ranks == (2, 0)  # m2 keeps nothing: excluded
    assert round(sel.retained_ratio, 6) == 0.929078


def test_ties_are_all_kept_and_more_than_epsilon_may_be_retained():
    sel = para_threshold([T([2.0, 2.0]), T([2.0, 1.0])], None, 0.5)
    assert sel.threshold == 2.0 and sel.ranks == (2, 1)
    assert sel.retained_ratio == pytest.approx(12 / 13) and sel.retained_ratio > 0.5


def test_negative_scaling_uses_its_magnitude():
    a = para_threshold([T([4.0, 1.0]), T([3.0, 2.0])], [-1.0, 1.0], 0.9)
    b = para_threshold([T([4.0, 1.0]), T([3.0, 2.0])], [1.0, 1.0], 0.9)
    assert _masks(a) == _masks(b) and a.threshold == b.threshold


def test_epsilon_one_keeps_every_non_zero_component_and_drops_zeros():
    # a total whose cumulative sum rounds below ε·total must not index past the end (the open point in tasks/para)
    sel = para_threshold([T([0.1, 0.2, 0.3, 0.0]), T([1e-3, 0.7])], None, 1.0)
    assert _masks(sel) == [[1, 1, 1, 0], [1, 1]]
    assert sel.retained_ratio == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": 1.5}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"),
    ({"spectra": []}, "at least one"),
    ({"spectra": [T([])]}, "non-empty"),
    ({"spectra": [T([1.0, float("inf")])]}, "finite"),
    ({"spectra": [T([1.0, -0.5])]}, ">= 0"),
    ({"spectra": [T([0.0, 0.0])]}, "zero energy"),
    ({"scalings": [0.0]}, "non-zero"),
    ({"scalings": [float("nan")]}, "non-zero"),
    ({"scalings": [1.0, 1.0]}, "scalings"),
])
def test_invalid_input_raises(kwargs, match):
    args = {"spectra": [T([1.0, 0.5])], "scalings": None, "epsilon": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        para_threshold(args["spectra"], args["scalings"], args["epsilon"])


def test_alpha_keeps_the_scaling():
    assert rank_preserving_alpha(2.0, 3, False) == 6.0  # α/k = 2
    assert rank_preserving_alpha(2.0, 4, True) == 4.0  # α/√k = 2


# --------------------------------------------------------------------------- registration


def test_registered_as_data_free_rank_changing_posthoc_edits():
    assert {"para", "para_e95", "para_e99"} <= set(list_policies(("posthoc",)))
    for name in ("para", "para_e95", "para_e99"):
        spec = get_policy(name)
        assert spec.role == "posthoc" and not spec.needs_data and spec.rebuild == "rank_changing" and spec.promotable
    cfg = EditConfig()
    assert (cfg.para.epsilon, cfg.para_e95.epsilon, cfg.para_e99.epsilon) == (0.90, 0.95, 0.99)
    # default settings stay out of dumps (the candidate keys of older runs do not move); non-defaults go in
    assert "para" not in cfg.model_dump() and EditConfig(para={"epsilon": 0.8}).model_dump()["para"] == {"epsilon": 0.8}
    with pytest.raises(ValueError, match="epsilon"):
        EditConfig(para={"epsilon": 0.0})


# --------------------------------------------------------------------------- on a real PEFT adapter


@pytest.fixture(scope="module")
def mixed(tiny_base, tmp_path_factory):
    """r=4 adapter with a rank_pattern (o_proj r=2) and small init on down_proj of layer 1, so PARA zeroes it."""
    out = tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("para_src"), r=4, alpha=8,
                            targets=["o_proj", "down_proj"], rank_pattern={"o_proj": 2}, alpha_pattern={"o_proj": 8})
    ad = load_adapter(out)
    ts = dict(ad.tensors)
    for m in ad.modules.values():
        if m.name == "model.layers.1.mlp.down_proj":
            ts[m.key_A] = ts[m.key_A] * 1e-3
    from safetensors.torch import save_file

    save_file(ts, str(out / "adapter_model.safetensors"))
    return out


def _cfg(eps=0.9):
    return SurgeryConfig(edit=EditConfig(para={"epsilon": eps}), targets=TargetConfig(target_modules=["all"]))


def test_edit_matches_the_pure_threshold(mixed):
    prepared = prepare_data_free(mixed, _cfg())
    sig = edit_sigmas(prepared, "para", _cfg().edit)
    mods = prepared.modules
    sel = para_threshold([prepared.spectra[m.name].S for m in mods], [m.scaling for m in mods], 0.9)
    for m, keep in zip(mods, sel.masks):
        s0 = prepared.spectra[m.name].S.float()
        torch.testing.assert_close(sig[m.name], torch.where(keep, s0, torch.zeros_like(s0)), atol=0, rtol=0)
    assert sel.ranks[[m.name for m in mods].index("model.layers.1.mlp.down_proj")] == 0


def test_written_adapter_loads_in_peft_with_rank_pattern_and_exclusions(mixed, tiny_base, tmp_path):
    cfg = _cfg()
    prepared = prepare_data_free(mixed, cfg)
    path, manifest = write_candidate(prepared, "para", cfg, tmp_path / "para")
    config = json.loads((path / CONFIG_NAME).read_text())
    pooled = manifest["pooled"]
    assert pooled["epsilon"] == 0.9 and pooled["retained_ratio"] >= 0.9 and 0 < pooled["parameter_ratio"] < 1
    assert pooled["modules_zeroed"] >= 1 and "model.layers.1.mlp.down_proj" in config["exclude_modules"]
    changed = manifest["rank_changes"]
    assert changed["model.layers.1.mlp.down_proj"] == 0
    # our full-path keys come first (PEFT applies the first matching pattern), the source's "o_proj" stays
    assert list(config["rank_pattern"])[-1] == "o_proj" and config["rank_pattern"]["o_proj"] == 2
    for name, k in changed.items():
        if k:
            assert config["rank_pattern"][name] == k
    # our own reader agrees: ranks and scalings as PEFT computes them
    edited = load_adapter(path)
    assert "model.layers.1.mlp.down_proj" not in edited.modules
    for m in prepared.modules:
        if m.name in edited.modules:
            assert edited.modules[m.name].scaling == pytest.approx(m.scaling)
            assert edited.modules[m.name].r == manifest["modules"][m.name]["rank_after"]
    # and PEFT itself: every kept module's ΔW is s·U diag(σ·mask) Vᵀ; the excluded one has no LoRA layer
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(path)).eval()
    for m in prepared.modules:
        layer = model.get_submodule("base_model.model." + m.name)
        sp = prepared.spectra[m.name]
        sig = torch.tensor(manifest["modules"][m.name]["sigma_after"])
        want = m.scaling * sp.U @ torch.diag(sig) @ sp.V.T
        if changed.get(m.name) == 0:
            assert not hasattr(layer, "lora_A")
            continue
        k = manifest["modules"][m.name]["rank_after"]
        assert layer.r["default"] == k and layer.scaling["default"] == pytest.approx(m.scaling)
        delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        torch.testing.assert_close(delta, want, atol=1e-5, rtol=1e-4)
    # the pruned adapter has fewer parameters, in the ratio the manifest reports (pooled modules only)
    before = sum(t.numel() for t in prepared.adapter.tensors.values())
    after = sum(t.numel() for t in edited.tensors.values())
    assert after == pytest.approx(before * pooled["parameter_ratio"])


def test_epsilon_one_changes_no_rank_and_rebuilds_the_same_product(mixed, tmp_path):
    cfg = _cfg(1.0)
    prepared = prepare_data_free(mixed, cfg)
    sig = edit_sigmas(prepared, "para", cfg.edit)
    changes = rank_changes(prepared, sig)
    # rank-deficient components (σ = 0) would be dropped; this random adapter has none
    assert changes.ranks == {} and changes.removed == ()
    path, _ = write_candidate(prepared, "para", cfg, tmp_path / "e1")
    assert json.loads((path / CONFIG_NAME).read_text())["rank_pattern"] == {"o_proj": 2}


def test_rslora_alpha_keeps_the_scaling(tiny_base, tmp_path):
    src = tiny.save_adapter(tiny_base, tmp_path / "rs", r=4, alpha=8, targets=["o_proj", "down_proj"],
                            use_rslora=True)
    cfg = _cfg(0.6)
    prepared = prepare_data_free(src, cfg)
    path, manifest = write_candidate(prepared, "para", cfg, tmp_path / "out")
    edited = load_adapter(path)
    assert manifest["rank_changes"]
    for name, k in manifest["rank_changes"].items():
        if k:
            assert edited.modules[name].scaling == pytest.approx(8 / math.sqrt(4))


def test_regex_exclusions_are_extended(mixed, tmp_path):
    src = load_adapter(mixed)
    cfg_json = {**src.config, "exclude_modules": r".*\.q_proj"}
    (tmp_path / "src").mkdir()
    for p in mixed.iterdir():
        (tmp_path / "src" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "src" / CONFIG_NAME).write_text(json.dumps(cfg_json))
    prepared = prepare_data_free(tmp_path / "src", _cfg())
    changes = rank_changes(prepared, edit_sigmas(prepared, "para", _cfg().edit))
    import re

    pattern = changes.config["exclude_modules"]
    assert re.fullmatch(pattern, "model.layers.0.self_attn.q_proj")
    assert re.fullmatch(pattern, "model.layers.1.mlp.down_proj")
    assert not re.fullmatch(pattern, "model.layers.0.mlp.down_proj")


def test_write_adapter_checks_reshaped_tensors_against_the_new_config(mixed, tmp_path):
    src = load_adapter(mixed)
    m = src.modules["model.layers.0.mlp.down_proj"]
    bad = {m.key_A: torch.zeros(3, src.tensors[m.key_A].shape[1]),
           m.key_B: torch.zeros(src.tensors[m.key_B].shape[0], 3)}
    with pytest.raises(AdapterError, match="expected"):  # config still says r=4
        write_adapter(src, bad, tmp_path / "x", {}, config=src.config)
    with pytest.raises(AdapterError, match="new config"):
        write_adapter(src, {}, tmp_path / "y", {}, removed=[m.key_A])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("arms_pass, tol", [("arm_by_arm", 0.0), ("one_pass", 1e-4)])
def test_evaluator_scores_a_pruned_adapter_beside_full_rank_ones_as_it_scores_it_alone(tiny_base, tiny_adapter,
                                                                                       tmp_path, arms_pass, tol):
    """A PARA candidate (other ranks, excluded modules) gets LoRA layers of its own in the shared PEFT model; the
    modules it excludes contribute nothing while it is active, and the full-rank adapter after it gets its own
    numbers back (bit for bit arm by arm; one pass, the arms share batches: equal to float summation order)."""
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator

    cfg = _cfg(0.5)
    prepared = prepare_data_free(tiny_adapter, cfg)
    path, manifest = write_candidate(prepared, "para", cfg, tmp_path / "para")
    assert manifest["pooled"]["modules_zeroed"] >= 1 and any(k for k in manifest["rank_changes"].values())
    ev = get_evaluator("lm_eval", batch_size=8, device="cpu", arms_pass=arms_pass)
    subjects = {"baseline": tiny_adapter, "para": path, "baseline-again": tiny_adapter}
    res = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=6, out_dir=tmp_path / "shared")
    alone = get_evaluator("lm_eval", batch_size=8, device="cpu", arms_pass="arm_by_arm").evaluate(
        str(tiny_base), {"para": path}, "ss_mc", limit=6, out_dir=tmp_path / "alone")

    def lls(r):
        return [c[0][0] for s in (json.loads(x) for x in open(r.samples_path)) for c in s["resps"]]

    assert lls(res["para"]) == pytest.approx(lls(alone["para"]), abs=max(tol, 1e-6))
    assert lls(res["baseline"]) == pytest.approx(lls(res["baseline-again"]), abs=tol)
    assert lls(res["para"]) != pytest.approx(lls(res["baseline"]), abs=1e-6)
