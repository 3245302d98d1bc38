"""An edit with settings of its own is one file and one registration line (issue 26 §2): the settings model and the
edit below, registered in the fixture (into a private copy of the registry, so no other test sees it), with no change
to tasks/config.py. A run config then takes its section ``edit: {toy_head_keep: {...}}``, validates it against the
declared model (errors name the file, the field and the fix), keys its candidates (only theirs) by it, and
``run --list-policies`` lists it with its defaults."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import Field, ValidationError

import spectral_surgery.tasks.config as config_module
import spectral_surgery.tasks.surgery.policy_registry as policy_registry
from spectral_surgery.registry.declaration import one_line
from spectral_surgery.tasks.config import EditConfig, SettingsModel
from spectral_surgery.tasks.keys import candidate_key, policy_settings
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.surgery.edit import prepare_data_free, write_candidate
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, preserve_energy, register_policy
from tests.flows.cli_support import assert_error, cli

NAME = "toy_head_keep"
PREPARED = "p" * 64


# ---- the one file of a new edit: its settings model beside its code ------------------------------------------------
class HeadKeepConfig(SettingsModel):
    """Settings of the toy edit ``toy_head_keep``."""

    keep: int = Field(2, ge=1, description="Leading components kept; the others become 0.")


def toy_head_keep(inp: PolicyInputs, cfg: EditConfig) -> torch.Tensor:
    """Toy post-hoc edit: the first ``cfg.toy_head_keep.keep`` components kept, the norm ``cfg.preserve_energy``
    names restored."""
    t = inp.sigma0.clone()
    t[cfg.toy_head_keep.keep:] = 0.0
    return preserve_energy(inp.sigma0, t, cfg.preserve_energy)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(policy_registry, "POLICIES", policy_registry.POLICIES.copy())
    monkeypatch.setattr(config_module, "EDIT_SECTIONS", dict(config_module.EDIT_SECTIONS))  # what edit.<name> is
    # the one line that adds the edit and its settings:
    register_policy(NAME, role="posthoc", uses_sensitivity=False, needs_data=False, postprocess=False,
                    reads=("preserve_energy",), settings=HeadKeepConfig)(toy_head_keep)  # fmt: skip
    return NAME


def _run_config(edit: dict) -> RunConfig:
    return RunConfig.model_validate({"surgery": {"policies": [NAME], "edit": edit}})


def test_tasks_config_has_no_field_for_it(registered):
    assert NAME not in EditConfig.model_fields and NAME in EditConfig.setting_names()
    assert EditConfig.section_model(NAME) is HeadKeepConfig


def test_its_section_is_validated_against_the_declared_model(registered):
    config = _run_config({NAME: {"keep": 3}})
    assert config.surgery.edit.toy_head_keep == HeadKeepConfig(keep=3)
    assert EditConfig().toy_head_keep == HeadKeepConfig()  # absent: the declared defaults
    assert EditConfig.model_validate({NAME: {}}) == EditConfig()  # at its defaults it is not kept (keys as before)
    for bad, fragments in (({NAME: {"keep": 0}}, ("surgery.edit.toy_head_keep.keep", "greater than or equal to 1")),
                           ({NAME: {"kept": 3}}, ("surgery.edit.toy_head_keep.kept", "Did you mean 'keep'?")),
                           ({"toy_head_kep": {}}, ("surgery.edit.toy_head_kep", f"Did you mean {NAME!r}?"))):
        with pytest.raises(ValidationError) as e:
            _run_config(bad)
        line = one_line(e.value, RunConfig, "")
        assert all(f in line for f in fragments), line


def test_a_bad_section_in_a_run_config_file_is_one_line_naming_the_file_the_field_and_the_fix(registered, tmp_path):
    config = tmp_path / "night.yaml"
    config.write_text(f"surgery:\n  policies: [{NAME}]\n  edit:\n    {NAME}:\n      keep: 0\n")
    r = cli("run", "--config", config, "--evaluator", "fake", "--data-dir", tmp_path / "none")
    assert_error(r, str(config), f"surgery.edit.{NAME}.keep", "greater than or equal to 1")
    config.write_text("surgery:\n  edit:\n    toy_head_kep: {keep: 3}\n")
    r = cli("run", "--config", config, "--evaluator", "fake", "--data-dir", tmp_path / "none")
    assert_error(r, str(config), "surgery.edit.toy_head_kep", f"Did you mean {NAME!r}?")


def test_its_settings_key_its_candidates_only(registered):
    from spectral_surgery.tasks.surgery.policies import list_policies

    every = list_policies(None)
    default = {p: candidate_key(PREPARED, _run_config({}).surgery, p, 42) for p in every}
    keep3 = {p: candidate_key(PREPARED, _run_config({NAME: {"keep": 3}}).surgery, p, 42) for p in every}
    assert {p for p in every if keep3[p] != default[p]} == {NAME}
    assert policy_settings(NAME, EditConfig(toy_head_keep={"keep": 3})) == {
        "preserve_energy": "l1", NAME: {"keep": 3}}
    assert _run_config({NAME: {"keep": 3}}).result_hash() != _run_config({}).result_hash()


def test_the_engine_edits_with_the_settings_given(registered, tiny_adapter, tmp_path):
    surgery = _run_config({NAME: {"keep": 1}}).surgery
    prepared = prepare_data_free(tiny_adapter, surgery)
    path, manifest = write_candidate(prepared, NAME, surgery, tmp_path / "toy", seed=42)
    assert manifest["settings"] == {"keep": 1} and manifest["parameters"][NAME] == {"keep": 1}
    for name, m in json.loads((path / "edit_manifest.json").read_text())["modules"].items():
        before, after = torch.tensor(m["sigma_before"]), torch.tensor(m["sigma_after"])
        assert (after[1:] == 0).all() and after[0].item() == pytest.approx(before.sum().item(), rel=1e-5), name


def test_run_list_policies_lists_it_with_its_settings(registered):
    rows = {r["name"]: r for r in cli("--json", "run", "--list-policies").json()}
    assert rows[NAME]["settings"] == {"preserve_energy": "l1", NAME: {"keep": 2}}
    assert rows[NAME]["role"] == "posthoc" and rows[NAME]["needs_data"] is False
    assert rows[NAME]["description"].startswith("Toy post-hoc edit")
    text = cli("run", "--list-policies")
    assert text.code == 0 and f"{NAME}.*" in text.out


def test_the_run_config_schema_shows_its_section(registered):
    """The JSON schema (Prefect's form of the flow's parameters) has the section, with the declared model."""
    edit = RunConfig.model_json_schema()["$defs"]["EditConfig"]
    section = edit["properties"][NAME]
    assert section["default"] == {"keep": 2} and section["properties"]["keep"]["minimum"] == 1
    assert {"hns", "para_e95", "sensitivity_hns"} <= set(edit["properties"]) and edit["additionalProperties"] is False


def test_other_tests_do_not_see_it():
    assert NAME not in EditConfig.setting_names()
    with pytest.raises(ValidationError, match="unknown key"):
        EditConfig.model_validate({NAME: {"keep": 3}})


def test_every_declared_settings_model_is_described_and_valid_at_its_defaults():
    """The registered edits' own settings (the sections a run config accepts), as EditConfig's fields are."""
    from spectral_surgery.tasks.config import method_settings
    from spectral_surgery.tasks.surgery.policies import get_policy

    sections = method_settings()
    assert list(sections) == ["hns", "ablation_temperature", "rmt_bulk_only", "para", "para_e95", "para_e99",
                              "sensitivity_hns"]  # fmt: skip
    for name, default in sections.items():
        model = get_policy(name).settings_model
        assert isinstance(default, model) and model.model_validate(default.model_dump()) == default, name
        missing = [f for f, info in model.model_fields.items() if not info.description]
        assert missing == [], (name, missing)
    assert (sections["para"].epsilon, sections["para_e95"].epsilon, sections["para_e99"].epsilon) == (0.9, 0.95, 0.99)


def test_a_settings_model_that_could_not_key_a_candidate_is_refused(monkeypatch):
    from pydantic import BaseModel

    monkeypatch.setattr(policy_registry, "POLICIES", policy_registry.POLICIES.copy())
    monkeypatch.setattr(config_module, "EDIT_SECTIONS", dict(config_module.EDIT_SECTIONS))  # what edit.<name> is

    class Loose(BaseModel):  # neither frozen nor refusing unknown keys
        keep: int = 1

    class NoDefault(SettingsModel):
        keep: int = Field(description="No default.")

    for settings, fragment in ((Loose, "must be frozen and refuse unknown keys"), (NoDefault, "no valid defaults"),
                               (dict, "must be a pydantic model")):
        with pytest.raises(ValueError, match=fragment):
            register_policy("toy_refused", role="posthoc", settings=settings)(toy_head_keep)
    with pytest.raises(ValueError, match="is an EditConfig field"):
        register_policy("z_tau", role="posthoc", settings=HeadKeepConfig)(toy_head_keep)


def test_partial_section_keeps_the_edits_registered_defaults():
    """``edit: {para_e95: {}}`` is para_e95 at ε 0.95 (its registered default), not the settings model's class
    default 0.90; a field left out of a section keeps the edit's own value, a field given overrides it."""
    import spectral_surgery.tasks.surgery.policies  # noqa: F401  (registers the edits)
    from spectral_surgery.tasks.config import EditConfig

    assert EditConfig.model_validate({"para_e95": {}}).para_e95.epsilon == 0.95
    assert EditConfig.model_validate({"para_e99": {}}).para_e99.epsilon == 0.99
    assert EditConfig.model_validate({"para": {}}).para.epsilon == 0.90
    assert EditConfig.model_validate({"para_e95": {"epsilon": 0.97}}).para_e95.epsilon == 0.97
    # an empty section is the default, so it keys nothing (dumps equal those of a config without it)
    assert EditConfig.model_validate({"para_e95": {}}).model_dump() == EditConfig().model_dump()
