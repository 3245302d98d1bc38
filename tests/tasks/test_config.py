"""The engine's pydantic config (tasks/config.py): paper defaults, edge validation with the fix, frozen values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from spectral_surgery.tasks.config import (
    DEFAULT_GAMMA_GRID,
    DEFAULT_TARGETS,
    PROTOCOL1_GRID,
    CalibConfig,
    EditConfig,
    GlobalScalarConfig,
    SurgeryConfig,
    TargetConfig,
    default_data_dir,
)

ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_defaults_are_the_paper_drivers():
    s = SurgeryConfig()
    assert s.policies == ("abs_select", "smooth_abs", "grad_direction") and s.random_control_seeds == (42, 43, 44)
    assert (s.edit.eta_suppress, s.edit.eta_enhance, s.edit.asymmetric_update) == (2.0, 0.2, True)
    assert (s.edit.grad_norm, s.edit.preserve_energy, s.edit.update_mode) == ("mean_abs", "l1", "multiplicative")
    assert s.targets.target_modules == DEFAULT_TARGETS == ("o_proj", "down_proj")
    assert (s.calib.n_samples, s.calib.reference_batch_size, s.calib.seed) == (128, 2, 42)
    assert s.global_scalar.grid == DEFAULT_GAMMA_GRID and DEFAULT_GAMMA_GRID[:len(PROTOCOL1_GRID)] == PROTOCOL1_GRID


def test_every_field_has_a_description():
    for model in (EditConfig, TargetConfig, CalibConfig, GlobalScalarConfig):
        missing = [n for n, f in model.model_fields.items() if not f.description]
        assert missing == [], (model.__name__, missing)


def test_unknown_keys_are_refused_and_configs_are_frozen():
    with pytest.raises(ValidationError, match="etaa"):
        EditConfig(etaa=0.1)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        SurgeryConfig.model_validate({"calib": {"n_sample": 4}})
    cfg = CalibConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.n_samples = 3
    assert SurgeryConfig() == SurgeryConfig() and hash(SurgeryConfig()) == hash(SurgeryConfig())


def test_cross_field_rules_say_the_fix():
    with pytest.raises(ValidationError, match="swap them or lower sup_factor"):
        EditConfig(sup_factor=1.5, amp_factor=1.25)
    EditConfig(sup_factor=1.25, amp_factor=1.25)  # equal is allowed
    with pytest.raises(ValidationError, match=r"layer_min \(5\) > layer_max \(2\)"):
        TargetConfig(layer_min=5, layer_max=2)
    with pytest.raises(ValidationError, match="list each γ once"):
        GlobalScalarConfig(grid=(1.0, 0.5, 1.0))
    with pytest.raises(ValidationError, match="finite values >= 0"):
        GlobalScalarConfig(grid=(1.0, float("inf")))
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        CalibConfig(n_samples=0)


def test_target_modules_accept_a_comma_list_and_all():
    assert TargetConfig(target_modules="o_proj, down_proj,").target_modules == ("o_proj", "down_proj")
    assert TargetConfig(target_modules="all").target_modules == ALL_PROJ
    assert TargetConfig(target_modules=["all_modules"]).target_modules == ALL_PROJ
    with pytest.raises(ValidationError):
        TargetConfig(target_modules=[])


@pytest.mark.parametrize("targets, module, layer, selected", [
    ({}, "model.layers.3.self_attn.o_proj", 3, True),
    ({}, "model.layers.3.self_attn.q_proj", 3, False),
    ({}, "lm_head.o_proj", None, True),  # no layer index: selected only without a layer range
    ({"layer_min": 1}, "lm_head.o_proj", None, False),
    ({"layer_min": 1, "layer_max": 2}, "o_proj", 0, False),
    ({"layer_min": 1, "layer_max": 2}, "o_proj", 1, True),
    ({"layer_min": 1, "layer_max": 2}, "o_proj", 2, True),  # inclusive
    ({"layer_min": 1, "layer_max": 2}, "o_proj", 3, False),
])  # fmt: skip
def test_target_selection(targets, module, layer, selected):
    assert TargetConfig(**targets).selects(module, layer) is selected


def test_default_data_dir_follows_spectral_surgery_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTRAL_SURGERY_HOME", str(tmp_path / "h"))
    assert default_data_dir() == tmp_path / "h"
    monkeypatch.setenv("SPECTRAL_SURGERY_HOME", "~/x")
    assert default_data_dir() == Path.home() / "x"
    monkeypatch.delenv("SPECTRAL_SURGERY_HOME")
    assert default_data_dir() == Path.home() / ".spectral-surgery"
