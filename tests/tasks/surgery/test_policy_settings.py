"""Every registered edit declares the settings it reads (``register_policy(reads=...)``), and the declaration is
complete: a setting an edit does not declare leaves its output unchanged, so keying its candidate by the declared
settings alone (tasks/keys.py) never reuses a candidate a changed setting would have changed."""

from __future__ import annotations

import pytest
import torch

from spectral_surgery.tasks.config import CalibConfig, EditConfig, SurgeryConfig
from spectral_surgery.tasks.surgery.calibration import CalibExample
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare
from spectral_surgery.tasks.surgery.policies import get_policy, list_policies
from tests import tiny

GAMMA = 0.7  # given to every edit: global_scalar needs one, the others ignore it
#: A valid other value of every EditConfig field (sup_factor <= amp_factor kept); a new field must be added here.
OTHER = {
    "core_frac": 0.4, "noise_frac": 0.4, "amp_factor": 1.5, "sup_factor": 0.5, "mid_factor": 1.1, "min_core_k": 3,
    "smooth_temperature": 0.7, "smooth_center_q": 0.3, "smooth_align_mid": False, "eta": 0.5,
    "update_mode": "additive", "asymmetric_update": False, "eta_suppress": 1.0, "eta_enhance": 0.5, "pos_power": 2.0,
    "grad_norm": "l2", "preserve_energy": "l2", "sigma_clip_min": 0.05, "z_high": 0.5, "z_low": -1.0, "z_tau": 0.5,
    "z_fallback_std": 1e3, "robust_z_high": 0.5, "robust_z_low": -1.0, "robust_z_tau": 0.5,
    "robust_fallback_sigma": 1e3, "hns": {"fast_steps": 3, "stable_steps": 0},
    "ablation_temperature": {"tau": 0.25}, "rmt_bulk_only": {"edge_margin": 0.3, "tail_count": 2},
    "para": {"epsilon": 0.5}, "para_e95": {"epsilon": 0.5}, "para_e99": {"epsilon": 0.5},
    "sensitivity_hns": {"selection_rule": "importance", "module_budget": 1},
}  # fmt: skip
SURGERY = SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4))


@pytest.fixture(scope="module")
def prepared(tiny_base, tiny_adapter):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    examples = [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(6)]
    return prepare(model, tiny.make_tokenizer(), tiny_adapter, examples, SURGERY)


def _sigmas(prepared, policy: str, edit: EditConfig) -> dict[str, torch.Tensor]:
    return edit_sigmas(prepared, policy, edit, seed=42, gamma=GAMMA,
                       reference_batch_size=SURGERY.calib.reference_batch_size)


def _with(field: str) -> EditConfig:
    return EditConfig.model_validate({**EditConfig().model_dump(), field: OTHER[field]})


def test_every_setting_has_another_value_here():
    assert set(OTHER) == set(EditConfig.model_fields)


@pytest.mark.parametrize("policy", list_policies(None))
def test_a_setting_an_edit_does_not_declare_leaves_its_output_unchanged(prepared, policy):
    default = EditConfig()
    reads = get_policy(policy).settings(default)
    before = _sigmas(prepared, policy, default)
    for field in sorted(set(EditConfig.model_fields) - set(reads)):
        after = _sigmas(prepared, policy, _with(field))
        assert after.keys() == before.keys() and all(torch.equal(after[m], before[m]) for m in before), (
            f"{policy} changed with {field}={OTHER[field]!r} but does not declare it in register_policy(reads=...)")


@pytest.mark.parametrize("policy, field", [
    ("z_score", "z_tau"), ("robust_z", "robust_z_tau"), ("grad_direction", "eta_suppress"), ("abs_select", "core_frac"),
    ("random_index", "amp_factor"), ("hns", "hns"), ("ablation_temperature", "ablation_temperature"),
    ("rmt_bulk_only", "rmt_bulk_only"), ("smooth_abs", "smooth_center_q"), ("sensitivity_hns", "sensitivity_hns"),
])  # fmt: skip
def test_the_other_values_do_change_what_reads_them(prepared, policy, field):
    """The check above has teeth: the values it tries do move the edits that read them."""
    before, after = _sigmas(prepared, policy, EditConfig()), _sigmas(prepared, policy, _with(field))
    assert field in get_policy(policy).settings(EditConfig())
    assert any(not torch.equal(after[m], before[m]) for m in before)
