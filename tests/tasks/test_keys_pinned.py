"""Result keys pinned to their values before an edit's settings moved beside its code (issue 26 §2).

The values were computed by the code of commit eb154ac, when every post-hoc method's settings were a hand-written
EditConfig field; they must not change while the settings move to ``register_policy(settings=...)`` (or the
RunConfig is regrouped): a changed key re-does, and never reuses, every stored candidate, evaluation and decision.
Bump them only with a change that means to rewrite results (``tasks.keys.ENGINE_VERSION``), saying so.
"""

from __future__ import annotations

import pytest

from spectral_surgery.tasks.config import EditConfig, SurgeryConfig
from spectral_surgery.tasks.keys import candidate_key, sha
from spectral_surgery.tasks.run_config import RunConfig

PREPARED, HOLDOUT, SEED = "p" * 64, "h" * 64, 42

#: Every candidate key of a default-settings run (ENGINE_VERSION "1").
DEFAULT_KEYS = {
    "ablation_scalar_shrink": "84d35844c7884348a70902a9d42ae66abc778fc6f50627485ea0cba5361b8aa6",
    "ablation_tail_lift": "76898923fc2c5df5d3030687632375ff8b3960a84b4dae8593e73df593cad725",
    "ablation_temperature": "3d5c20f06db14895d76299860470b98f7bcc98b2602bcabaa81b4593dd878764",
    "ablation_top_shrink": "b343f18d6a43410a3b895fc52108f3a6dd54e077039f61b7e4c74806a092ffea",
    "abs_select": "e2326ca22501060464bcda3452a3dd41756e93f5bdfe38be7f1f433e4b500ab4",
    "dg_hard": "49129b6091ba987270bbfae1892b3f9457a0dbb90a297b3abe34a36ae88fa94c",
    "double_smooth": "33bd5c90cb1aad828442a064906c41e7263e83426f078dd08340265e0e6c801a",
    "flat_fro": "0e58f7c58be1a066216557ba2cc66ded3d70b643883b680d4e2373d493a9a419",
    "flat_nuclear": "4b40f38974e22350cee9ee0f7688101924160a0c1f67f9fe2df342a641be0005",
    "global_scalar": "dfb517311705fba02f6c90c8c2b03d8b62d41d78203c21cfd7243b305f59db80",
    "grad_direction": "ff7cee6d175e17d71d2b4eee5f80f00633a09a8576fa0c4cfb51a18994f3f601",
    "hns": "9045a30e2ccb206650756007e5c1513c1d79958670140975d3be5f4a1bbbda86",
    "para": "ce6edb5a7591398410a9ff2ad1304c8dffc23b57834758c1ef4ad913ef0d8022",
    "para_e95": "7f48fabfc2e94d04e2f1cf0d1f73117e805c4aba87b703839234d4c0785e114e",
    "para_e99": "d955c8f888d27dcb4baefb142483f3c4bade02f4092c60836758830cb5b32daa",
    "random_index": "9ec48ed8ab5307ffe17338184cb5e09b2fac1507f9d317ab9b9ea0599a521c99",
    "rmt_bulk_only": "d704c6eb015477d7b698ca32fde28a91c71f30dffe64df9b1d4576afabd04e08",
    "robust_z": "65a5e8ed2b02f28f506849e067d79bf27678bff90bb98258a3cff59c81379c86",
    "sensitivity_hns": "f6c1bffa5867f90da8023232e48387df7432b0d9aee55398ca93d31fa1a4dbcc",
    "smooth_abs": "c5a421dc19f15c1eb9f98ae5aac4635b200465349b51959c0370b81cce96502c",
    "z_score": "e51870b877213bf51d6131313be826698051ad9df2aee8db537e2876bc285d49",
    "zero_rebuild": "217a0e2247c7c2dddf0ba70899aa5d92902bfc24c426caec5bc4bbe15366301d",
    "zero_rebuild_one_sided": "ca8383023009ceee5830b3718af45134f6ab14f00371697ec4ddf64ea3d3d8a7",
}

#: Edit settings the pinned results below were computed under (sections of the edits with their own settings, and
#: two fields of the paper's policies).
VARIANTS = {
    "default": {},
    "hns41": {"hns": {"fast_steps": 4, "stable_steps": 1}},
    "temp": {"ablation_temperature": {"tau": 0.25}},
    "rmt_z": {"rmt_bulk_only": {"base_policy": "z_score", "edge_margin": 0.2}},
    "para": {"para": {"epsilon": 0.8}},
    "para_e95": {"para_e95": {"epsilon": 0.9}},
    "para_e99": {"para_e99": {"epsilon": 0.98}},
    "shns": {"sensitivity_hns": {"hns": {"fast_steps": 4, "stable_steps": 1}, "module_budget": 3}},
    "core": {"core_frac": 0.3, "z_tau": 0.5},
}

#: RunConfig.result_hash (benchmark_profile offline) under each variant.
RESULT_HASHES = {
    "core": "efdaef091ccbfee8c92072879015b95e9fd2369bbc5efd1ac9947bbf3ea41742",
    "default": "63c24bee717ea32785a8162f20f1ba8c85893a8f6c87eb0ed767fd2a818a41ab",
    "hns41": "dee9fbd4bdcc66b26a2f614b8cf878501d2aae59fda878c47ee17021bbfdffdd",
    "para": "fd264474ff64bc3737ca3f5a063f364f8b29cd6af9e21a8ca305a563264c5a6e",
    "para_e95": "4036bf8518420f987eb3270c9ec8beb29e319abe9e47df65478f4c6a37100818",
    "para_e99": "c98909a7098534a3650ff74b3dbaa919ee4514aa2705b430864a068107220215",
    "rmt_z": "d0b29144f279631b6e4d2406518f88743032c36412e591aa73aa4ab1bf4184fe",
    "shns": "64d0da1d06abf543cea49ca498fc68dcbb98784cd77cc2185b89cf2214a65034",
    "temp": "54c5323ac548462f35b13e7be26d903742aac5420fd5248eb278037a5b070a06",
}

#: sha of {variant: {policy: candidate key}} over VARIANTS and the policies of DEFAULT_KEYS.
VARIANT_KEYS_SHA = "062044baf18154f6e963247e3cdc1d23d35151d545f102e42ee8ba3e3cc5a690"


def _keys(edit: dict) -> dict[str, str]:
    surgery = SurgeryConfig(edit=EditConfig.model_validate(edit))
    return {p: candidate_key(PREPARED, surgery, p, SEED, holdout_sha256=HOLDOUT) for p in DEFAULT_KEYS}


def test_a_default_settings_run_keys_every_candidate_as_before():
    assert _keys({}) == DEFAULT_KEYS


def test_the_edits_settings_key_their_candidates_as_before():
    assert sha({v: _keys(edit) for v, edit in VARIANTS.items()}) == VARIANT_KEYS_SHA


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_result_hash_is_as_before(variant, tmp_path):
    config = RunConfig(data_dir=tmp_path, benchmark_profile="offline",
                       surgery=SurgeryConfig(edit=EditConfig.model_validate(VARIANTS[variant])))
    assert config.result_hash() == RESULT_HASHES[variant]
