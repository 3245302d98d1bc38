"""The stored decomposition + sensitivities: a reload edits exactly like the fresh pass, and bad files are refused."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.surgery.calibration import CalibExample
from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig, TargetConfig
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare, write_candidate
from spectral_surgery.tasks.surgery.prep_store import load_prepared, save_prepared
from tests import tiny


@pytest.fixture(scope="module")
def fresh(tiny_base, tiny_adapter):
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4))
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    examples = [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(6)]
    return prepare(model, tiny.make_tokenizer(), tiny_adapter, examples, cfg), cfg


def test_reloaded_prepared_gives_identical_edits_and_adapters(fresh, tiny_adapter, tmp_path):
    prepared, cfg = fresh
    path = save_prepared(prepared, tmp_path / "p" / "prepared.safetensors")
    loaded = load_prepared(path, tiny_adapter, cfg.targets)
    assert loaded is not None and loaded.calib_sha256 == prepared.calib_sha256
    assert loaded.n_examples == prepared.n_examples and [m.name for m in loaded.modules] == [
        m.name for m in prepared.modules
    ]
    for name, s in prepared.sensitivities.items():
        assert torch.equal(loaded.sensitivities[name].per_example, s.per_example)
        assert torch.equal(loaded.sensitivities[name].signed, s.signed)
        assert loaded.sensitivities[name].aggregation == s.aggregation
    for policy in ("abs_select", "smooth_abs", "grad_direction", "random_index"):
        a, b = edit_sigmas(prepared, policy, cfg.edit), edit_sigmas(loaded, policy, cfg.edit)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    p1, _ = write_candidate(prepared, "smooth_abs", cfg, tmp_path / "a")
    p2, _ = write_candidate(loaded, "smooth_abs", cfg, tmp_path / "b")
    assert (p1 / "adapter_model.safetensors").read_bytes() == (p2 / "adapter_model.safetensors").read_bytes()
    assert not [f for f in path.parent.iterdir() if f.name.startswith(".prepared-")]  # no temporary left
    # reusing costs nothing now, but what the stages cost when computed is kept (the fleet report's edit costs)
    assert loaded.timings["calibrate"] == 0.0 and loaded.timings["loaded"] == 1.0
    assert loaded.timings["stored_decompose"] == pytest.approx(prepared.timings["decompose"])
    assert loaded.timings["stored_calibrate"] == pytest.approx(prepared.timings["calibrate"])
    assert prepared.timings["calibrate"] > 0


def test_stage_seconds_count_calibration_only_for_edits_that_need_data(fresh, tiny_adapter, tmp_path):
    from spectral_surgery.tasks.surgery.write_plan import stage_seconds

    prepared, cfg = fresh
    loaded = load_prepared(save_prepared(prepared, tmp_path / "prepared.safetensors"), tiny_adapter, cfg.targets)
    for p in (prepared, loaded):
        assert stage_seconds(p, True) == pytest.approx({"decompose": prepared.timings["decompose"],
                                                        "calibrate": prepared.timings["calibrate"]})
        assert stage_seconds(p, False) == pytest.approx({"decompose": prepared.timings["decompose"]})


def test_unusable_files_are_refused_not_raised(fresh, tiny_base, tiny_adapter, tmp_path):
    prepared, cfg = fresh
    assert load_prepared(tmp_path / "missing.safetensors", tiny_adapter, cfg.targets) is None
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    assert load_prepared(torn, tiny_adapter, cfg.targets) is None
    path = save_prepared(prepared, tmp_path / "ok.safetensors")
    # another module selection, or another adapter's content: computed for something else
    assert load_prepared(path, tiny_adapter, TargetConfig(target_modules=("o_proj",))) is None
    other = tiny.save_adapter(tiny_base, tmp_path / "other", seed=7)
    assert load_prepared(path, other, cfg.targets) is None
