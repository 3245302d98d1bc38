"""An adapter declaration the nightly run could not carry out is refused by ``register_adapter``, before any write.

Each bad field gets one line naming it and the closest valid names (difflib), as a ``DeclarationError``.
"""

from __future__ import annotations

import pytest

from spectral_surgery.registry.declaration import OVERRIDE_KEYS, DeclarationError, check_calib, check_overrides
from spectral_surgery.registry.repository import Registry, RegistryError

SOURCE, BASE = "hf://acme/gsm-lora@v1", "acme/base"


@pytest.fixture
def reg(sqlite_url):
    registry = Registry.open(sqlite_url)
    yield registry
    registry.close()


@pytest.mark.parametrize("family, benchmark, config, fragments", [
    ("mth", None, None, ["task_family 'mth'", "Did you mean 'math'?", "Known: code, commonsense, instruction, math"]),
    ("guard", None, None, ["task_family 'guard'"]),  # the guard's profile entry is not an adapter's family
    ("math", "gsm8kk", None, ["benchmark_override 'gsm8kk'", "Did you mean 'gsm8k'?", "ss_arith"]),
    ("math", None, {"surgry": {}}, ["config.surgry: unknown key", "Did you mean 'surgery'?",
                                    "Valid keys: surgery, calib"]),
    ("math", None, {"surgery": {"seed": 1}}, ["config.surgery.seed: unknown key", "Valid keys: edit, targets, calib"]),
    ("math", None, {"surgery": {"edit": {"etaa": 0.1}}}, ["config.surgery.edit.etaa: unknown key",
                                                          "Did you mean 'eta'?", "Valid keys: core_frac"]),
    ("math", None, {"surgery": {"calib": {"n_sample": 4}}}, ["config.surgery.calib.n_sample", "'n_samples'"]),
    ("math", None, {"surgery": {"edit": {"eta": -1}}}, ["config.surgery.edit.eta: Input should be greater",
                                                        "(got -1)"]),
    ("math", None, {"surgery": {"edit": {"sup_factor": 5}}}, ["config.surgery.edit: sup_factor (5.0) is larger"]),
    ("math", None, {"surgery": 3}, ["config.surgery must be a JSON object"]),
    ("math", None, {"surgery": {"policies": ["smooth_ab"]}}, ["config.surgery.policies[0]", "'smooth_ab'",
                                                              "Did you mean 'smooth_abs'?"]),
    ("math", None, {"surgery": {"policies": ["grad_direction", "random_index"]}},
     ["config.surgery.policies lists random_index"]),
    ("math", None, {"calib": "/nowhere/calib.jsonl"}, ["config.calib '/nowhere/calib.jsonl'", "does not exist"]),
    ("math", None, {"calib": "jsonl:/nowhere/c.jsonl"}, ["config.calib", "'/nowhere/c.jsonl' does not exist"]),
    ("math", None, {"calib": "metamth"}, ["config.calib", "'metamth'", "Did you mean 'metamath'?"]),
    ("math", None, {"calib": {"n_samples": 4}}, ["config.calib must be", "under surgery.calib"]),
    ("math", None, ["calib"], ["config must be a JSON object"]),
])  # fmt: skip
def test_a_bad_declaration_is_refused_before_any_write(reg, family, benchmark, config, fragments):
    with pytest.raises(DeclarationError) as info:
        reg.register_adapter("x", SOURCE, BASE, family, benchmark_override=benchmark, config=config)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, RegistryError)
    assert reg.list_adapters() == []


def test_a_bad_redeclaration_leaves_the_adapter_as_it_was(reg):
    reg.register_adapter("x", SOURCE, BASE, "math", config={"surgery": {"policies": ["smooth_abs"]}})
    with pytest.raises(DeclarationError, match="Did you mean 'code'"):
        reg.register_adapter("x", SOURCE, BASE, "cde")
    row = reg.get_adapter("x")
    assert (row.task_family, row.config_json) == ("math", {"surgery": {"policies": ["smooth_abs"]}})


def test_what_the_run_reads_is_accepted(reg, tmp_path):
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    config = {"calib": str(calib), "surgery": {"policies": ["gd", "smooth_abs"], "calib": {"n_samples": 4},
                                               "edit": {"eta": 0.3}, "random_control_seeds": [1, 2]}}
    for family in ("math", "code", "instruction", "commonsense"):
        row = reg.register_adapter(f"ad-{family}", SOURCE, BASE, family, benchmark_override="ss_mc", config=config)
        assert row.config_json == config
    for source in ("metamath", "gsm8k:test", f"jsonl:{calib}", str(calib)):
        assert check_calib(source, "config.calib") == source
    assert check_overrides(None) is None and check_overrides({}) == {}
    assert OVERRIDE_KEYS == ("surgery", "calib")
