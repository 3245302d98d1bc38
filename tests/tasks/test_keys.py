"""Per-candidate keys (tasks/keys.py): a candidate is keyed by its own method's settings, nothing else's."""

from __future__ import annotations

import pytest

from spectral_surgery.tasks.config import EditConfig, GlobalScalarConfig, SurgeryConfig
from spectral_surgery.tasks.keys import BARE_BASE, candidate_key, candidates_key, policy_settings
from spectral_surgery.tasks.surgery.policies import get_policy, list_policies

PREPARED = "p" * 64
HOLDOUT = "h" * 64
SEED = 42
EVERY = list_policies(None)  # every registered edit: the paper's, the ladder's and the post-hoc ones


def _keys(surgery: SurgeryConfig, holdout: str | None = HOLDOUT) -> dict[str, str]:
    return {p: candidate_key(PREPARED, surgery, p, SEED, holdout_sha256=holdout) for p in EVERY}


def _edit(**changes) -> SurgeryConfig:
    return SurgeryConfig(edit=EditConfig.model_validate({**EditConfig().model_dump(), **changes}))


DEFAULT = _keys(SurgeryConfig())


@pytest.mark.parametrize("changes, readers", [
    ({"z_tau": 0.5}, {"z_score"}),
    ({"robust_z_tau": 0.3}, {"robust_z"}),
    ({"eta_suppress": 1.0}, {"grad_direction"}),
    ({"smooth_center_q": 0.4}, {"smooth_abs"}),
    ({"smooth_temperature": 0.5}, {"smooth_abs", "double_smooth"}),
    # the hard-gate counts: abs_select, its matched random control and rmt_bulk_only (abs_select on the bulk)
    ({"core_frac": 0.3}, {"abs_select", "random_index", "smooth_abs", "double_smooth", "rmt_bulk_only"}),
    ({"hns": {"fast_steps": 4, "stable_steps": 1}}, {"hns"}),  # not sensitivity_hns: it has its own hns settings
    ({"sensitivity_hns": {"hns": {"fast_steps": 4, "stable_steps": 1}}}, {"sensitivity_hns"}),
    ({"ablation_temperature": {"tau": 0.25}}, {"ablation_temperature"}),
    ({"para": {"epsilon": 0.8}}, {"para"}),
    ({"para_e99": {"epsilon": 0.98}}, {"para_e99"}),
    ({"rmt_bulk_only": {"edge_margin": 0.2}}, {"rmt_bulk_only"}),
])  # fmt: skip
def test_a_setting_changes_exactly_the_candidate_keys_of_the_policies_that_read_it(changes, readers):
    after = _keys(_edit(**changes))
    assert {p for p in EVERY if after[p] != DEFAULT[p]} == readers


def test_the_engine_settings_key_every_policy_they_apply_to():
    """grad_norm normalises the sensitivities (policies that use them); clamp and energy run after the policies
    that are post-processed; the ladder's and the post-hoc edits' targets are exact (neither applies)."""
    clip = _keys(_edit(sigma_clip_min=0.1))
    changed = {p for p in EVERY if clip[p] != DEFAULT[p]}
    assert changed == {p for p in EVERY if get_policy(p).postprocess} | {"rmt_bulk_only"}
    assert {"abs_select", "random_index", "z_score"} <= changed and not {"hns", "zero_rebuild",
                                                                         "global_scalar"} & changed


def test_rmt_bulk_only_is_keyed_by_its_base_policy_and_what_that_reads():
    z = _edit(rmt_bulk_only={"base_policy": "z_score"})
    assert candidate_key(PREPARED, z, "rmt_bulk_only", SEED) != DEFAULT["rmt_bulk_only"]
    assert "z_tau" in policy_settings("rmt_bulk_only", z.edit)
    assert "z_tau" not in policy_settings("rmt_bulk_only", EditConfig())  # abs_select, the default, reads no z
    tau = _edit(rmt_bulk_only={"base_policy": "z_score"}, z_tau=0.5)
    assert candidate_key(PREPARED, tau, "rmt_bulk_only", SEED) != candidate_key(PREPARED, z, "rmt_bulk_only", SEED)


def test_the_global_scalar_is_keyed_by_its_gamma_search_and_no_edit_setting():
    grid = SurgeryConfig(global_scalar=GlobalScalarConfig(grid=(1.0, 0.5)))
    for surgery, holdout in ((grid, HOLDOUT), (SurgeryConfig(), "i" * 64),
                             (SurgeryConfig(global_scalar=GlobalScalarConfig(holdout=8)), HOLDOUT)):
        after = _keys(surgery, holdout)
        assert {p for p in EVERY if after[p] != DEFAULT[p]} == {"global_scalar"}
    assert candidate_key(PREPARED, _edit(z_tau=0.5, core_frac=0.3, hns={"fast_steps": 1}), "global_scalar", SEED,
                         holdout_sha256=HOLDOUT) == DEFAULT["global_scalar"]


def test_the_random_control_is_keyed_by_its_seed_and_the_counts_it_draws():
    s43 = candidate_key(PREPARED, SurgeryConfig(), "random_index", 43)
    assert s43 != DEFAULT["random_index"]
    assert set(policy_settings("random_index", EditConfig())) == {
        "core_frac", "noise_frac", "min_core_k", "amp_factor", "sup_factor", "mid_factor", "sigma_clip_min",
        "preserve_energy"}  # sensitivities ignored: grad_norm is not read


def test_keys_follow_the_prepared_state_the_alias_and_the_bare_base():
    assert candidate_key("q" * 64, SurgeryConfig(), "hns", SEED) != DEFAULT["hns"]
    assert candidate_key(PREPARED, SurgeryConfig(), "gd", SEED) == DEFAULT["grad_direction"]  # by its name
    bare = candidate_key(PREPARED, _edit(z_tau=0.5), BARE_BASE, 0)
    assert bare == candidate_key(PREPARED, SurgeryConfig(), BARE_BASE, 0) and bare not in DEFAULT.values()
    assert len(set(DEFAULT.values())) == len(EVERY)  # one key per candidate


def test_the_set_key_follows_its_members():
    some = {"abs_select": DEFAULT["abs_select"], "z_score": DEFAULT["z_score"]}
    assert candidates_key(some) == candidates_key(dict(reversed(list(some.items()))))
    assert candidates_key(some) != candidates_key({**some, "z_score": _keys(_edit(z_tau=0.5))["z_score"]})


def test_reads_must_name_editconfig_fields():
    from spectral_surgery.tasks.surgery.policy_registry import register_policy

    with pytest.raises(ValueError, match="z_tauu.*EditConfig does not have"):
        register_policy("never_registered", reads=("z_tauu",))
